//! How records sit in the tables: decoding a key's entry, a lease, a vault's metadata and a
//! log entry (each error naming the record), and reading and writing the typed meta values of
//! `schema`. Shared by the store, the state machine, reads, snapshots, backups and the checker.
//! Never opens a transaction of its own: callers pass theirs.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::VaultMeta;
use crate::command::{Entry, LogId};
use crate::storage::error::{Error, Result};
use crate::storage::schema::*;
use crate::storage::types::{KvEntry, KvEntryRef, LeaseRecord};

pub(crate) fn decode_kv_entry(key: &[u8], bytes: &[u8]) -> Result<KvEntry> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::corrupt(
            format!("kv entry of key {:?}", String::from_utf8_lossy(key)),
            e,
        )
    })
}

/// A kv record decoded without copying its value.
pub(crate) fn decode_kv_entry_ref<'a>(key: &[u8], bytes: &'a [u8]) -> Result<KvEntryRef<'a>> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::corrupt(
            format!("kv entry of key {:?}", String::from_utf8_lossy(key)),
            e,
        )
    })
}

pub(crate) fn decode_vault(name: &[u8], bytes: &[u8]) -> Result<VaultMeta> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::corrupt(format!("vault {:?}", String::from_utf8_lossy(name)), e))
}

pub(crate) fn decode_lease(id: u64, bytes: &[u8]) -> Result<LeaseRecord> {
    postcard::from_bytes(bytes).map_err(|e| Error::corrupt(format!("lease {id}"), e))
}

/// Decodes one stored log entry (this build's format or the one before, translated) and
/// checks it sits at its own index.
pub fn decode_log_entry(index: u64, bytes: &[u8]) -> Result<Entry> {
    let what = || format!("raft_log entry {index}");
    let (format, rest) = bytes
        .split_first()
        .ok_or_else(|| Error::corrupt(what(), "empty record"))?;
    let translated;
    let body = match *format {
        LOG_ENTRY_FORMAT => rest,
        LOG_ENTRY_FORMAT_FLAT_COMMANDS => {
            translated = from_flat_commands(rest).map_err(|e| Error::corrupt(what(), e))?;
            translated.as_slice()
        }
        other => {
            return Err(Error::corrupt(
                what(),
                format!("unknown format byte {other}"),
            ));
        }
    };
    let entry: Entry = postcard::from_bytes(body).map_err(|e| Error::corrupt(what(), e))?;
    if entry.log_id.index != index {
        return Err(Error::corrupt(
            what(),
            format!("holds the entry of index {}", entry.log_id.index),
        ));
    }
    Ok(entry)
}

