//! What the fuzz targets `client_frame`, `raft_frame`, `tuple`, `snapshot_file`,
//! `backup_file` and `sql` (`fuzzing::sql`) in
//! `fuzz/` run, and their seeds (`seeds()`), kept in the library (behind the `testing`
//! feature) so the tests run the same code on every saved input (`fuzz/regressions/`,
//! `fuzz/seeds/`); the `apply` target runs `tests/storage/reference.rs`. Each
//! function panics only on a bug: input that is refused must come back as an error.

pub mod sql;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ClientOp, ClientRequest};
use crate::limits::FRAME_BYTES_MAX;
use crate::net::frame::{FrameError, decode_bytes, encode_bytes};
use crate::net::raft::RaftRpc;
use crate::storage::tuple::Tuple;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

/// Decodes one frame from `data` as a node reads it from a stream; a frame that decodes must
/// encode back to the bytes it came from (postcard is canonical for these types).
pub fn decode_frame<T: Serialize + DeserializeOwned>(data: &[u8]) -> Result<T, FrameError> {
    let value: T = decode_bytes(data, FRAME_BYTES_MAX)?;
    let again = encode_frame(&value);
    let decoded: T = decode_bytes(&again, usize::MAX).expect("an encoded frame decodes");
    assert_eq!(
        encode_frame(&decoded),
        again,
        "a frame changed on a second round trip"
    );
    Ok(value)
}

/// The client protocol's request decoder, then the checks a node runs before serving.
pub fn client_frame(data: &[u8]) {
    if let Ok(request) = decode_frame::<ClientRequest>(data)
        && let ClientOp::Write(command) = &request.op
    {
        let _ = command.validate();
    }
}

/// The Raft protocol's RPC decoder (AppendEntries, Vote, InstallSnapshot).
pub fn raft_frame(data: &[u8]) {
    let _ = decode_rpc_frame(data);
}

/// Decodes `data` as one Raft RPC frame, as the receiving side does (the `raft_frame` target).
pub fn decode_rpc_frame(data: &[u8]) -> Result<(), FrameError> {
    decode_frame::<RaftRpc>(data).map(|_| ())
}

/// One frame of each RPC kind, as a sender writes them (seeds for the `raft_frame` fuzz
/// target).
fn sample_rpc_frames() -> Vec<(&'static str, Vec<u8>)> {
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
    let vote = Vote::new(3, 1);
    let log_id = |index| LogId::new(CommittedLeaderId::new(3, 1), index);
    let entry = crate::command::Entry {
        log_id: log_id(8),
        payload: EntryPayload::Normal(crate::command::Request {
            now_ms: 1_700_000_000_000,
            command: crate::command::Command::Write(crate::api::WriteOp::Put(
                crate::api::Put::new("key", "value"),
            )),
        }),
    };
    let rpcs = [
        (
            "append_entries",
            RaftRpc::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id: Some(log_id(7)),
                entries: vec![entry],
                leader_commit: Some(log_id(7)),
            }),
        ),
        (
            "vote",
            RaftRpc::Vote(VoteRequest::new(vote, Some(log_id(7)))),
        ),
        (
            "install_snapshot",
            RaftRpc::InstallSnapshot(InstallSnapshotRequest {
                vote,
                meta: openraft::SnapshotMeta {
                    last_log_id: Some(log_id(7)),
                    last_membership: Default::default(),
                    snapshot_id: "3-1-7".into(),
                },
                offset: 0,
                data: b"ASPNSNAP".to_vec(),
                done: false,
            }),
        ),
        (
            "hash_kv",
            RaftRpc::HashKv {
                from: 1,
                check: 0x5eed,
                wait_ms: 10_000,
            },
        ),
    ];
    rpcs.into_iter()
        .map(|(name, rpc)| (name, encode_frame(&rpc)))
        .collect()
}

/// The snapshot reader: the bytes as a snapshot file, checked whole, then installed into an
/// empty in-memory store; a file refused by either changes nothing, one accepted by the check
/// installs (the install reads the same records with the same rules).
pub fn snapshot_file(data: &[u8]) {
    use std::io::Write;
    let mut file = tempfile::tempfile().expect("a temporary file");
    file.write_all(data).expect("write the input");
    let checked = crate::storage::verify_snapshot_file(&mut file);
    let store = crate::storage::Store::open(&crate::storage::StoreOptions::in_memory())
        .expect("an in-memory store");
    let Ok(summary) = checked else {
        return;
    };
    let installed = crate::storage::StoreWrite::install_snapshot(&store, &summary.meta, &mut file);
    let installed = installed.expect("a snapshot that checks out installs");
    assert_eq!(
        installed, summary,
        "the install read another state than the check"
    );
}

