//! The offline integrity check of a data directory (`aspen-node check`): redb's own check
//! (page checksums, allocator state), the cross-storage validation, the file format, and a
//! decode of every log entry, key-value entry, lease and vault, the vault metadata against a
//! full scan of the keys, the history (every event decodes, lies between the floor and the
//! revision, and its two tables agree), and the current snapshot file.
//! Reads only; the node must be stopped (redb allows one process per file).

use std::collections::BTreeMap;
use std::path::Path;

use redb::ReadableTable;
use serde::Serialize;

use crate::api::vault_of;
use crate::storage::codec::{
    decode_kv_entry, decode_lease, decode_log_entry, decode_vault, read_meta,
};
use crate::storage::error::Result;
use crate::storage::schema::*;
use crate::storage::store::{DurableMeta, Store, validate};

/// Problems listed one by one; past this many only the count grows.
const PROBLEMS_LISTED_MAX: usize = 20;

/// What the check found. `problems` is empty when the directory is sound.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub meta: DurableMeta,
    pub log_entries: u64,
    /// The file's format; an older one the next start upgrades (no vault metadata yet: not
    /// compared).
    pub format: u32,
    pub keys: u64,
    pub leases: u64,
    pub vaults: u64,
    pub revision: u64,
    /// Rows of `history`, and what it holds (`None`: no history yet).
    pub history_events: u64,
    pub history_bounds: Option<crate::storage::HistoryBounds>,
    /// Committed entries a start would apply again (`committed - last_applied`).
    pub replay_on_start: u64,
    pub snapshot: Option<String>,
    pub problems: Vec<String>,
    /// Problems found beyond the listed ones.
    pub problems_not_listed: u64,
}

