//! What the fuzz targets in `fuzz/` run, one function per target, kept in the library so the
//! tests run the same code on every saved input (`fuzz/regressions/`, `fuzz/seeds/`). Each
//! function panics only on a bug: input that is refused must come back as an error.

use futures::executor::block_on;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::FRAME_BYTES_MAX;
use crate::net::frame::{FrameError, read_frame};
use crate::net::proto::{ClientOp, ClientRequest};
use crate::storage::tuple::Tuple;

/// Decodes one frame from `data` as a node reads it from a stream; a frame that decodes must
/// encode back to the bytes it came from (postcard is canonical for these types).
pub fn decode_frame<T: Serialize + DeserializeOwned>(data: &[u8]) -> Result<T, FrameError> {
    let value: T = block_on(read_frame(&mut &data[..], FRAME_BYTES_MAX))?;
    let again = postcard::to_stdvec(&value).expect("a decoded frame encodes");
    let decoded: T = postcard::from_bytes(&again).expect("an encoded frame decodes");
    assert_eq!(
        postcard::to_stdvec(&decoded).expect("encodes"),
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
    let _ = crate::net::raft::decode_rpc_frame(data);
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
    let payload = postcard::to_stdvec(value).expect("encodes");
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// The hand-made seeds of every target (`fuzz/seeds/TARGET/NAME`): valid inputs, so the
/// fuzzers start from input that reaches past the first checks.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::net::proto::Consistency;
    use crate::storage::{Command, Compare, CompareOp, CompareTarget, KeyRange, Put, Txn, TxnOp};
    let mut seeds = Vec::new();
    let requests = [
        (
            "put",
            ClientOp::Write(Command::Put(Put::new("key", "value"))),
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
            ClientOp::Write(Command::Txn(Txn {
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
    ];
    for (name, op) in requests {
        seeds.push((
            "client_frame",
            name.to_string(),
            encode_frame(&ClientRequest::new(op)),
        ));
    }
    for (name, frame) in crate::net::raft::sample_rpc_frames() {
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
    // Bytes read as commands by the model test's decoder (tests/storage/reference.rs).
    for (name, bytes) in [
        ("puts_and_txn", &b"\x05\x00\x00\x01\x00\x10\x01\x05\x00\x05\x02\x00\x20\x00\x03\x01\x00\x00\x05\x01\x00\x01\x00\x00\x00\x00"[..]),
        ("leases_and_vaults", &b"\x01\x04\x01\x20\x02\x00\x06\x01\x00\x00\x00\x01\x02\x40\x03\x08\x01\x02\x30\x07\x02\x05\x06\x01\x00"[..]),
    ] {
        seeds.push(("apply", name.to_string(), bytes.to_vec()));
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the committed seeds under fuzz/seeds are exactly what `seeds()` makes, and that
    // each frame and tuple seed decodes (so the fuzzers start past the first checks). With
    // ASPEN_WRITE_FUZZ_SEEDS=1 the test writes them instead.
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
                "raft_frame" => crate::net::raft::decode_rpc_frame(&bytes).unwrap(),
                "tuple" => assert!(Tuple::unpack(&bytes).is_ok()),
                _ => {}
            }
        }
    }
}
