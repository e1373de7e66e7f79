//! Backup files at the storage level: a restore gives back every key with its revisions,
//! versions, lease and TTL, the leases and the counters; a damaged or truncated file, or a
//! target that already holds a store, is refused before anything is written.

use aspen::api::WriteOp;
use std::sync::Arc;

use aspen::api::{KeyRange, Put, Txn, TxnOp};
use aspen::command::Command;
use aspen::storage::{Store, StoreOptions, restore_backup, verify_backup};

use crate::util::{Driver, all_keys, small};

const NOW_MS: u64 = 1_000_000;

/// A store with 2,000 keys in batches, overwrites, deletes, a binary key, a TTL key and a lease
/// with keys; returns it and the revision it reached.
fn populated() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&small(StoreOptions::file(dir.path()))).expect("open"));
    let mut driver = Driver::new(Arc::clone(&store));
    for batch in 0..20 {
        let success = (0..100)
            .map(|i| {
                TxnOp::Put(Put::new(
                    format!("key/{:05}", batch * 100 + i),
                    vec![b'v'; i],
                ))
            })
            .collect();
        driver.run(
            NOW_MS,
            Command::Write(WriteOp::Txn(Txn {
                compares: vec![],
                success,
                failure: vec![],
            })),
        );
    }
    for i in 0..50 {
        driver.run(
            NOW_MS,
            Command::Write(WriteOp::Put(Put::new(format!("key/{:05}", i * 7), "again"))),
        );
    }
    driver.run(
        NOW_MS,
        Command::Write(WriteOp::DeleteRange(KeyRange::prefix(b"key/0019"))),
    );
    driver.run(
        NOW_MS,
        Command::Write(WriteOp::Put(Put::new(
            vec![0xff, 0x00, 0xfe],
            vec![0x80, 0x81],
        ))),
    );
    driver.run(
        NOW_MS,
        Command::Write(WriteOp::Put(Put {
            ttl_ms: Some(3_600_000),
            ..Put::new("ttl/one", "x")
        })),
    );
    driver.run(
        NOW_MS,
        Command::Write(WriteOp::LeaseGrant {
            id: 42,
            ttl_ms: 60_000,
        }),
    );
    for key in ["lease/a", "lease/b"] {
        driver.run(
            NOW_MS,
            Command::Write(WriteOp::Put(Put {
                lease: Some(42),
                ..Put::new(key, "held")
            })),
        );
    }
    (dir, store)
}

fn backup_bytes(store: &Store) -> Vec<u8> {
    let (summary, bytes) = store
        .write_backup(Vec::new(), 7, |_, _| {})
        .expect("backup");
    assert_eq!(
        summary.revision,
        store.read(NOW_MS).expect("read").revision()
    );
    bytes
}

// Proves a restored store holds the same keys (value, version, create and mod revision, lease,
// TTL), leases and revision as the source, carries no log or membership, passes the check, and
// continues revisions from the backup's.
#[test]
fn restore_gives_back_the_same_state() {
    let (_dir, store) = populated();
    let bytes = backup_bytes(&store);
    let file = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(file.path(), &bytes).expect("write");
    let summary = verify_backup(bytes.as_slice(), |_, _| {}).expect("verify");
    let source = store.read(NOW_MS).expect("read");
    assert_eq!(summary.keys, all_keys(&store, NOW_MS).len() as u64);
    assert_eq!(summary.leases, 1);

    let target = tempfile::tempdir().expect("tempdir");
    let restored_dir = target.path().join("node");
    let restored_summary =
        restore_backup(file.path(), &restored_dir, 4 << 20, NOW_MS + 10).expect("restore");
    assert_eq!(restored_summary, summary);

    let check = aspen::storage::check::check_data_dir(&restored_dir).expect("check");
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(check.log_entries, 0);
    assert_eq!(check.meta.last_applied, None);

    let restored = Arc::new(Store::open(&small(StoreOptions::file(&restored_dir))).expect("open"));
    assert_eq!(all_keys(&restored, NOW_MS), all_keys(&store, NOW_MS));
    let view = restored.read(NOW_MS).expect("read");
    assert_eq!(view.revision(), source.revision());
    assert_eq!(view.lease_keys(42, 10).expect("lease keys").len(), 2);
    let lease = view.lease(42).expect("lease").expect("lease 42 restored");
    assert_eq!(lease.ttl_ms, 60_000);
    assert!(lease.deadline_ms >= NOW_MS + 10 + 60_000, "{lease:?}");
    assert_eq!(
        view.expired_keys(NOW_MS + 3_600_000, 10)
            .expect("expiry index"),
        vec![b"ttl/one".to_vec()]
    );
    let (applied, membership) = restored.applied_state().expect("applied");
    assert_eq!(applied, None);
    assert_eq!(membership, Default::default());

    let mut driver = Driver::new(Arc::clone(&restored));
    let response = driver.run(
        NOW_MS,
        Command::Write(WriteOp::Put(Put::new("after", "restore"))),
    );
    assert_eq!(response.revision, source.revision() + 1);
}