/// The backup reader: the bytes as a backup file, checked whole, then restored into a fresh
/// data dir; a backup the check accepts restores with the same counts.
pub fn backup_file(data: &[u8]) {
    let checked = crate::storage::verify_backup(data, |_, _| {});
    let Ok(summary) = checked else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("in.backup");
    std::fs::write(&path, data).expect("write the input");
    let restored = crate::storage::restore_backup(&path, &dir.path().join("data"), 1 << 20, 1)
        .expect("a backup that checks out restores");
    assert_eq!(
        restored, summary,
        "the restore read another state than the check"
    );
}

/// The tuple layer's decoder: whatever unpacks packs to a key that unpacks to the same tuple
/// and sorts like it.
pub fn tuple(data: &[u8]) {
    if let Ok(tuple) = Tuple::unpack(data) {
        let packed = tuple.pack();
        let again = Tuple::unpack(&packed).expect("a packed tuple unpacks");
        assert_eq!(again, tuple, "a tuple changed on a round trip");
        let (start, end) = tuple.range();
        assert!(start < end, "a tuple's range is empty");
    }
}

/// `value` as one frame: length, then postcard.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    encode_bytes(value).expect("encodes")
}

/// The hand-made seeds of every target (`fuzz/seeds/TARGET/NAME`): valid inputs, so the
/// fuzzers start from input that reaches past the first checks.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::api::Consistency;
    use crate::api::{Compare, CompareOp, CompareTarget, KeyRange, Put, Txn, TxnOp, WriteOp};
    let mut seeds = Vec::new();
    let requests = [
        (
            "put",
            ClientOp::Write(WriteOp::Put(Put::new("key", "value"))),
        ),
        (
            "range",
            ClientOp::Range {
                range: KeyRange::prefix(b"k"),
                limit: 10,
                keys_only: false,
                count_only: false,
                consistency: Consistency::Linearizable,
            },
        ),
        (
            "txn",
            ClientOp::Write(WriteOp::Txn(Txn {
                compares: vec![Compare {
                    key: b"key".to_vec(),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(4),
                }],
                success: vec![TxnOp::Put(Put::new("key", "new"))],
                failure: vec![TxnOp::Get {
                    key: b"key".to_vec(),
                }],
            })),
        ),
        (
            "sql",
            ClientOp::Sql {
                query: "SELECT key FROM kv LIMIT 1".into(),
                consistency: Consistency::Stale,
            },
        ),
        ("status", ClientOp::Status),
        ("hashkv", ClientOp::HashKv),
    ];
    for (name, op) in requests {
        seeds.push((
            "client_frame",
            name.to_string(),
            encode_frame(&ClientRequest::new(op)),
        ));
    }
    for (name, frame) in sample_rpc_frames() {
        seeds.push(("raft_frame", name.to_string(), frame));
    }
    let tuples = [
        ("users_42", Tuple::new().push("users").push(42i64)),
        (
            "mixed",
            Tuple::new()
                .push(&b"a\x00b"[..])
                .push(-7i64)
                .push(1.5f64)
                .push(true)
                .push(Tuple::new().push("nested")),
        ),
    ];
    for (name, tuple) in tuples {
        seeds.push(("tuple", name.to_string(), tuple.pack()));
    }
    seeds.extend(store_file_seeds());
    // Bytes read as commands by the model test's decoder (tests/storage/reference.rs).
    for (name, bytes) in sql_seeds() {
        seeds.push(("sql", name.to_string(), bytes));
    }
    for (name, bytes) in [
        ("puts_and_txn", &b"\x05\x00\x00\x01\x00\x10\x01\x05\x00\x05\x02\x00\x20\x00\x03\x01\x00\x00\x05\x01\x00\x01\x00\x00\x00\x00"[..]),
        ("leases_and_vaults", &b"\x01\x04\x01\x20\x02\x00\x06\x01\x00\x00\x00\x01\x02\x40\x03\x08\x01\x02\x30\x07\x02\x05\x06\x01\x00"[..]),
    ] {
        seeds.push(("apply", name.to_string(), bytes.to_vec()));
    }
    seeds
}

