//! The key-value state machine: applies committed log entries to the `kv`, `leases` and index
//! tables inside one write transaction per batch, committed without fsync.
//!
//! Invariants (checked by the model test and asserted where cheap):
//! - deterministic: time comes only from the request's `now_ms`, never from this node's clock;
//! - a refused command changes nothing: every check that can refuse runs before the first write;
//! - `last_applied`, membership and the revision are written in the same transaction as the
//!   state changes they describe;
//! - the revision rises by one for each command that changes what readers see (a put, a delete
//!   that removed a live key, a revoke or expiry that removed keys), as in etcd;
//! - every key with a TTL has exactly one `idx_expires` row, every key with a lease exactly one
//!   `idx_lease` row, every lease exactly one `idx_lease_deadline` row.

use openraft::EntryPayload;
use redb::{Durability, ReadableTable, Table, WriteTransaction};

use crate::limits::DELETE_CHUNK_ENTRIES_MAX;
use crate::storage::error::{CommandError, Error, Result};
use crate::storage::reads::lease_keys_in;
use crate::storage::schema::*;
use crate::storage::store::{Store, read_meta_in, write_meta};
use crate::storage::types::{
    Command, Compare, CompareOp, CompareTarget, Entry, KeyRange, KeyValue, KvEntry, KvEntryRef,
    LeaseRecord, Output, Put, Request, Response, StoredMembership, Txn, TxnOp,
};

/// Lease ids handed out for `LeaseGrant { id: 0 }` start here.
pub(crate) const FIRST_LEASE_ID: u64 = 1;

impl Store {
    /// Applies committed entries in one transaction committed without fsync; returns one
    /// response per entry (blank and membership entries included).
    pub fn apply(&self, entries: &[Entry]) -> Result<Vec<Response>> {
        let txn = self.begin_write(Durability::None)?;
        let responses = apply_in(&txn, entries)?;
        txn.commit()?;
        Ok(responses)
    }
}

fn apply_in(txn: &WriteTransaction, entries: &[Entry]) -> Result<Vec<Response>> {
    let mut machine = Machine::open(txn)?;
    let mut responses = Vec::with_capacity(entries.len());
    let mut last_applied = None;
    let mut membership = None;
    for entry in entries {
        last_applied = Some(entry.log_id);
        let response = match &entry.payload {
            EntryPayload::Blank => machine.no_output(),
            EntryPayload::Normal(request) => machine.apply_request(request)?,
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                machine.no_output()
            }
        };
        responses.push(response);
    }
    machine.save_meta(txn)?;
    drop(machine);
    if let Some(last_applied) = last_applied {
        write_meta(txn, LAST_APPLIED, &last_applied)?;
    }
    if let Some(membership) = membership {
        write_meta(txn, MEMBERSHIP, &membership)?;
    }
    Ok(responses)
}

/// Per-command context: the command's clock, the revision its writes carry, and whether it
/// changed anything readers can see.
struct Ctx {
    now_ms: u64,
    stamp: u64,
    changed: bool,
}

/// The state tables of one write transaction and the counters kept in `sm_meta`.
pub(crate) struct Machine<'txn> {
    kv: Table<'txn, &'static [u8], &'static [u8]>,
    leases: Table<'txn, u64, &'static [u8]>,
    idx_expires: Table<'txn, (u64, &'static [u8]), ()>,
    idx_lease: Table<'txn, (u64, &'static [u8]), ()>,
    idx_lease_deadline: Table<'txn, (u64, u64), ()>,
    revision: u64,
    next_lease_id: u64,
}

