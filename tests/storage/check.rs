//! `aspen-node check` and `storage::check::check_data_dir`: a sound data dir passes with the
//! right figures; a corrupted meta, a damaged log entry and a damaged key are each named.

use aspen::api::WriteOp;
use std::process::Command as Process;
use std::sync::Arc;

use aspen::api::Put;
use aspen::command::Command;
use aspen::storage::StoreWrite;
use aspen::storage::check::check_data_dir;
use aspen::storage::schema::{KV, RAFT_LOG};
use aspen::storage::{Store, StoreOptions};
use redb::ReadableTable;

use crate::util::{Driver, log_id, small};

/// A file store with 20 applied puts (log entries 1..=20), closed.
fn healthy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&small(StoreOptions::file(dir.path()))).expect("open"));
    let mut driver = Driver::new(Arc::clone(&store));
    for i in 0..20 {
        driver.run(
            1_000,
            Command::Write(WriteOp::Put(Put::new(format!("k{i:02}"), "v"))),
        );
    }
    store.close().expect("close");
    dir
}

/// A data dir whose store took `puts` (key, value) in order, closed.
fn written(puts: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&small(StoreOptions::file(dir.path()))).expect("open"));
    let mut driver = Driver::new(Arc::clone(&store));
    for (key, value) in puts {
        driver.run(1_000, Command::Write(WriteOp::Put(Put::new(*key, *value))));
    }
    drop(driver);
    store.close().expect("close");
    dir
}

/// Overwrites one raw record of a redb table around the store, as a damaged disk would.
fn damage(dir: &std::path::Path, write: impl FnOnce(&redb::WriteTransaction)) {
    let store = Store::open(&small(StoreOptions::file(dir))).expect("open");
    let txn = store
        .begin_write(redb::Durability::Immediate)
        .expect("write");
    write(&txn);
    txn.commit().expect("commit");
}

fn check_binary(dir: &std::path::Path) -> (bool, String, String) {
    let out = Process::new(env!("CARGO_BIN_EXE_aspen-node"))
        .args(["check", "--data-dir"])
        .arg(dir)
        .output()
        .expect("run aspen-node check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Proves a sound data dir passes with its true figures, through the library and the binary.
#[test]
fn sound_data_dir_passes() {
    let dir = healthy_dir();
    let report = check_data_dir(dir.path()).expect("check runs");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.log_entries, 20);
    assert_eq!(report.keys, 20);
    assert_eq!(report.revision, 20);
    assert_eq!(report.meta.last_applied, Some(20));
    assert_eq!(report.meta.committed, Some(20));
    assert_eq!(report.replay_on_start, 0);

    let (ok, stdout, stderr) = check_binary(dir.path());
    assert!(ok, "stderr: {stderr}");
    assert!(stdout.contains(": ok\n"), "{stdout}");
    assert!(
        stdout.contains("state: 20 keys, 0 leases, 0 vaults, revision 20"),
        "{stdout}"
    );
}

// Proves `committed` below `last_applied` is reported as the cross-storage validation failure
// with both numbers, and the binary exits non-zero naming it.
#[test]
fn corrupted_meta_is_named() {
    let dir = healthy_dir();
    {
        let store = Store::open(&small(StoreOptions::file(dir.path()))).expect("open");
        store
            .save_committed(Some(&log_id(17)))
            .expect("write committed");
        store.close().expect("close");
    }
    let report = check_data_dir(dir.path()).expect("check runs");
    assert_eq!(
        report.problems,
        vec!["cross-storage validation: storage: last_applied (20) exceeds committed (17)"]
    );
    let (ok, _, stderr) = check_binary(dir.path());
    assert!(!ok);
    assert!(
        stderr.contains("last_applied (20) exceeds committed (17)"),
        "{stderr}"
    );
}

// Proves a log entry that no longer decodes, and one stored under the wrong index, are each
// named by index; the binary exits non-zero.
#[test]
fn damaged_log_entry_is_named() {
    let dir = healthy_dir();
    damage(dir.path(), |txn| {
        let mut log = txn.open_table(RAFT_LOG).expect("log");
        log.insert(7u64, [1u8, 0xff, 0xff, 0xff].as_slice())
            .expect("insert");
        let entry_9 = log
            .get(9u64)
            .expect("get")
            .expect("entry 9")
            .value()
            .to_vec();
        log.insert(12u64, entry_9.as_slice()).expect("insert");
    });
    let report = check_data_dir(dir.path()).expect("check runs");
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("storage: raft_log entry 7 is corrupt"),
        "{:?}",
        report.problems
    );
    assert_eq!(
        report.problems[1],
        "storage: raft_log entry 12 is corrupt: holds the entry of index 9"
    );
    let (ok, _, stderr) = check_binary(dir.path());
    assert!(!ok);
    assert!(stderr.contains("raft_log entry 7 is corrupt"), "{stderr}");
}