/// A snapshot and a backup of a small state (keys, one with a lease, a vault key), as a node
/// writes them: seeds of the `snapshot_file` and `backup_file` targets.
fn store_file_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::api::{Put, WriteOp};
    use crate::storage::{Store, StoreOptions, StoreWrite};
    use std::io::Read;
    let store = Store::open(&StoreOptions::in_memory()).expect("an in-memory store");
    let writes = [
        WriteOp::LeaseGrant {
            id: 7,
            ttl_ms: 60_000,
        },
        WriteOp::Put(Put::new("a", "1")),
        WriteOp::Put(Put {
            lease: Some(7),
            ..Put::new("b", "2")
        }),
        WriteOp::Put(Put::new("vault/v1/k", "3")),
    ];
    let entries: Vec<crate::command::Entry> = writes
        .into_iter()
        .zip(1u64..)
        .map(|(write, index)| crate::command::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), index),
            payload: openraft::EntryPayload::Normal(crate::command::Request {
                now_ms: 1_000,
                command: crate::command::Command::Write(write),
            }),
        })
        .collect();
    StoreWrite::apply(&store, &entries).expect("apply the seed state");
    let (_, mut file) = store.build_snapshot().expect("a snapshot");
    let mut snapshot = Vec::new();
    file.read_to_end(&mut snapshot).expect("read the snapshot");
    let (_, backup) = store
        .write_backup(Vec::new(), 0, |_, _| {})
        .expect("a backup");
    vec![
        ("snapshot_file", "small_state".to_string(), snapshot),
        ("backup_file", "small_state".to_string(), backup),
    ]
}