impl CheckReport {
    fn problem(&mut self, problem: impl Into<String>) {
        if self.problems.len() < PROBLEMS_LISTED_MAX {
            self.problems.push(problem.into());
        } else {
            self.problems_not_listed += 1;
        }
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store in `dir`. An `Err` means the check could not run at all (no store, the
/// file does not open); problems inside a file that opens are in the report.
pub fn check_data_dir(dir: &Path) -> Result<CheckReport> {
    let mut store = Store::open_existing(dir, 64 << 20)?;
    let mut report = CheckReport {
        meta: DurableMeta::default(),
        log_entries: 0,
        format: 0,
        keys: 0,
        leases: 0,
        vaults: 0,
        revision: 0,
        history_events: 0,
        history_bounds: None,
        replay_on_start: 0,
        snapshot: None,
        problems: Vec::new(),
        problems_not_listed: 0,
    };
    match store.check_integrity() {
        Ok(true) => {}
        Ok(false) => report.problem("redb integrity check failed (redb repaired what it could)"),
        Err(error) => report.problem(format!("redb integrity check: {error}")),
    }
    check_format(&store, &mut report)?;
    match store.durable_meta() {
        Ok(meta) => {
            if let Err(error) = validate(&meta) {
                report.problem(format!("cross-storage validation: {error}"));
            }
            report.replay_on_start = meta
                .committed
                .unwrap_or(0)
                .saturating_sub(meta.last_applied.unwrap_or(0));
            report.meta = meta;
        }
        Err(error) => report.problem(format!("raft meta: {error}")),
    }
    check_log(&store, &mut report)?;
    check_state(&store, &mut report)?;
    if report.format >= FORMAT_VERSION {
        check_history(&store, &mut report)?;
    }
    check_snapshot(&store, &mut report);
    Ok(report)
}

fn check_format(store: &Store, report: &mut CheckReport) -> Result<()> {
    let txn = store.begin_read()?;
    let table = txn.open_table(FILE_META)?;
    let stored = table.get(META_FORMAT)?.map(|v| v.value().to_vec());
    match stored {
        Some(bytes) if bytes == FORMAT_VERSION.to_le_bytes() => report.format = FORMAT_VERSION,
        Some(bytes) if bytes == FORMAT_VERSION_BEFORE_VAULTS.to_le_bytes() => {
            report.format = FORMAT_VERSION_BEFORE_VAULTS;
        }
        Some(bytes) if bytes == FORMAT_VERSION_BEFORE_HISTORY.to_le_bytes() => {
            report.format = FORMAT_VERSION_BEFORE_HISTORY;
        }
        Some(bytes) => report.problem(format!(
            "file_meta: format {bytes:?} is not this build's format {FORMAT_VERSION}"
        )),
        None => report.problem("file_meta: no format recorded (not an Aspen store?)"),
    }
    Ok(())
}

fn check_log(store: &Store, report: &mut CheckReport) -> Result<()> {
    let txn = store.begin_read()?;
    let log = txn.open_table(RAFT_LOG)?;
    let mut previous: Option<u64> = report.meta.last_purged;
    for item in log.iter()? {
        let (index, bytes) = item?;
        let index = index.value();
        if let Err(error) = decode_log_entry(index, bytes.value()) {
            report.problem(error.to_string());
        }
        if let Some(previous) = previous
            && index != previous + 1
        {
            report.problem(format!(
                "raft_log: entry {index} follows {previous} (a hole or an entry at or below the purge point)"
            ));
        }
        previous = Some(index);
        report.log_entries += 1;
    }
    Ok(())
}

/// Every history event decodes, names a revision above the floor and at most the store's,
/// in order.
fn check_history(store: &Store, report: &mut CheckReport) -> Result<()> {
    let txn = store.begin_read()?;
    match read_meta(&txn, HISTORY_BOUNDS) {
        Ok(bounds) => report.history_bounds = bounds,
        Err(error) => report.problem(format!("sm_meta {}: {error}", HISTORY_BOUNDS.key)),
    }
    if let Some(bounds) = report.history_bounds
        && (bounds.floor > report.revision || bounds.events_from < bounds.floor)
    {
        report.problem(format!(
            "history bounds {bounds:?} do not fit the store's revision {}",
            report.revision
        ));
    }
    let events = txn.open_table(HISTORY)?;
    let events_from = crate::storage::history::events_from(report.history_bounds, report.revision);
    for item in events.iter()? {
        let (at, bytes) = item?;
        let (revision, number) = at.value();
        report.history_events += 1;
        if revision < events_from || revision > report.revision {
            report.problem(format!(
                "history event {revision}.{number} lies outside [{events_from}, {}]",
                report.revision
            ));
        }
        match postcard::from_bytes::<crate::storage::HistoryEvent>(bytes.value()) {
            Ok(event) if event.entry.is_none() && event.prev.is_none() => report.problem(format!(
                "history event {revision}.{number} of key {} holds neither a record nor the one it replaced",
                event.key.escape_ascii()
            )),
            Ok(_) => {}
            Err(error) => report.problem(format!("history event {revision}.{number}: {error}")),
        }
    }
    Ok(())
}

fn check_state(store: &Store, report: &mut CheckReport) -> Result<()> {
    let txn = store.begin_read()?;
    match read_meta(&txn, REVISION) {
        Ok(revision) => report.revision = revision.unwrap_or(0),
        Err(error) => report.problem(format!("sm_meta revision: {error}")),
    }
    if let Err(error) = read_meta(&txn, LAST_APPLIED) {
        report.problem(format!("sm_meta {}: {error}", LAST_APPLIED.key));
    }
    if let Err(error) = read_meta(&txn, MEMBERSHIP) {
        report.problem(format!("sm_meta {}: {error}", MEMBERSHIP.key));
    }
    let kv = txn.open_table(KV)?;
    // Vault figures from a full scan, compared with the `vaults` table below.
    let mut scanned: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
    for item in kv.iter()? {
        let (key, bytes) = item?;
        if let Some(name) = vault_of(key.value()) {
            let figures = scanned.entry(name.to_vec()).or_default();
            figures.0 += 1;
            figures.1 += (key.value().len() + value_len(bytes.value())) as u64;
        }
        match decode_kv_entry(key.value(), bytes.value()) {
            Ok(entry) if entry.mod_revision > report.revision => report.problem(format!(
                "kv entry {}: mod_revision {} is above the store's revision {}",
                key.value().escape_ascii(),
                entry.mod_revision,
                report.revision
            )),
            Ok(_) => {}
            Err(error) => report.problem(error.to_string()),
        }
        report.keys += 1;
    }
    let leases = txn.open_table(LEASES)?;
    for item in leases.iter()? {
        let (id, bytes) = item?;
        if let Err(error) = decode_lease(id.value(), bytes.value()) {
            report.problem(error.to_string());
        }
        report.leases += 1;
    }
    if report.format == FORMAT_VERSION_BEFORE_VAULTS {
        return Ok(());
    }
    let vaults = txn.open_table(VAULTS)?;
    for item in vaults.iter()? {
        let (name, bytes) = item?;
        let name = name.value();
        let shown = String::from_utf8_lossy(name).into_owned();
        match decode_vault(name, bytes.value()) {
            Ok(meta) => {
                let found = scanned.remove(name).unwrap_or((0, 0));
                if (meta.key_count, meta.total_bytes) != found {
                    report.problem(format!(
                        "vault {shown:?}: metadata says {} keys and {} bytes, its keys are {} and {}",
                        meta.key_count, meta.total_bytes, found.0, found.1
                    ));
                }
            }
            Err(error) => report.problem(error.to_string()),
        }
        report.vaults += 1;
    }
    for (name, (keys, _)) in scanned {
        report.problem(format!(
            "vault {:?}: {keys} keys but no metadata",
            String::from_utf8_lossy(&name)
        ));
    }
    Ok(())
}

/// The value length of a stored kv record (0 when it does not decode: reported elsewhere).
fn value_len(bytes: &[u8]) -> usize {
    crate::storage::codec::decode_kv_entry_ref(b"", bytes).map_or(0, |entry| entry.value.len())
}

fn check_snapshot(store: &Store, report: &mut CheckReport) {
    let path = store
        .snapshot_dir()
        .join(crate::storage::snapshot::CURRENT_FILE);
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => {
            report.problem(format!("{}: {error}", path.display()));
            return;
        }
    };
    match crate::storage::snapshot::verify_snapshot_file(&mut file) {
        Ok(summary) => {
            report.snapshot = Some(format!(
                "{} keys, {} leases, revision {}, at log index {}",
                summary.keys,
                summary.leases,
                summary.revision,
                summary
                    .meta
                    .last_log_id
                    .map_or("none".to_string(), |id| id.index.to_string())
            ));
        }
        Err(error) => report.problem(format!("{}: {error}", path.display())),
    }
}
