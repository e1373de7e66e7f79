//! `aspen put`, `get`, `del`, `txn`, `vault list` and `sql`: the key-value commands.

use serde_json::{Value, json};

use crate::api::{KeyRange, Output, Put};
use crate::cli::output::{Answer, kv_json, kv_text};
use crate::cli::txn::{parse_txn, txn_from_file};
use crate::cli::{CliCommand, ReadConsistency};
use crate::client::{Client, RangeOptions};

fn e(error: crate::client::Error) -> String {
    error.to_string()
}

pub(super) async fn put(
    client: &Client,
    key: &str,
    value: &str,
    ttl: Option<std::time::Duration>,
    lease: Option<u64>,
    prev_kv: bool,
) -> Result<Answer, String> {
    let put = Put {
        ttl_ms: ttl.map(|t| t.as_millis().max(1) as u64),
        lease,
        prev_kv,
        ..Put::new(key, value)
    };
    let written = client.put_with(put).await.map_err(e)?;
    let prev = match &written.output {
        Output::Put { prev } => prev.clone(),
        _ => None,
    };
    let mut text = "OK".to_string();
    if let Some(prev) = &prev {
        text.push_str(&format!("\n{}", kv_text(prev, false)));
    }
    Ok(Answer::new(
        text,
        json!({"revision": written.revision, "prev_kv": prev.as_ref().map(kv_json)}),
    ))
}

pub(super) async fn get(client: &Client, command: &CliCommand) -> Result<Answer, String> {
    let &CliCommand::Get {
        ref key,
        prefix,
        ref range_end,
        limit,
        keys_only,
        count_only,
        consistency,
        rev,
    } = command
    else {
        unreachable!("called for `aspen get` only");
    };
    let range_end = range_end.as_deref();
    let options = RangeOptions {
        limit,
        keys_only,
        count_only,
        consistency: consistency.into(),
        revision: rev,
    };
    let range = key_range(key, prefix, range_end);
    let page = if count_only {
        client.range_page(range, &options).await
    } else {
        client.range(range, &options).await
    }
    .map_err(e)?;
    let text = if count_only {
        page.count.to_string()
    } else {
        page.kvs
            .iter()
            .map(|kv| kv_text(kv, keys_only))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Answer::new(
        text,
        json!({
            "revision": page.revision,
            "count": page.count,
            "more": page.continuation.is_some(),
            "kvs": page.kvs.iter().map(kv_json).collect::<Vec<_>>(),
        }),
    ))
}

pub(super) async fn del(
    client: &Client,
    key: &str,
    prefix: bool,
    range_end: Option<&str>,
) -> Result<Answer, String> {
    let written = if prefix || range_end.is_some() {
        client.delete_range(key_range(key, prefix, range_end)).await
    } else {
        client.delete(key).await
    }
    .map_err(e)?;
    let deleted = match written.output {
        Output::Delete { deleted, .. } | Output::DeleteRange { deleted } => deleted,
        other => return Err(format!("unexpected answer: {other:?}")),
    };
    Ok(Answer::new(
        deleted.to_string(),
        json!({"revision": written.revision, "deleted": deleted}),
    ))
}