// Proves a key-value record that does not decode is named by its key.
#[test]
fn damaged_key_is_named() {
    let dir = healthy_dir();
    damage(dir.path(), |txn| {
        let mut kv = txn.open_table(KV).expect("kv");
        kv.insert(b"k05".as_slice(), [0xffu8; 3].as_slice())
            .expect("insert");
    });
    let report = check_data_dir(dir.path()).expect("check runs");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("storage: kv entry of key \"k05\" is corrupt"),
        "{:?}",
        report.problems
    );
}

// Proves a directory without a store is refused with a message naming it, not reported as sound.
#[test]
fn missing_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = check_data_dir(dir.path()).expect_err("no store");
    assert!(error.to_string().contains("holds no store"), "{error}");
    let (ok, _, stderr) = check_binary(dir.path());
    assert!(!ok);
    assert!(stderr.contains("holds no store"), "{stderr}");
}

// Proves a file written before vaults existed (format 1: no `vaults` table rows) is upgraded
// when opened: its vault metadata is computed from its keys, the check passes, and deleting a
// vault key afterwards keeps the figures exact.
#[test]
fn format_1_file_is_upgraded_with_vault_metadata() {
    let dir = written(&[
        ("vault/a/1", "value"),
        ("vault/a/2", "value"),
        ("vault/b/1", "value"),
        ("plain", "value"),
    ]);
    damage(dir.path(), |txn| {
        txn.delete_table(aspen::storage::schema::VAULTS)
            .expect("drop vaults");
        let mut meta = txn
            .open_table(aspen::storage::schema::FILE_META)
            .expect("meta");
        meta.insert(
            aspen::storage::schema::META_FORMAT,
            1u32.to_le_bytes().as_slice(),
        )
        .expect("format 1");
    });
    // Offline, the old file checks out as what it is.
    let before = check_data_dir(dir.path()).expect("check runs");
    assert!(before.is_ok(), "{:?}", before.problems);
    assert_eq!(before.format, 1);
    let store = Arc::new(Store::open(&small(StoreOptions::file(dir.path()))).expect("upgrade"));
    let vaults = store.read(0).unwrap().vaults().unwrap();
    let figures: Vec<(String, u64, u64, u64, u64)> = vaults
        .iter()
        .map(|v| {
            let m = v.meta;
            (
                v.name.clone(),
                m.key_count,
                m.total_bytes,
                m.created_revision,
                m.updated_revision,
            )
        })
        .collect();
    assert_eq!(
        figures,
        vec![("a".into(), 2, 28, 1, 2), ("b".into(), 1, 14, 3, 3)]
    );
    let mut driver = Driver::new(Arc::clone(&store));
    driver.run(
        1_000,
        Command::Write(WriteOp::Delete {
            key: b"vault/a/1".to_vec(),
            prev_kv: false,
        }),
    );
    store.close().expect("close");
    drop(driver);
    drop(store);
    let report = check_data_dir(dir.path()).expect("check runs");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.vaults, 2);
}

