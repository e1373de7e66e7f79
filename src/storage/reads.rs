//! Reads: every answer comes from one redb read transaction (an MVCC snapshot), so a get, a
//! page of a scan and the revision they report always agree. Reads never go through the
//! writer. Keys whose TTL has passed at the reader's `now_ms` are invisible; the TTL actor
//! deletes them through Raft later.

use std::ops::Bound;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use crate::api::{KeyRange, KeyValue, VaultInfo, VaultMeta};
use crate::command::{LogId, VaultLimits};
use crate::limits::{PAGE_BYTES_MAX, SCAN_ENTRIES_MAX};
use crate::storage::codec::{
    decode_kv_entry, decode_kv_entry_ref, decode_lease, decode_vault, read_meta,
};
use crate::storage::error::Result;
use crate::storage::schema::*;
use crate::storage::store::Store;
use crate::storage::types::{KvEntry, LeaseRecord};

/// One page of a range scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    /// Where the next page starts, when the range holds more than this page.
    pub continuation: Option<Vec<u8>>,
    /// The revision the page reflects.
    pub revision: u64,
}

/// How to scan a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// Entries per page; capped at `SCAN_ENTRIES_MAX`.
    pub limit: usize,
    /// Leave values out (they are still read from disk: redb stores them inline).
    pub keys_only: bool,
    /// The page stops before the entry that would take its keys and values past this many
    /// bytes (it always holds at least one entry): decided inside the scan, so no more than
    /// that is ever built.
    pub bytes_max: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            limit: SCAN_ENTRIES_MAX,
            keys_only: false,
            bytes_max: PAGE_BYTES_MAX,
        }
    }
}

/// A lease and its remaining time, as listed to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: u64,
    pub record: LeaseRecord,
}

impl Store {
    /// A consistent view of the state machine as of now, judging expiry at `now_ms`, or at
    /// the state machine's clock when that is later (a reader whose clock is behind never sees
    /// what was already expired).
    pub fn read(&self, now_ms: u64) -> Result<ReadView> {
        ReadView::new(self.begin_read()?, now_ms.max(self.clock_ms()))
    }

    /// As [`Store::read`], judging expiry at exactly `now_ms` (0: every stored key is live),
    /// for tools and tests that look at what is stored.
    pub fn read_at(&self, now_ms: u64) -> Result<ReadView> {
        ReadView::new(self.begin_read()?, now_ms)
    }
}

/// The state machine as of one read transaction. Only the `kv` table and the revision are
/// opened up front (a point get needs nothing else); the rest open on first use.
pub struct ReadView {
    pub(in crate::storage) txn: ReadTransaction,
    pub(in crate::storage) kv: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(in crate::storage) revision: u64,
    pub(in crate::storage) now_ms: u64,
}

impl ReadView {
    pub(crate) fn new(txn: ReadTransaction, now_ms: u64) -> Result<Self> {
        Ok(ReadView {
            kv: txn.open_table(KV)?,
            revision: read_meta(&txn, REVISION)?.unwrap_or(0),
            txn,
            now_ms,
        })
    }

    /// The largest `now_ms` the state machine applied.
    pub fn clock_ms(&self) -> Result<u64> {
        Ok(read_meta(&self.txn, CLOCK)?.unwrap_or(0))
    }

    /// The read transaction under this view, for reads this module does not offer.
    pub fn transaction(&self) -> &ReadTransaction {
        &self.txn
    }

    /// The instant expiry is judged at.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The revision this view reflects.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The last log id applied to this view.
    pub fn last_applied(&self) -> Result<Option<LogId>> {
        read_meta(&self.txn, LAST_APPLIED)
    }

