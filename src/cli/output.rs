//! How answers print: every command's [`Answer`] holds its text, JSON and (for rows) CSV
//! forms; `run` prints the one `--output` asks for.

use std::time::Duration;

use serde_json::{Value, json};

use crate::api::KeyValue;

/// A command's answer in both output formats.
#[derive(Default)]
pub(super) struct Answer {
    pub text: String,
    pub json: Value,
    /// The answer as CSV, for commands that print rows.
    pub csv: Option<String>,
    /// Printed on stderr after the answer in any format (a truncated result).
    pub note: Option<String>,
    /// The command ran but found a problem (the note says which): the process exits 1.
    pub failed: bool,
}

impl Answer {
    pub fn new(text: impl Into<String>, json: Value) -> Answer {
        Answer {
            text: text.into(),
            json,
            ..Answer::default()
        }
    }

    pub fn ok(json: Value) -> Answer {
        Answer::new("OK", json)
    }
}

pub(super) fn kv_text(kv: &KeyValue, keys_only: bool) -> String {
    let key = String::from_utf8_lossy(&kv.key);
    if keys_only {
        key.into_owned()
    } else {
        format!("{key}\n{}", String::from_utf8_lossy(&kv.value))
    }
}

pub(super) fn kv_json(kv: &KeyValue) -> Value {
    json!({
        "key": String::from_utf8_lossy(&kv.key),
        "value": String::from_utf8_lossy(&kv.value),
        "version": kv.version,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "lease": kv.lease,
        "expires_at_ms": kv.expires_at_ms,
    })
}

pub(super) fn ttl_text(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}