/// Translates the postcard body of a format-1 log entry into this build's encoding. Only a
/// normal entry's command tag differs: format 1 numbered the seven client writes 0-6 (today
/// `Command::Write`, 0, around the `WriteOp` of the same number and shape) and `Expire`,
/// `SetVaultLimits`, `Batch` 7-9 (today 1-3). Everything before and after the tag is kept.
fn from_flat_commands(body: &[u8]) -> std::result::Result<Vec<u8>, FlatCommandError> {
    /// `openraft::EntryPayload::Normal`'s position.
    const NORMAL: u32 = 1;
    let fail = FlatCommandError::Decode;
    let (_, rest) = postcard::take_from_bytes::<LogId>(body).map_err(fail)?;
    let (payload, rest) = postcard::take_from_bytes::<u32>(rest).map_err(fail)?;
    if payload != NORMAL {
        return Ok(body.to_vec());
    }
    let (_now_ms, rest) = postcard::take_from_bytes::<u64>(rest).map_err(fail)?;
    let (tag, after) = postcard::take_from_bytes::<u32>(rest).map_err(fail)?;
    let new_tag: &[u8] = match tag {
        0..=6 => &[0, tag as u8],
        7..=9 => &[(tag - 6) as u8],
        other => return Err(FlatCommandError::UnknownVariant(other)),
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    out.extend_from_slice(&body[..body.len() - rest.len()]);
    out.extend_from_slice(new_tag);
    out.extend_from_slice(after);
    Ok(out)
}

/// Why a format-1 entry cannot be translated.
#[derive(Debug, thiserror::Error)]
enum FlatCommandError {
    #[error("{0}")]
    Decode(postcard::Error),
    #[error("format-1 command variant {0} does not exist")]
    UnknownVariant(u32),
}

/// Writes a meta value. Takes `&WriteTransaction`: it must run inside one.
pub(crate) fn write_meta<T: Serialize>(
    txn: &WriteTransaction,
    meta: Meta<T>,
    value: &T,
) -> Result<()> {
    let bytes = postcard::to_allocvec(value).map_err(|e| Error::corrupt(meta.key, e))?;
    txn.open_table(meta.table)?
        .insert(meta.key, bytes.as_slice())?;
    Ok(())
}

/// Writes `Some` values and removes the key for `None`.
pub(crate) fn write_meta_opt<T: Serialize>(
    txn: &WriteTransaction,
    meta: Meta<T>,
    value: Option<&T>,
) -> Result<()> {
    match value {
        Some(value) => write_meta(txn, meta, value),
        None => {
            txn.open_table(meta.table)?.remove(meta.key)?;
            Ok(())
        }
    }
}

/// Reads a meta value in a read transaction.
pub(crate) fn read_meta<T: DeserializeOwned>(
    txn: &ReadTransaction,
    meta: Meta<T>,
) -> Result<Option<T>> {
    decode_meta(meta, txn.open_table(meta.table)?.get(meta.key)?)
}

/// Reads a meta value inside a write transaction (sees the transaction's own writes).
pub(crate) fn read_meta_in<T: DeserializeOwned>(
    txn: &WriteTransaction,
    meta: Meta<T>,
) -> Result<Option<T>> {
    decode_meta(meta, txn.open_table(meta.table)?.get(meta.key)?)
}

fn decode_meta<T: DeserializeOwned>(
    meta: Meta<T>,
    bytes: Option<redb::AccessGuard<'_, &'static [u8]>>,
) -> Result<Option<T>> {
    bytes
        .map(|bytes| postcard::from_bytes(bytes.value()))
        .transpose()
        .map_err(|e| Error::corrupt(format!("meta {}", meta.key), e))
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::decode_log_entry;
    use crate::api::{Put, WriteOp};
    use crate::command::{BatchItem, Command, Entry, Request, VaultLimits};

    fn normal(index: u64, command: Command) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 2), index),
            payload: openraft::EntryPayload::Normal(Request {
                now_ms: 1_700_000_000_123,
                command,
            }),
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    // Proves entries written by the build before `Command::Write` (format 1; these bytes were
    // printed by commit 6bf4a5c) decode to the same commands today: a client write of each
    // shape, each housekeeping command, a batch and a blank entry.
    #[test]
    fn format_1_entries_still_decode() {
        let cases = [
            (
                "0103020101fbd095ffbc3100016b0176000000",
                normal(1, Command::Write(WriteOp::Put(Put::new("k", "v")))),
            ),
            (
                "0103020201fbd095ffbc3106ac02",
                normal(2, Command::Write(WriteOp::LeaseKeepAlive { id: 300 })),
            ),
            (
                "0103020301fbd095ffbc31070101780107",
                normal(
                    3,
                    Command::Expire {
                        keys: vec![b"x".to_vec()],
                        leases: vec![7],
                    },
                ),
            ),
            (
                "0103020401fbd095ffbc31080506",
                normal(
                    4,
                    Command::SetVaultLimits(VaultLimits {
                        vaults_max: 5,
                        keys_per_vault_max: 6,
                    }),
                ),
            ),
            (
                "0103020501fbd095ffbc3109010901016401",
                normal(
                    5,
                    Command::Batch(vec![BatchItem {
                        now_ms: 9,
                        op: WriteOp::Delete {
                            key: b"d".to_vec(),
                            prev_kv: true,
                        },
                    }]),
                ),
            ),
            (
                "0103020600",
                Entry {
                    log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 2), 6),
                    payload: openraft::EntryPayload::Blank,
                },
            ),
        ];
        for (bytes, expected) in cases {
            let index = expected.log_id.index;
            let decoded = decode_log_entry(index, &hex(bytes)).unwrap();
            assert_eq!(decoded.log_id, expected.log_id, "entry {index}");
            match (decoded.payload, expected.payload) {
                (EntryPayload::Normal(decoded), EntryPayload::Normal(expected)) => {
                    assert_eq!(decoded, expected, "entry {index}")
                }
                (EntryPayload::Blank, EntryPayload::Blank) => {}
                (decoded, expected) => panic!("entry {index}: {decoded:?}, not {expected:?}"),
            }
        }
        // A command tag format 1 never had is reported as such.
        let error = decode_log_entry(1, &hex("0103020101fbd095ffbc310a")).unwrap_err();
        assert!(
            error.to_string().contains("variant 10 does not exist"),
            "{error}"
        );
    }
}