/// Prints events as they come until interrupted (or the watch fails).
pub(super) async fn watch(
    client: &Client,
    command: &CliCommand,
    json: bool,
) -> Result<Answer, String> {
    let &CliCommand::Watch {
        ref key,
        prefix,
        ref range_end,
        rev,
        prev_kv,
        filter,
        progress,
        consistency,
    } = command
    else {
        unreachable!("called for `aspen watch` only");
    };
    let options = crate::api::WatchOptions {
        filter: match filter {
            None => crate::api::WatchFilter::All,
            Some(super::WatchOnly::Put) => crate::api::WatchFilter::PutsOnly,
            Some(super::WatchOnly::Delete) => crate::api::WatchFilter::DeletesOnly,
        },
        prev_kv,
        progress_ms: progress.map_or(0, |every| every.as_millis().max(1) as u64),
    };
    let range = key_range(key, prefix, range_end.as_deref());
    let mut watcher = match (rev, consistency) {
        (0, ReadConsistency::Linearizable) => client.watch_linearizable(range, options).await,
        (rev, _) => client.watch(range, rev, options).await,
    }
    .map_err(e)?;
    use std::io::Write;
    loop {
        let batch = watcher.next().await.map_err(e)?;
        let mut out = std::io::stdout().lock();
        if batch.events.is_empty() && progress.is_some() {
            let line = match json {
                true => json!({"progress": batch.revision}).to_string(),
                false => format!("progress: revision {}", batch.revision),
            };
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
        for event in &batch.events {
            let line = match json {
                true => json!({
                    "revision": event.revision,
                    "kind": match event.kind {
                        crate::api::EventKind::Put => "PUT",
                        crate::api::EventKind::Delete => "DELETE",
                    },
                    "key": String::from_utf8_lossy(&event.key),
                    "kv": event.kv.as_ref().map(kv_json),
                    "prev_kv": event.prev.as_ref().map(kv_json),
                })
                .to_string(),
                false => {
                    let key = String::from_utf8_lossy(&event.key);
                    let mut text = match &event.kv {
                        Some(kv) => format!(
                            "PUT {key} (rev {})\n{}",
                            event.revision,
                            String::from_utf8_lossy(&kv.value)
                        ),
                        None => format!("DELETE {key} (rev {})", event.revision),
                    };
                    if let Some(prev) = &event.prev {
                        text.push_str(&format!(
                            "\nprevious: {}",
                            String::from_utf8_lossy(&prev.value)
                        ));
                    }
                    text
                }
            };
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
}

pub(super) async fn compact(client: &Client, revision: u64) -> Result<Answer, String> {
    let written = client.compact(revision).await.map_err(e)?;
    Ok(Answer::new(
        format!("compacted the history to revision {revision}"),
        json!({"revision": written.revision, "compacted_to": revision}),
    ))
}

pub(super) async fn txn(client: &Client, command: &CliCommand) -> Result<Answer, String> {
    let CliCommand::Txn {
        compares,
        success,
        failure,
        file,
    } = command
    else {
        unreachable!("called for `aspen txn` only");
    };
    let txn = match file {
        Some(path) => txn_from_file(path)?,
        None => parse_txn(compares, success, failure)?,
    };
    let written = client.txn(txn).await.map_err(e)?;
    let Output::Txn { succeeded, results } = written.output else {
        return Err(format!("unexpected answer: {:?}", written.output));
    };
    let mut lines = vec![if succeeded { "SUCCESS" } else { "FAILURE" }.to_string()];
    let mut gets = Vec::new();
    for result in &results {
        if let Output::Get { kv } = result {
            if let Some(kv) = kv {
                lines.push(kv_text(kv, false));
            }
            gets.push(kv.as_ref().map(kv_json));
        }
    }
    Ok(Answer::new(
        lines.join("\n"),
        json!({"revision": written.revision, "succeeded": succeeded, "gets": gets}),
    ))
}

pub(super) async fn vault_list(client: &Client) -> Result<Answer, String> {
    let vaults = client.vault_list().await.map_err(e)?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header(["vault", "keys", "bytes", "created", "updated"]);
    for vault in &vaults {
        let m = &vault.meta;
        table.add_row([
            vault.name.clone(),
            m.key_count.to_string(),
            m.total_bytes.to_string(),
            m.created_revision.to_string(),
            m.updated_revision.to_string(),
        ]);
    }
    let json: Vec<Value> = vaults
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "keys": v.meta.key_count,
                "bytes": v.meta.total_bytes,
                "created_revision": v.meta.created_revision,
                "updated_revision": v.meta.updated_revision,
            })
        })
        .collect();
    Ok(Answer::new(table.to_string(), Value::Array(json)))
}

pub(super) async fn sql(
    client: &Client,
    query: &str,
    consistency: ReadConsistency,
) -> Result<Answer, String> {
    let result = client
        .sql_with(query, consistency.into())
        .await
        .map_err(e)?;
    Ok(Answer {
        text: result.to_table(),
        json: result.to_json(),
        csv: Some(result.to_csv().map_err(|e| format!("csv: {e}"))?),
        note: result
            .truncated
            .as_ref()
            .map(|reason| format!("note: result truncated: {reason}")),
        failed: false,
    })
}

fn key_range(key: &str, prefix: bool, range_end: Option<&str>) -> KeyRange {
    match (prefix, range_end) {
        (true, _) => KeyRange::prefix(key.as_bytes()),
        (false, Some(end)) => KeyRange {
            start: key.as_bytes().to_vec(),
            end: Some(end.as_bytes().to_vec()),
        },
        (false, None) => KeyRange::single(key.as_bytes()),
    }
}