impl<'txn> Machine<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        let revision = read_meta_in(txn, REVISION)?.unwrap_or(0);
        let next_lease_id = read_meta_in(txn, NEXT_LEASE_ID)?.unwrap_or(FIRST_LEASE_ID);
        Ok(Machine {
            kv: txn.open_table(KV)?,
            leases: txn.open_table(LEASES)?,
            idx_expires: txn.open_table(IDX_EXPIRES)?,
            idx_lease: txn.open_table(IDX_LEASE)?,
            idx_lease_deadline: txn.open_table(IDX_LEASE_DEADLINE)?,
            revision,
            next_lease_id,
        })
    }

    /// Sets the counters, as when installing a snapshot.
    pub(crate) fn set_counters(&mut self, revision: u64, next_lease_id: u64) {
        self.revision = revision;
        self.next_lease_id = next_lease_id;
    }

    pub(crate) fn save_meta(&self, txn: &WriteTransaction) -> Result<()> {
        write_meta(txn, REVISION, &self.revision)?;
        write_meta(txn, NEXT_LEASE_ID, &self.next_lease_id)
    }

    fn no_output(&self) -> Response {
        Response {
            revision: self.revision,
            result: Ok(Output::None),
        }
    }

    /// Applies one request. `Err` is a storage failure; a refused command is an `Ok` response
    /// carrying the `CommandError`.
    pub(crate) fn apply_request(&mut self, request: &Request) -> Result<Response> {
        let mut ctx = Ctx {
            now_ms: request.now_ms,
            stamp: self.revision + 1,
            changed: false,
        };
        let result = match request.command.validate() {
            Ok(()) => self.execute(&mut ctx, &request.command)?,
            Err(refused) => Err(refused),
        };
        if ctx.changed {
            assert!(result.is_ok(), "a refused command must not change state");
            self.revision = ctx.stamp;
        }
        Ok(Response {
            revision: self.revision,
            result,
        })
    }

    fn execute(
        &mut self,
        ctx: &mut Ctx,
        command: &Command,
    ) -> Result<Result<Output, CommandError>> {
        Ok(Ok(match command {
            Command::Put(put) => {
                if let Err(refused) = self.check_put_lease(ctx, put)? {
                    return Ok(Err(refused));
                }
                self.put_op(ctx, put)?
            }
            Command::Delete { key, prev_kv } => self.delete_op(ctx, key, *prev_kv)?,
            Command::DeleteRange(range) => self.delete_range_op(ctx, range)?,
            Command::Txn(txn) => return self.txn(ctx, txn),
            Command::LeaseGrant { id, ttl_ms } => return self.lease_grant(ctx, *id, *ttl_ms),
            Command::LeaseRevoke { id } => match self.lease_revoke(ctx, *id)? {
                Some(keys_deleted) => Output::LeaseRevoke { keys_deleted },
                None => return Ok(Err(CommandError::LeaseNotFound { id: *id })),
            },
            Command::LeaseKeepAlive { id } => return self.lease_keep_alive(ctx, *id),
            Command::Expire { keys, leases } => self.expire(ctx, keys, leases)?,
        }))
    }

    // ---- keys ----

    fn get_raw(&self, key: &[u8]) -> Result<Option<KvEntry>> {
        match self.kv.get(key)? {
            Some(bytes) => Ok(Some(decode_kv_entry(key, bytes.value())?)),
            None => Ok(None),
        }
    }

    fn get_live(&self, ctx: &Ctx, key: &[u8]) -> Result<Option<KvEntry>> {
        Ok(self.get_raw(key)?.filter(|entry| entry.is_live(ctx.now_ms)))
    }

    fn check_put_lease(&self, ctx: &Ctx, put: &Put) -> Result<Result<(), CommandError>> {
        match put.lease {
            Some(id) if self.get_live_lease(ctx, id)?.is_none() => {
                Ok(Err(CommandError::LeaseNotFound { id }))
            }
            _ => Ok(Ok(())),
        }
    }

    /// Writes a put; the lease was checked by the caller. Returns the live entry it replaced
    /// when the put asked for it.
    fn put(&mut self, ctx: &mut Ctx, put: &Put) -> Result<Option<KeyValue>> {
        let old = self.get_raw(&put.key)?;
        if let Some(old) = &old {
            self.unindex(&put.key, old)?;
        }
        let live_old = old.filter(|entry| entry.is_live(ctx.now_ms));
        let entry = KvEntry {
            value: put.value.clone(),
            version: live_old.as_ref().map_or(1, |old| old.version + 1),
            create_revision: live_old
                .as_ref()
                .map_or(ctx.stamp, |old| old.create_revision),
            mod_revision: ctx.stamp,
            lease: put.lease,
            expires_at_ms: put.ttl_ms.map(|ttl| ctx.now_ms.saturating_add(ttl)),
        };
        let bytes = postcard::to_allocvec(&entry).map_err(|e| Error::corrupt("kv entry", e))?;
        self.kv.insert(put.key.as_slice(), bytes.as_slice())?;
        self.index(&put.key, &entry)?;
        ctx.changed = true;
        Ok(live_old
            .filter(|_| put.prev_kv)
            .map(|old| old.into_key_value(put.key.clone())))
    }

    fn put_op(&mut self, ctx: &mut Ctx, put: &Put) -> Result<Output> {
        Ok(Output::Put {
            prev: self.put(ctx, put)?,
        })
    }

    fn delete_op(&mut self, ctx: &mut Ctx, key: &[u8], prev_kv: bool) -> Result<Output> {
        let prev = self.delete(ctx, key)?;
        Ok(Output::Delete {
            deleted: u64::from(prev.is_some()),
            prev: prev.filter(|_| prev_kv),
        })
    }

    fn delete_range_op(&mut self, ctx: &mut Ctx, range: &KeyRange) -> Result<Output> {
        Ok(Output::DeleteRange {
            deleted: self.delete_range(ctx, range)?,
        })
    }

    /// Removes a key with its index rows; returns what was stored, live or not.
    fn remove(&mut self, key: &[u8]) -> Result<Option<KvEntry>> {
        let removed = match self.kv.remove(key)? {
            Some(bytes) => Some(decode_kv_entry(key, bytes.value())?),
            None => None,
        };
        if let Some(entry) = &removed {
            self.unindex(key, entry)?;
        }
        Ok(removed)
    }

    /// Deletes a key; returns it if it was live (an expired key is removed silently).
    fn delete(&mut self, ctx: &mut Ctx, key: &[u8]) -> Result<Option<KeyValue>> {
        let live = self
            .remove(key)?
            .filter(|entry| entry.is_live(ctx.now_ms))
            .map(|entry| entry.into_key_value(key.to_vec()));
        ctx.changed |= live.is_some();
        Ok(live)
    }

    /// Deletes every key in the range, a bounded chunk at a time; returns the live count.
    fn delete_range(&mut self, ctx: &mut Ctx, range: &KeyRange) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let chunk = self.keys_in(range, DELETE_CHUNK_ENTRIES_MAX)?;
            for key in &chunk {
                if self.delete(ctx, key)?.is_some() {
                    deleted += 1;
                }
            }
            if chunk.len() < DELETE_CHUNK_ENTRIES_MAX {
                return Ok(deleted);
            }
        }
    }

    fn keys_in(&self, range: &KeyRange, max: usize) -> Result<Vec<Vec<u8>>> {
        let iter = match &range.end {
            Some(end) => self.kv.range(range.start.as_slice()..end.as_slice())?,
            None => self.kv.range(range.start.as_slice()..)?,
        };
        let mut keys = Vec::new();
        for item in iter.take(max) {
            keys.push(item?.0.value().to_vec());
        }
        Ok(keys)
    }

    fn index(&mut self, key: &[u8], entry: &KvEntry) -> Result<()> {
        if let Some(at) = entry.expires_at_ms {
            self.idx_expires.insert((at, key), ())?;
        }
        if let Some(lease) = entry.lease {
            self.idx_lease.insert((lease, key), ())?;
        }
        Ok(())
    }

    fn unindex(&mut self, key: &[u8], entry: &KvEntry) -> Result<()> {
        if let Some(at) = entry.expires_at_ms {
            let removed = self.idx_expires.remove((at, key))?.is_some();
            assert!(removed, "idx_expires lacks the row of a key with a ttl");
        }
        if let Some(lease) = entry.lease {
            let removed = self.idx_lease.remove((lease, key))?.is_some();
            assert!(removed, "idx_lease lacks the row of a key with a lease");
        }
        Ok(())
    }

    // ---- transactions ----

    fn txn(&mut self, ctx: &mut Ctx, txn: &Txn) -> Result<Result<Output, CommandError>> {
        let mut succeeded = true;
        for compare in &txn.compares {
            if !self.compare_holds(ctx, compare)? {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in branch {
            if let TxnOp::Put(put) = op
                && let Err(refused) = self.check_put_lease(ctx, put)?
            {
                return Ok(Err(refused));
            }
        }
        let mut results = Vec::with_capacity(branch.len());
        for op in branch {
            results.push(match op {
                TxnOp::Put(put) => self.put_op(ctx, put)?,
                TxnOp::Delete { key, prev_kv } => self.delete_op(ctx, key, *prev_kv)?,
                TxnOp::DeleteRange(range) => self.delete_range_op(ctx, range)?,
                TxnOp::Get { key } => Output::Get {
                    kv: self
                        .get_live(ctx, key)?
                        .map(|entry| entry.into_key_value(key.clone())),
                },
            });
        }
        Ok(Ok(Output::Txn { succeeded, results }))
    }

    fn compare_holds(&self, ctx: &Ctx, compare: &Compare) -> Result<bool> {
        let entry = self.get_live(ctx, &compare.key)?;
        Ok(compare_entry(entry.as_ref(), compare.op, &compare.target))
    }

    // ---- leases ----

    fn get_lease(&self, id: u64) -> Result<Option<LeaseRecord>> {
        match self.leases.get(id)? {
            Some(bytes) => Ok(Some(decode_lease(id, bytes.value())?)),
            None => Ok(None),
        }
    }

    fn get_live_lease(&self, ctx: &Ctx, id: u64) -> Result<Option<LeaseRecord>> {
        Ok(self
            .get_lease(id)?
            .filter(|lease| lease.is_live(ctx.now_ms)))
    }

    fn write_lease(&mut self, id: u64, lease: &LeaseRecord) -> Result<()> {
        let bytes = postcard::to_allocvec(lease).map_err(|e| Error::corrupt("lease", e))?;
        self.leases.insert(id, bytes.as_slice())?;
        self.idx_lease_deadline
            .insert((lease.deadline_ms, id), ())?;
        Ok(())
    }

    fn lease_grant(
        &mut self,
        ctx: &Ctx,
        id: u64,
        ttl_ms: u64,
    ) -> Result<Result<Output, CommandError>> {
        let id = if id == 0 {
            self.next_free_lease_id()?
        } else {
            id
        };
        if self.get_lease(id)?.is_some() {
            return Ok(Err(CommandError::LeaseExists { id }));
        }
        let lease = LeaseRecord {
            ttl_ms,
            granted_at_ms: ctx.now_ms,
            deadline_ms: ctx.now_ms.saturating_add(ttl_ms),
        };
        self.write_lease(id, &lease)?;
        self.next_lease_id = self.next_lease_id.max(id.saturating_add(1));
        Ok(Ok(Output::Lease {
            id,
            ttl_ms,
            deadline_ms: lease.deadline_ms,
        }))
    }

    fn next_free_lease_id(&mut self) -> Result<u64> {
        while self.get_lease(self.next_lease_id)?.is_some() {
            self.next_lease_id += 1;
        }
        Ok(self.next_lease_id)
    }

    fn lease_keep_alive(&mut self, ctx: &Ctx, id: u64) -> Result<Result<Output, CommandError>> {
        let Some(mut lease) = self.get_live_lease(ctx, id)? else {
            return Ok(Err(CommandError::LeaseNotFound { id }));
        };
        self.idx_lease_deadline.remove((lease.deadline_ms, id))?;
        lease.deadline_ms = ctx.now_ms.saturating_add(lease.ttl_ms);
        self.write_lease(id, &lease)?;
        Ok(Ok(Output::Lease {
            id,
            ttl_ms: lease.ttl_ms,
            deadline_ms: lease.deadline_ms,
        }))
    }

    /// Removes a lease and every key attached to it; `None` when there is no such lease.
    fn lease_revoke(&mut self, ctx: &mut Ctx, id: u64) -> Result<Option<u64>> {
        let Some(lease) = self.get_lease(id)? else {
            return Ok(None);
        };
        let mut deleted = 0;
        loop {
            let keys = lease_keys_in(&self.idx_lease, id, DELETE_CHUNK_ENTRIES_MAX)?;
            for key in &keys {
                if self.delete(ctx, key)?.is_some() {
                    deleted += 1;
                }
            }
            if keys.len() < DELETE_CHUNK_ENTRIES_MAX {
                break;
            }
        }
        self.leases.remove(id)?;
        self.idx_lease_deadline.remove((lease.deadline_ms, id))?;
        Ok(Some(deleted))
    }

    fn expire(&mut self, ctx: &mut Ctx, keys: &[Vec<u8>], leases: &[u64]) -> Result<Output> {
        let mut keys_deleted = 0;
        for key in keys {
            let expired = self
                .get_raw(key)?
                .is_some_and(|entry| !entry.is_live(ctx.now_ms));
            if expired {
                self.remove(key)?;
                keys_deleted += 1;
            }
        }
        let mut leases_revoked = 0;
        for &id in leases {
            let expired = self
                .get_lease(id)?
                .is_some_and(|lease| !lease.is_live(ctx.now_ms));
            if expired && let Some(deleted) = self.lease_revoke(ctx, id)? {
                keys_deleted += deleted;
                leases_revoked += 1;
            }
        }
        ctx.changed |= keys_deleted > 0;
        Ok(Output::Expire {
            keys_deleted,
            leases_revoked,
        })
    }

    // ---- snapshot install ----

    /// Inserts a key's record as read from a snapshot, with its index rows.
    pub(crate) fn restore_key(&mut self, key: &[u8], entry: &KvEntry) -> Result<()> {
        let bytes = postcard::to_allocvec(entry).map_err(|e| Error::corrupt("kv entry", e))?;
        self.kv.insert(key, bytes.as_slice())?;
        self.index(key, entry)
    }

    /// Inserts a lease as read from a snapshot, with its index row.
    pub(crate) fn restore_lease(&mut self, id: u64, lease: &LeaseRecord) -> Result<()> {
        self.write_lease(id, lease)
    }
}

/// Whether `op(actual, target)` holds for a key's live entry (`None`: missing). As in etcd, a
/// value compare against a missing key never holds; the numeric fields of a missing key are 0.
pub fn compare_entry(entry: Option<&KvEntry>, op: CompareOp, target: &CompareTarget) -> bool {
    use std::cmp::Ordering;
    let ordering: Ordering = match target {
        CompareTarget::Value(expected) => match entry {
            Some(entry) => entry.value.as_slice().cmp(expected.as_slice()),
            None => return false,
        },
        CompareTarget::Version(expected) => entry.map_or(0, |e| e.version).cmp(expected),
        CompareTarget::CreateRevision(expected) => {
            entry.map_or(0, |e| e.create_revision).cmp(expected)
        }
        CompareTarget::ModRevision(expected) => entry.map_or(0, |e| e.mod_revision).cmp(expected),
        CompareTarget::Exists(expected) => entry.is_some().cmp(expected),
    };
    match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::Greater => ordering == Ordering::Greater,
    }
}

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

pub(crate) fn decode_lease(id: u64, bytes: &[u8]) -> Result<LeaseRecord> {
    postcard::from_bytes(bytes).map_err(|e| Error::corrupt(format!("lease {id}"), e))
}