// Proves a file written before history existed (format 2) is upgraded when opened: it checks
// out as format 2 before, its history starts at its revision (a read below is refused naming
// it; a compaction to it leaves watches starting after it), and its next change reads back at
// both revisions.
#[test]
fn format_2_file_is_upgraded_with_history_from_its_revision() {
    use aspen::api::CommandError;
    use aspen::storage::schema::{HISTORY, HISTORY_BOUNDS, SM_META};
    let dir = written(&[("k", "a"), ("k", "b")]);
    damage(dir.path(), |txn| {
        txn.delete_table(HISTORY).expect("drop history");
        let mut sm_meta = txn.open_table(SM_META).expect("sm_meta");
        sm_meta.remove(HISTORY_BOUNDS.key).expect("drop the bounds");
        let mut meta = txn
            .open_table(aspen::storage::schema::FILE_META)
            .expect("meta");
        meta.insert(
            aspen::storage::schema::META_FORMAT,
            2u32.to_le_bytes().as_slice(),
        )
        .expect("format 2");
    });
    let before = check_data_dir(dir.path()).expect("check runs");
    assert!(before.is_ok(), "{:?}", before.problems);
    assert_eq!(before.format, 2);
    let store = Arc::new(Store::open(&small(StoreOptions::file(dir.path()))).expect("upgrade"));
    let view = store.read(0).unwrap();
    assert_eq!(view.history_floor().unwrap(), 2);
    assert_eq!(
        view.get_at(b"k", 1).unwrap(),
        Err(CommandError::Compacted {
            revision: 1,
            oldest: 2
        })
    );
    let mut driver = Driver::new(Arc::clone(&store));
    // Compacting to where the history starts keeps it there: its events were never kept.
    let compact = Command::Write(WriteOp::Compact { revision: 2 });
    assert_eq!(
        driver.run(1_000, compact).result,
        Ok(aspen::api::Output::None)
    );
    assert_eq!(store.read(0).unwrap().events_from().unwrap(), 3);
    driver.run(1_000, Command::Write(WriteOp::Put(Put::new("k", "c"))));
    let view = store.read(0).unwrap();
    let value_at = |revision| view.get_at(b"k", revision).unwrap().unwrap().unwrap().value;
    assert_eq!(value_at(2), b"b".to_vec());
    assert_eq!(value_at(3), b"c".to_vec());
    drop((view, driver));
    store.close().expect("close");
    drop(store);
    let after = check_data_dir(dir.path()).expect("check runs");
    assert!(after.is_ok(), "{:?}", after.problems);
    assert_eq!(after.format, 3);
}

// Proves the check reads the history: a sound file reports its events and bounds; an event
// that does not decode and one that holds neither a record nor the one it replaced are each
// named.
#[test]
fn damaged_history_is_named() {
    use aspen::storage::HistoryEvent;
    use aspen::storage::schema::HISTORY;
    let dir = written(&[("a", "v"), ("b", "v"), ("c", "v")]);
    let sound = check_data_dir(dir.path()).expect("check runs");
    assert!(sound.is_ok(), "{:?}", sound.problems);
    let bounds = aspen::storage::HistoryBounds {
        floor: 0,
        events_from: 1,
    };
    assert_eq!(
        (sound.history_events, sound.history_bounds),
        (3, Some(bounds))
    );
    damage(dir.path(), |txn| {
        let mut events = txn.open_table(HISTORY).expect("history");
        events
            .insert((2u64, 0u32), [0xffu8; 3].as_slice())
            .expect("garbage");
        let empty = HistoryEvent {
            key: b"c".to_vec(),
            entry: None,
            prev: None,
        };
        let bytes = postcard::to_allocvec(&empty).unwrap();
        events
            .insert((3u64, 0u32), bytes.as_slice())
            .expect("an empty event");
    });
    let report = check_data_dir(dir.path()).expect("check runs");
    let problems = report.problems.join("\n");
    assert!(problems.contains("history event 2.0:"), "{problems}");
    assert!(
        problems
            .contains("history event 3.0 of key c holds neither a record nor the one it replaced"),
        "{problems}"
    );
}
