//! How records sit in the tables: decoding a key's entry, a lease, a vault's metadata and a
//! log entry (each error naming the record), and reading and writing the typed meta values of
//! `schema`. Shared by the store, the state machine, reads, snapshots, backups and the checker.
//! Never opens a transaction of its own: callers pass theirs.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::VaultMeta;
use crate::command::Entry;
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

/// Decodes one stored log entry and checks it sits at its own index.
pub fn decode_log_entry(index: u64, bytes: &[u8]) -> Result<Entry> {
    let what = || format!("raft_log entry {index}");
    let (format, rest) = bytes
        .split_first()
        .ok_or_else(|| Error::corrupt(what(), "empty record"))?;
    if *format != LOG_ENTRY_FORMAT {
        return Err(Error::corrupt(
            what(),
            format!("unknown format byte {format}"),
        ));
    }
    let entry: Entry = postcard::from_bytes(rest).map_err(|e| Error::corrupt(what(), e))?;
    if entry.log_id.index != index {
        return Err(Error::corrupt(
            what(),
            format!("holds the entry of index {}", entry.log_id.index),
        ));
    }
    Ok(entry)
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
