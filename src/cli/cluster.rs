//! `aspen cluster init | add-learner | promote | remove | status | members | hashkv`.

use std::collections::BTreeMap;

use serde_json::json;

use crate::api::NodeId;
use crate::cli::ClusterCommand;
use crate::cli::output::Answer;
use crate::client::Client;
use crate::net::endpoint::NodeAddress;

/// Forms the cluster; the client with `key` becomes its first root client.
pub(super) async fn cluster_init(
    key: iroh::SecretKey,
    members: &[String],
) -> Result<Answer, String> {
    let mut list = BTreeMap::new();
    for member in members {
        let (id, address) = member
            .split_once('=')
            .ok_or_else(|| format!("member {member:?}: expected ID=ENDPOINT_ID@IP:PORT"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("member {member:?}: the id must be a number"))?;
        let address: NodeAddress = address.parse().map_err(|e| format!("member {id}: {e}"))?;
        list.insert(id, address);
    }
    let addresses: Vec<NodeAddress> = list.values().copied().collect();
    let client = Client::connect_with_key(key, &addresses)
        .await
        .map_err(|e| e.to_string())?;
    client
        .cluster_init(&list)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Answer::ok(
        json!({"members": list.iter().map(|(id, a)| json!({"id": id, "address": a.to_string()})).collect::<Vec<_>>(),
            "root_client": client.id().to_string()}),
    ))
}

pub(super) async fn cluster(client: &Client, command: &ClusterCommand) -> Result<Answer, String> {
    let e = |e: crate::client::Error| e.to_string();
    match command {
        ClusterCommand::Init { .. } => unreachable!("answered before connecting"),
        ClusterCommand::AddLearner { id, address } => {
            let address: NodeAddress = address
                .parse()
                .map_err(|e: crate::net::endpoint::AddressError| e.to_string())?;
            client.add_learner(*id, &address).await.map_err(e)?;
            Ok(Answer::ok(json!({"added_learner": id})))
        }
        ClusterCommand::Promote { id } => {
            client.promote(*id).await.map_err(e)?;
            Ok(Answer::ok(json!({"promoted": id})))
        }
        ClusterCommand::Remove { id } => {
            client.remove(*id).await.map_err(e)?;
            Ok(Answer::ok(json!({"removed": id})))
        }
        ClusterCommand::Status => {
            let s = client.status().await.map_err(e)?;
            let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
            Ok(Answer::new(
                format!(
                    "node_id: {}\naddress: {}\nleader: {}\nterm: {}\nlast_log_index: {}\nlast_applied: {}\nmembers: {}",
                    s.node_id,
                    s.address,
                    show(s.leader),
                    s.term,
                    show(s.last_log_index),
                    show(s.last_applied),
                    s.members.len()
                ),
                serde_json::to_value(&s).map_err(|e| e.to_string())?,
            ))
        }
        ClusterCommand::Members => {
            let s = client.status().await.map_err(e)?;
            let text = s
                .members
                .iter()
                .map(|m| {
                    let role = if m.voter { "voter" } else { "learner" };
                    let leader = if Some(m.id) == s.leader {
                        " leader"
                    } else {
                        ""
                    };
                    format!("{} {} {role}{leader}", m.id, m.address)
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Answer::new(
                text,
                serde_json::to_value(&s.members).map_err(|e| e.to_string())?,
            ))
        }
        ClusterCommand::Hashkv => hashkv(client).await,
    }
}

/// One line per member (id, revision, log index, keys, hash, verdict); exits 1 naming the
/// members whose hash differs, or that did not answer.
async fn hashkv(client: &Client) -> Result<Answer, String> {
    let report = client.hash_kv().await.map_err(|e| e.to_string())?;
    let mut text = format!(
        "hash check {:016x} run by leader {}\n{:<6} {:>10} {:>10} {:>10}  {:<8}  status",
        report.check, report.leader, "node", "revision", "index", "keys", "hash"
    );
    for member in &report.members {
        let line = match &member.result {
            Ok(h) => {
                let verdict = if report.mismatched.contains(&member.id) {
                    "MISMATCH"
                } else {
                    "ok"
                };
                format!(
                    "{:<6} {:>10} {:>10} {:>10}  {:08x}  {verdict}",
                    member.id, h.revision, h.applied_index, h.keys, h.hash
                )
            }
            Err(error) => format!(
                "{:<6} {:>10} {:>10} {:>10}  {:<8}  {error}",
                member.id, "-", "-", "-", "-"
            ),
        };
        text.push('\n');
        text.push_str(&line);
    }
    let mut answer = Answer::new(
        text,
        serde_json::to_value(&report).map_err(|e| e.to_string())?,
    );
    let silent: Vec<String> = report
        .members
        .iter()
        .filter(|m| m.result.is_err())
        .map(|m| m.id.to_string())
        .collect();
    if !report.mismatched.is_empty() {
        let nodes: Vec<String> = report.mismatched.iter().map(|id| id.to_string()).collect();
        answer.note = Some(format!(
            "Error: the key space of node {} differs from the other members' (corrupt alarm raised on the leader)",
            nodes.join(", node ")
        ));
        answer.failed = true;
    } else if !silent.is_empty() {
        answer.note = Some(format!(
            "Error: node {} did not answer; the members that did agree",
            silent.join(", node ")
        ));
        answer.failed = true;
    }
    Ok(answer)
}