/// Inputs of the `sql` target (see [`sql::statement`] for the grammar): the shapes that
/// aborted a node or grew without bound, and two ordinary queries.
fn sql_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // A count is two bytes (big-endian), a function's number four.
    let repeat_60000 = [3, 0, 8, 1, 0, 0, 0xEA, 0x60];
    let mut replace = vec![0, 0, 3, 3];
    replace.extend(repeat_60000);
    replace.extend([8, 1]);
    replace.extend(repeat_60000);
    vec![
        // SELECT 0 AS x UNION ALL ... : 256 terms answer, 600 and 2,000 join too many SELECTs,
        // 5,000 are too long; an INTERSECT of 128 has too many yield points.
        ("union_all_256", vec![1, 0x00, 0xFF]),
        ("union_all_600", vec![1, 0x02, 0x57]),
        ("intersect_128", vec![1, 0x00, 0x7F, 3]),
        ("union_all_2000", vec![1, 0x07, 0xCF]),
        ("union_all_5000", vec![1, 0x13, 0x87]),
        // SELECT x FROM (SELECT x FROM (... SELECT 0 AS x ...) AS t) AS t
        ("nested_from_20", vec![2, 0, 20]),
        ("nested_from_400", vec![2, 0x01, 0x90]),
        // SELECT key AS x FROM kv WHERE key IN (SELECT ... IN (SELECT key AS x FROM kv))
        ("nested_in_400", vec![3, 0x01, 0x90]),
        // ((((SELECT 0 AS x))))
        ("parens_400", vec![4, 0x01, 0x90]),
        // SELECT key AS x FROM kv WHERE key IN ('k/0', ..., 'k/4999')
        ("in_list_5000", vec![0, 2, 1, 0, 5, 0x13, 0x87]),
        // SELECT CASE WHEN version = 0 THEN 0 ... (2,000 branches) ELSE 0 END AS x FROM kv
        ("case_2000", vec![0, 1, 4, 0x07, 0xCF]),
        // SELECT repeat('k/1', 2000000000) AS x, and lpad
        (
            "repeat_huge",
            vec![0, 0, 3, 0, 8, 1, 0x77, 0x35, 0x94, 0x00],
        ),
        ("lpad_huge", vec![0, 0, 3, 1, 8, 1, 0x77, 0x35, 0x94, 0x00]),
        // replace(repeat('k/1', 60000), 'k/1', repeat('k/1', 60000)): 10 GB from 180 KB
        ("replace_amplified", replace),
        // SELECT CAST(CAST(... 0 AS BIGINT) ...) AS x, 48 deep; 22 and 6 deep with no type
        ("cast_48", vec![0, 0, 10, 0, 48, 0]),
        ("cast_22_no_type", vec![0, 0, 10, 0, 22, 4]),
        ("cast_6_no_type", vec![0, 0, 10, 0, 6, 4]),
        // SELECT 0 + 0 + ... (5,000 terms) AS x; SELECT ((((0)))) AS x, 400 deep
        ("plus_chain_5000", vec![0, 0, 2, 0x13, 0x87]),
        ("parens_expr_400", vec![0, 0, 6, 0x01, 0x90]),
        // SELECT key AS x FROM kv WHERE version = 1
        ("select_where", vec![0, 2, 1, 0, 2, 0, 1, 1, 2, 6, 0, 1]),
        // WITH c AS (SELECT COUNT(*) AS x FROM kv) SELECT x FROM c
        ("with_count", vec![5, 0, 1, 9, 0]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the committed seeds under fuzz/seeds are exactly what `seeds()` makes, and that
    // each seed decodes or checks out (so the fuzzers start past the first checks). A
    // snapshot's id holds the instant it was built, so the snapshot seed is held to checking
    // out rather than to its bytes. With ASPEN_WRITE_FUZZ_SEEDS=1 the test writes them instead.
    #[test]
    fn seeds_are_committed_and_decode() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let write = std::env::var_os("ASPEN_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
        for (target, name, bytes) in seeds() {
            let path = root.join(target).join(&name);
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let bytes = match target {
                "snapshot_file" => std::fs::read(&path).expect("the snapshot seed is committed"),
                _ => bytes,
            };
            assert_eq!(
                std::fs::read(&path).ok().as_deref(),
                Some(&bytes[..]),
                "{} is missing or stale (ASPEN_WRITE_FUZZ_SEEDS=1 rewrites it)",
                path.display()
            );
            match target {
                "client_frame" => {
                    decode_frame::<ClientRequest>(&bytes).unwrap();
                }
                "raft_frame" => decode_rpc_frame(&bytes).unwrap(),
                "tuple" => assert!(Tuple::unpack(&bytes).is_ok()),
                "sql" => assert!(sql::statement(&bytes).starts_with(['S', 'W', '('])),
                "snapshot_file" => {
                    let mut file = tempfile::tempfile().unwrap();
                    std::io::Write::write_all(&mut file, &bytes).unwrap();
                    assert_eq!(
                        crate::storage::verify_snapshot_file(&mut file)
                            .unwrap()
                            .keys,
                        3
                    );
                }
                "backup_file" => {
                    let summary = crate::storage::verify_backup(&bytes[..], |_, _| {}).unwrap();
                    assert_eq!((summary.keys, summary.leases), (3, 1));
                }
                _ => {}
            }
        }
    }

    // Proves the sql seeds say what their names claim.
    #[test]
    fn sql_seeds_make_the_statements_named() {
        let seeds: std::collections::HashMap<_, _> = sql_seeds().into_iter().collect();
        let statement = |name: &str| sql::statement(&seeds[name]);
        assert_eq!(
            statement("union_all_600").matches(" UNION ALL ").count(),
            599
        );
        assert_eq!(
            statement("union_all_5000").matches(" UNION ALL ").count(),
            4_999
        );
        assert!(statement("in_list_5000").ends_with("'k/4999')"));
        assert_eq!(statement("case_2000").matches(" WHEN ").count(), 2_000);
        assert_eq!(statement("nested_from_400").matches(") AS t").count(), 400);
        assert_eq!(statement("cast_48").matches("CAST(").count(), 48);
        assert!(statement("cast_6_no_type").ends_with("0 AS ) AS ) AS ) AS ) AS ) AS ) AS x"));
        assert_eq!(
            statement("repeat_huge"),
            "SELECT repeat('k/1', 2000000000) AS x"
        );
        assert_eq!(
            statement("replace_amplified"),
            "SELECT replace(repeat('k/1', 60000), 'k/1', repeat('k/1', 60000)) AS x"
        );
        assert_eq!(
            statement("select_where"),
            "SELECT key AS x FROM kv WHERE version = 1"
        );
        assert_eq!(
            statement("with_count"),
            "WITH c AS (SELECT COUNT(*) AS x FROM kv) SELECT x FROM c"
        );
    }
}