/// `backup` in etcd's snapshot form, as the etcd API's Maintenance.Snapshot streams it.
fn etcd_form(backup: &[u8]) -> Vec<u8> {
    let mut trailer = aspen::storage::EtcdSnapshotTrailer::default();
    trailer.update(backup);
    let mut file = backup.to_vec();
    file.extend(trailer.finish());
    file
}

// Proves a backup in etcd's snapshot form (padded with its length to 512 bytes, then a
// SHA-256: what `etcdctl snapshot save` checks) restores as the plain backup does, whatever
// the padding (none needed included), and that one flipped byte anywhere in it, trailer
// included, or a forged length makes the restore refuse the file and write nothing.
#[test]
fn backups_in_etcds_snapshot_form_restore_and_are_checked() {
    let (_dir, store) = populated();
    let bytes = backup_bytes(&store);
    let target = tempfile::tempdir().expect("tempdir");
    let restore = |file: &[u8], name: &str| {
        let path = target.path().join(format!("{name}.db"));
        std::fs::write(&path, file).expect("write");
        restore_backup(&path, &target.path().join(name), 4 << 20, NOW_MS)
    };
    let wrapped = etcd_form(&bytes);
    assert_eq!(wrapped.len() % 512, 32);
    let summary = restore(&wrapped, "whole").expect("restores");
    assert_eq!(summary.keys, all_keys(&store, NOW_MS).len() as u64);
    // A backup whose length plus 8 is a multiple of 512 needs no padding.
    let trailer = aspen::storage::EtcdSnapshotTrailer::default();
    let mut sized = aspen::storage::EtcdSnapshotTrailer::default();
    sized.update(&[0u8; 504]);
    assert_eq!(sized.finish().len(), 8 + 32);
    assert_eq!(trailer.finish().len(), 504 + 8 + 32);
    for at in [
        0,
        bytes.len() / 2,
        bytes.len() + 3,
        wrapped.len() - 40,
        wrapped.len() - 1,
    ] {
        let mut damaged = wrapped.clone();
        damaged[at] ^= 0x01;
        let name = format!("flipped{at}");
        assert!(restore(&damaged, &name).is_err(), "a flipped byte at {at}");
        assert!(
            !target.path().join(&name).exists(),
            "nothing written for {at}"
        );
    }
    // A well-formed trailer whose length claims more than the file holds (here 2^64 - 1) is
    // not taken for etcd's form: refused as a backup with bytes after its end, no panic.
    let mut forged = wrapped.clone();
    let hashed = forged.len() - 32;
    forged[hashed - 8..hashed].copy_from_slice(&u64::MAX.to_le_bytes());
    let sha = <sha2::Sha256 as sha2::Digest>::digest(&forged[..hashed]);
    forged[hashed..].copy_from_slice(&sha);
    assert!(restore(&forged, "forged").is_err());
}

// Proves every damaged copy (a flipped byte anywhere: magic, header, a key, the end record;
// a cut anywhere) is refused with an error naming the backup, and nothing is written.
#[test]
fn damaged_backups_are_refused() {
    let (_dir, store) = populated();
    let bytes = backup_bytes(&store);
    let target = tempfile::tempdir().expect("tempdir");
    let len = bytes.len();
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for at in [0, 9, 20, len / 3, len / 2, len - 20, len - 1] {
        let mut copy = bytes.clone();
        copy[at] ^= 0x40;
        damaged.push((format!("byte {at} flipped"), copy));
    }
    for cut in [0, 5, 12, len / 2, len - 1] {
        damaged.push((format!("cut at {cut}"), bytes[..cut].to_vec()));
    }
    let mut extra = bytes.clone();
    extra.push(0);
    damaged.push(("a byte appended".into(), extra));
    for (what, copy) in damaged {
        let file = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(file.path(), &copy).expect("write");
        let dir = target.path().join("node");
        let error = restore_backup(file.path(), &dir, 4 << 20, NOW_MS)
            .expect_err(&format!("{what}: refused"))
            .to_string();
        assert!(
            error.contains("backup") && (error.contains("corrupt") || error.contains("truncated")),
            "{what}: {error}"
        );
        assert!(!dir.exists(), "{what}: the data dir was created");
    }

    // A target that already holds a store is refused and left as it was.
    let file = tempfile::NamedTempFile::new().expect("file");
    std::fs::write(file.path(), &bytes).expect("write");
    let occupied = tempfile::tempdir().expect("tempdir");
    drop(Store::open(&small(StoreOptions::file(occupied.path()))).expect("open"));
    let error = restore_backup(file.path(), occupied.path(), 4 << 20, NOW_MS)
        .expect_err("occupied")
        .to_string();
    assert!(error.contains("already holds a store"), "{error}");
}
