//! `aspen lease grant | revoke | keep-alive | list`.

use serde_json::json;

use crate::cli::LeaseCommand;
use crate::cli::output::{Answer, ttl_text};
use crate::client::Client;

pub(super) async fn lease(client: &Client, command: &LeaseCommand) -> Result<Answer, String> {
    let e = |e: crate::client::Error| e.to_string();
    let lease_json = |l: crate::client::Lease| json!({"id": l.id, "ttl_ms": l.ttl_ms, "deadline_ms": l.deadline_ms});
    match command {
        LeaseCommand::Grant { ttl, id } => {
            let ttl_ms = ttl.as_millis().max(1) as u64;
            let lease = client
                .lease_grant(id.unwrap_or(0), ttl_ms)
                .await
                .map_err(e)?;
            Ok(Answer::new(
                format!(
                    "lease {} granted with TTL({})",
                    lease.id,
                    ttl_text(lease.ttl_ms)
                ),
                lease_json(lease),
            ))
        }
        LeaseCommand::Revoke { id } => {
            let deleted = client.lease_revoke(*id).await.map_err(e)?;
            Ok(Answer::new(
                format!("lease {id} revoked ({deleted} keys deleted)"),
                json!({"id": id, "keys_deleted": deleted}),
            ))
        }
        LeaseCommand::Keepalive { id } => {
            let lease = client.lease_keepalive(*id).await.map_err(e)?;
            Ok(Answer::new(
                format!(
                    "lease {} kept alive with TTL({})",
                    lease.id,
                    ttl_text(lease.ttl_ms)
                ),
                lease_json(lease),
            ))
        }
        LeaseCommand::List => {
            let leases = client.lease_list().await.map_err(e)?;
            let mut lines = vec![format!("found {} leases", leases.len())];
            lines.extend(leases.iter().map(|l| {
                format!(
                    "{} ttl={} remaining={}",
                    l.id,
                    ttl_text(l.ttl_ms),
                    ttl_text(l.remaining_ms)
                )
            }));
            Ok(Answer::new(lines.join("\n"), json!(leases.iter().map(|l| json!({"id": l.id, "ttl_ms": l.ttl_ms, "remaining_ms": l.remaining_ms})).collect::<Vec<_>>())))
        }
    }
}