    /// A live key's record.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.kv.get(key)? {
            Some(bytes) => {
                let entry = decode_kv_entry(key, bytes.value())?;
                Ok(entry
                    .is_live(self.now_ms)
                    .then(|| entry.into_key_value(key.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// One page of live keys in `range`, in key order. Continue with
    /// `KeyRange { start: continuation, ..range }`.
    pub fn range(&self, range: &KeyRange, options: ScanOptions) -> Result<Page> {
        let limit = options.limit.clamp(1, SCAN_ENTRIES_MAX);
        let mut kvs = Vec::new();
        let mut continuation = None;
        let mut page_bytes = 0usize;
        for item in self.kv_range(range)? {
            let (key, bytes) = item?;
            let key = key.value();
            if kvs.len() == limit {
                continuation = Some(key.to_vec());
                break;
            }
            let entry = decode_kv_entry_ref(key, bytes.value())?;
            if !entry.is_live(self.now_ms) {
                continue;
            }
            let value_bytes = if options.keys_only {
                0
            } else {
                entry.value.len()
            };
            page_bytes = page_bytes.saturating_add(key.len() + value_bytes);
            if !kvs.is_empty() && page_bytes > options.bytes_max {
                continuation = Some(key.to_vec());
                break;
            }
            kvs.push(entry.to_key_value(key, !options.keys_only));
        }
        Ok(Page {
            kvs,
            continuation,
            revision: self.revision,
        })
    }

    /// Live keys in `range`. Reads no values: it counts stored keys and subtracts the expired
    /// ones found through the expiry index.
    pub fn count(&self, range: &KeyRange) -> Result<u64> {
        let mut stored = 0u64;
        for item in self.kv_range(range)? {
            item?;
            stored += 1;
        }
        let mut expired = 0u64;
        for item in self
            .txn
            .open_table(IDX_EXPIRES)?
            .range(expired_at(self.now_ms, &[][..]))?
        {
            let (row, _) = item?;
            if range.contains(row.value().1) {
                expired += 1;
            }
        }
        Ok(stored - expired)
    }

    /// Stored entries of `range` as redb hands them out, live or not.
    pub(crate) fn kv_range(
        &self,
        range: &KeyRange,
    ) -> Result<redb::Range<'static, &'static [u8], &'static [u8]>> {
        Ok(match &range.end {
            Some(end) => self.kv.range(range.start.as_slice()..end.as_slice())?,
            None => self.kv.range(range.start.as_slice()..)?,
        })
    }

    /// Keys whose TTL passed at `now_ms`, oldest first, at most `max`.
    pub fn expired_keys(&self, now_ms: u64, max: usize) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        for item in self
            .txn
            .open_table(IDX_EXPIRES)?
            .range(expired_at(now_ms, &[][..]))?
            .take(max)
        {
            let (row, _) = item?;
            keys.push(row.value().1.to_vec());
        }
        Ok(keys)
    }

    /// Leases whose deadline passed at `now_ms`, oldest first, at most `max`.
    pub fn expired_leases(&self, now_ms: u64, max: usize) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for item in self
            .txn
            .open_table(IDX_LEASE_DEADLINE)?
            .range(expired_at(now_ms, 0))?
            .take(max)
        {
            ids.push(item?.0.value().1);
        }
        Ok(ids)
    }

    /// Keys attached to lease `id`, in key order, at most `max`.
    pub fn lease_keys(&self, id: u64, max: usize) -> Result<Vec<Vec<u8>>> {
        lease_keys_in(&self.txn.open_table(IDX_LEASE)?, id, max)
    }

    /// A lease, if it is still live at this view's `now_ms`.
    pub fn lease(&self, id: u64) -> Result<Option<LeaseRecord>> {
        match self.txn.open_table(LEASES)?.get(id)? {
            Some(bytes) => {
                let lease = decode_lease(id, bytes.value())?;
                Ok(lease.is_live(self.now_ms).then_some(lease))
            }
            None => Ok(None),
        }
    }

    /// Live leases in id order, starting at `from`, at most `max`.
    pub fn leases(&self, from: u64, max: usize) -> Result<Vec<LeaseInfo>> {
        let mut leases = Vec::new();
        for item in self.txn.open_table(LEASES)?.range(from..)? {
            if leases.len() == max {
                break;
            }
            let (id, bytes) = item?;
            let record = decode_lease(id.value(), bytes.value())?;
            if record.is_live(self.now_ms) {
                leases.push(LeaseInfo {
                    id: id.value(),
                    record,
                });
            }
        }
        Ok(leases)
    }

    /// Every stored key and record, live or not, in key order: for snapshots and checks.
    pub(crate) fn raw_entries(&self) -> Result<impl Iterator<Item = Result<(Vec<u8>, KvEntry)>>> {
        Ok(self.kv.range::<&[u8]>(..)?.map(|item| {
            let (key, bytes) = item?;
            let key = key.value().to_vec();
            let entry = decode_kv_entry(&key, bytes.value())?;
            Ok((key, entry))
        }))
    }

    /// Every vault with its metadata, in name order.
    pub fn vaults(&self) -> Result<Vec<VaultInfo>> {
        self.raw_vaults()?
            .map(|item| {
                item.map(|(name, meta)| VaultInfo {
                    name: String::from_utf8_lossy(&name).into_owned(),
                    meta,
                })
            })
            .collect()
    }

    pub(crate) fn raw_vaults(&self) -> Result<impl Iterator<Item = Result<(Vec<u8>, VaultMeta)>>> {
        Ok(self
            .txn
            .open_table(VAULTS)?
            .range::<&[u8]>(..)?
            .map(|item| {
                let (name, bytes) = item?;
                let name = name.value().to_vec();
                let meta = decode_vault(&name, bytes.value())?;
                Ok((name, meta))
            }))
    }

    /// The backup revision this state was restored from, while no snapshot replaced it.
    pub fn restored_from(&self) -> Result<Option<u64>> {
        read_meta(&self.txn, RESTORED_FROM)
    }

    /// Clients, roles and grants (empty before the first client is recorded).
    pub fn auth(&self) -> Result<crate::api::AuthState> {
        Ok(read_meta(&self.txn, AUTH)?.unwrap_or_default())
    }

    /// The vault limits in force.
    pub fn vault_limits(&self) -> Result<VaultLimits> {
        Ok(read_meta(&self.txn, VAULT_LIMITS)?.unwrap_or_default())
    }

    /// Every stored lease, live or not, in id order.
    pub(crate) fn raw_leases(&self) -> Result<impl Iterator<Item = Result<(u64, LeaseRecord)>>> {
        Ok(self.txn.open_table(LEASES)?.range::<u64>(..)?.map(|item| {
            let (id, bytes) = item?;
            let id = id.value();
            Ok((id, decode_lease(id, bytes.value())?))
        }))
    }
}

/// A row of a time index: (instant in ms, key or lease id).
type IndexRow<T> = (u64, T);

/// Index rows `(instant, _)` with `instant <= now_ms`: those sort before `(now_ms + 1, least)`.
fn expired_at<T>(now_ms: u64, least: T) -> (Bound<IndexRow<T>>, Bound<IndexRow<T>>) {
    match now_ms.checked_add(1) {
        Some(next) => (Bound::Unbounded, Bound::Excluded((next, least))),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

/// Keys attached to lease `id` in an `idx_lease` table, in key order, at most `max`.
pub(crate) fn lease_keys_in(
    idx_lease: &impl ReadableTable<(u64, &'static [u8]), ()>,
    id: u64,
    max: usize,
) -> Result<Vec<Vec<u8>>> {
    let start: (u64, &[u8]) = (id, &[]);
    let mut keys = Vec::new();
    for item in idx_lease.range(start..)?.take(max) {
        let (row, _) = item?;
        let (lease, key) = row.value();
        if lease != id {
            break;
        }
        keys.push(key.to_vec());
    }
    Ok(keys)
}
