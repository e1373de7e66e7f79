//! `aspen admin` (backup, snapshot, compact, shutdown over one node's HTTP address) and
//! `aspen bench` (the load tool, `crate::bench`).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cli::AdminCommand;
use crate::cli::output::Answer;
use crate::net::endpoint::NodeAddress;

fn http_address_from(dirs: &[PathBuf]) -> Result<String, String> {
    let dir = dirs
        .first()
        .ok_or("no node HTTP address: give --http ADDRESS (or set ASPEN_HTTP) or --data-dir DIR")?;
    let path = dir.join(crate::node::HTTP_ADDR_FILE);
    std::fs::read_to_string(&path)
        .map(|text| text.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The admin token: `--token` (with a warning), else `ASPEN_ADMIN_TOKEN`, else
/// DIR/admin.token of the first --data-dir; none when none of them is there (the node then
/// answers 401).
fn admin_token(data_dirs: &[PathBuf], flag: Option<String>) -> Result<Option<String>, String> {
    if let Some(token) = flag {
        eprintln!(
            "warning: --token is visible to other local users (ps, shell history); prefer \
             ASPEN_ADMIN_TOKEN or --data-dir on the node's machine"
        );
        return Ok(Some(token));
    }
    if let Some(token) = std::env::var("ASPEN_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    match data_dirs.first() {
        Some(dir) => match crate::net::admin::read_token(dir) {
            Ok(token) => Ok(Some(token)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(format!("admin: {error}")),
        },
        None => Ok(None),
    }
}

pub(super) async fn admin_over_http(
    data_dirs: &[PathBuf],
    http: Option<&str>,
    token: Option<String>,
    command: &AdminCommand,
) -> Result<Answer, String> {
    let http = match http {
        Some(http) => http.to_string(),
        None => http_address_from(data_dirs)?,
    };
    let token = admin_token(data_dirs, token)?;
    let command = command.clone();
    tokio::task::spawn_blocking(move || admin(&http, token, &command))
        .await
        .map_err(|e| format!("admin: {e}"))?
}

pub(super) async fn bench(
    key: iroh::SecretKey,
    nodes: &[NodeAddress],
    workload: crate::bench::Workload,
    options: crate::bench::BenchOptions,
) -> Result<Answer, String> {
    options.validate()?;
    let bar = match options.total_ops() {
        Some(total) => indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:40} {pos}/{len} ops ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} ops ({per_sec}) {elapsed}")
                .expect("valid template"),
        ),
    };
    let result = crate::bench::run(workload, options, &key, nodes, |done| {
        bar.set_position(done)
    })
    .await;
    bar.finish_and_clear();
    let report = result?;
    Ok(Answer::new(report.text(), report.json()))
}

/// Runs an admin command (blocking HTTP: call it off the async runtime).
fn admin(http: &str, token: Option<String>, command: &AdminCommand) -> Result<Answer, String> {
    let client = crate::admin::AdminClient::new(http, token).map_err(|e| e.to_string())?;
    match command {
        AdminCommand::Backup { out } => {
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} backup {bar:40} {pos}/{len} keys ({per_sec}, eta {eta})",
                )
                .expect("valid template"),
            );
            let result = client.backup(out, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            });
            bar.finish_and_clear();
            let (summary, bytes) = result.map_err(|e| e.to_string())?;
            Ok(Answer::new(
                format!(
                    "backup written to {}: {} keys, {} leases, revision {}, {bytes} bytes",
                    out.display(),
                    summary.keys,
                    summary.leases,
                    summary.revision
                ),
                json!({
                    "file": out.display().to_string(),
                    "keys": summary.keys,
                    "leases": summary.leases,
                    "revision": summary.revision,
                    "bytes": bytes,
                }),
            ))
        }
        AdminCommand::Snapshot => {
            let answer = client.post_json("snapshot").map_err(|e| e.to_string())?;
            let index = |name: &str| {
                answer
                    .get(name)
                    .and_then(Value::as_u64)
                    .map_or("none".to_string(), |i| i.to_string())
            };
            Ok(Answer::new(
                format!(
                    "snapshot at log index {}; log purged up to {}",
                    index("snapshot_index"),
                    index("purged_index")
                ),
                answer,
            ))
        }
        AdminCommand::Defrag => {
            let answer = client.post_json("defrag").map_err(|e| e.to_string())?;
            let bytes = |name: &str| {
                answer
                    .get(name)
                    .and_then(Value::as_u64)
                    .map_or("?".to_string(), |b| b.to_string())
            };
            let stalled = answer
                .get("stalled_ms")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            Ok(Answer::new(
                format!(
                    "compacted: {} -> {} bytes; reads and writes waited {stalled:.1} ms",
                    bytes("bytes_before"),
                    bytes("bytes_after")
                ),
                answer,
            ))
        }
        AdminCommand::Shutdown => {
            let answer = client.post_json("shutdown").map_err(|e| e.to_string())?;
            Ok(Answer::new("shutting down", answer))
        }
    }
}
