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
//!   `idx_lease` row, every lease exactly one `idx_lease_deadline` row;
//! - every vault (`vault/NAME/...` keys) with stored keys has one `vaults` row whose key count
//!   and bytes are those of its stored keys, changed in the same transaction (a full scan
//!   gives the same figures: `storage::check` compares them).
//!
//! Long because every command's semantics (put, delete, ranges, transactions, leases, expiry,
//! vaults) must run inside one transaction through one `Machine`; split by command they would share
//! its private state through a wide interface.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use openraft::EntryPayload;
use redb::{Durability, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use crate::api::kv::TXN_RANGE_KEYS_MAX;
use crate::api::{
    AuthState, CommandError, Compare, CompareOp, CompareTarget, KeyRange, KeyValue, Output, Put,
    ROOT_ROLE, RangeSort, Txn, TxnOp, VaultMeta, WriteOp, vault_of,
};
use crate::command::{Command, Entry, Request, Response, StoredMembership, VaultLimits};
use crate::limits::{DELETE_CHUNK_ENTRIES_MAX, PAGE_BYTES_MAX};
use crate::storage::codec::{
    decode_kv_entry, decode_lease, decode_vault, read_meta_in, write_meta,
};
use crate::storage::error::{Error, Result};
use crate::storage::history::HistoryWriter;
use crate::storage::reads::lease_keys_in;
use crate::storage::schema::*;
use crate::storage::store::{Store, append_in};
use crate::storage::types::MergedStep;
use crate::storage::types::{KvEntry, LeaseRecord};

/// Lease ids handed out for `LeaseGrant { id: 0 }` start here.
pub(crate) const FIRST_LEASE_ID: u64 = 1;

impl Store {
    /// Applies committed entries in one transaction committed without fsync (a merged write
    /// of one step); returns one response per entry (blank and membership entries included).
    /// The same transaction writes the committed log id (`Store::save_committed` keeps it in
    /// memory until then).
    pub(in crate::storage) fn apply(&self, entries: &[Entry]) -> Result<Vec<Response>> {
        let mut outputs = self.write_merged(&[MergedStep::Apply(entries)])?;
        Ok(outputs.pop().flatten().unwrap_or_default())
    }

    /// Runs `steps` in order in one transaction (fsync'd when it holds an append): what the
    /// StorageActor commits for a run of queued appends and applies. Returns each apply's
    /// responses (`None` for the other steps). A hash check (`Command::HashCheck`) ends a
    /// transaction: what precedes it commits, the state it leaves is hashed (`hashkv`), and
    /// the rest follows in the next. Each transaction commits whole or not at all. On an
    /// error, what an earlier transaction of the run committed stays committed (the in-memory
    /// log tail and auth cache follow each commit, so they match the file): the caller treats
    /// the error as a storage failure, and recovery reads the file.
    pub(in crate::storage) fn write_merged(
        &self,
        steps: &[MergedStep<'_>],
    ) -> Result<Vec<Option<Vec<Response>>>> {
        let published = steps
            .iter()
            .any(|s| matches!(s, MergedStep::AppendPublished(_)));
        let written = self.write_merged_steps(steps);
        if let Err(error) = &written
            && published
        {
            self.lose_published(&format!("their commit failed: {error}"));
        }
        written
    }

    fn write_merged_steps(&self, steps: &[MergedStep<'_>]) -> Result<Vec<Option<Vec<Response>>>> {
        // Nothing is appended or applied while a published append is lost: openraft believes
        // entries durable that the file does not hold (`published.rs`).
        self.refuse_if_published_lost()?;
        // A transaction begun at step `i` is fsync'd when a step from `i` on appends (it may
        // hold that append; one that ends at a hash check before it syncs once too many).
        let durability = |i: usize| {
            let appends = steps[i..]
                .iter()
                .any(|s| matches!(s, MergedStep::Append(_) | MergedStep::AppendPublished(_)));
            if appends {
                Durability::Immediate
            } else {
                Durability::None
            }
        };
        let mut outputs: Vec<Option<Vec<Response>>> = Vec::with_capacity(steps.len());
        // Begun when a step needs it: after a hash check, the next one begins only once the
        // check's commit is done (redb runs one write transaction at a time).
        let mut open: Option<Open<'_>> = None;
        for (i, step) in steps.iter().enumerate() {
            outputs.push(match step {
                MergedStep::Append(entries) => {
                    let current = Open::current(&mut open, self, || durability(i))?;
                    append_in(&current.txn, entries)?;
                    current.appended.push(entries);
                    None
                }
                MergedStep::AppendPublished(entries) => {
                    let current = Open::current(&mut open, self, || durability(i))?;
                    append_in(&current.txn, entries)?;
                    current.published += entries.len();
                    None
                }
                MergedStep::Apply(entries) => {
                    let mut responses = Vec::with_capacity(entries.len());
                    for part in entries.split_inclusive(|entry| hash_check(entry).is_some()) {
                        let current = Open::current(&mut open, self, || durability(i))?;
                        let applied = apply_in(&current.txn, part)?;
                        current.auth_changed |= applied.auth_changed;
                        current.applies = true;
                        // Raised before the commit: readers never judge expiry before an
                        // instant the state they read was applied at (time only moves on, so
                        // a failed commit leaves it merely early).
                        self.raise_clock(applied.clock_ms);
                        let last = part.last().map(|entry| entry.log_id);
                        self.write_committed(&current.txn, last)?;
                        if let Some(key) = self.faults.take_damage() {
                            damage_in(&current.txn, &key)?;
                        }
                        responses.extend(applied.responses);
                        if let Some((check, proposed_ms)) = part.last().and_then(hash_check)
                            && let Some(done) = open.take()
                        {
                            done.commit(self)?;
                            self.start_hash_check(check, proposed_ms);
                        }
                    }
                    Some(responses)
                }
            });
        }
        if let Some(done) = open {
            done.commit(self)?;
        }
        Ok(outputs)
    }
}

/// One transaction of a merged write, and what its commit changes in memory.
struct Open<'s> {
    txn: WriteTransaction,
    /// Appended entries, which join the in-memory tail once committed.
    appended: Vec<&'s [Entry]>,
    /// How many published entries this transaction appends (unpinned once committed).
    published: usize,
    auth_changed: bool,
    /// Whether it applies entries.
    applies: bool,
}

impl<'s> Open<'s> {
    /// The transaction in `open`, begun now if there is none.
    fn current<'o>(
        open: &'o mut Option<Open<'s>>,
        store: &Store,
        durability: impl FnOnce() -> Durability,
    ) -> Result<&'o mut Open<'s>> {
        if open.is_none() {
            *open = Some(Open {
                txn: store.begin_write(durability())?,
                appended: Vec::new(),
                published: 0,
                auth_changed: false,
                applies: false,
            });
        }
        Ok(open.as_mut().expect("begun above"))
    }

    fn commit(self, store: &Store) -> Result<()> {
        self.txn.commit()?;
        if self.auth_changed {
            store.auth_changed();
        }
        if self.applies {
            store.state_changed();
        }
        // Committed: the appended entries join the in-memory tail, in order.
        let mut tail = crate::sync::lock(&store.tail);
        for entries in self.appended {
            tail.extend(entries);
        }
        drop(tail);
        if self.published > 0 {
            store.published_committed(self.published);
        }
        Ok(())
    }
}

/// The check id of a hash check entry, and when the leader proposed it.
fn hash_check(entry: &Entry) -> Option<(u64, u64)> {
    match &entry.payload {
        EntryPayload::Normal(Request {
            command: Command::HashCheck { check },
            now_ms,
        }) => Some((*check, *now_ms)),
        _ => None,
    }
}

/// Flips the bits of the first byte of `key`'s stored value (or gives an empty value one
/// byte): the replica damage `fault::StorageFaults::damage_value` arms. Nothing else changes.
fn damage_in(txn: &WriteTransaction, key: &[u8]) -> Result<()> {
    let mut kv = txn.open_table(KV)?;
    let stored = kv
        .get(key)?
        .map(|bytes| decode_kv_entry(key, bytes.value()));
    let Some(mut entry) = stored.transpose()? else {
        return Ok(());
    };
    match entry.value.first_mut() {
        Some(byte) => *byte = !*byte,
        None => entry.value.push(0),
    }
    let bytes = postcard::to_allocvec(&entry).map_err(|e| Error::corrupt("kv entry", e))?;
    kv.insert(key, bytes.as_slice())?;
    tracing::warn!(key = %String::from_utf8_lossy(key), "fault: damaged this replica's value");
    Ok(())
}

/// What one apply step did.
struct Applied {
    responses: Vec<Response>,
    auth_changed: bool,
    /// The state machine's clock after it.
    clock_ms: u64,
}

fn apply_in(txn: &WriteTransaction, entries: &[Entry]) -> Result<Applied> {
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
    let (auth_changed, clock_ms) = (machine.auth.is_some(), machine.clock_ms);
    drop(machine);
    if let Some(last_applied) = last_applied {
        write_meta(txn, LAST_APPLIED, &last_applied)?;
    }
    if let Some(membership) = membership {
        write_meta(txn, MEMBERSHIP, &membership)?;
    }
    Ok(Applied {
        responses,
        auth_changed,
        clock_ms,
    })
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
    vaults: Table<'txn, &'static [u8], &'static [u8]>,
    vault_limits: VaultLimits,
    /// Vaults whose key count reached 0 during the current command: removed at its end if
    /// still empty (a transaction that deletes and re-puts a vault's only key keeps the vault).
    emptied_vaults: BTreeSet<Vec<u8>>,
    revision: u64,
    next_lease_id: u64,
    txn: &'txn WriteTransaction,
    /// The auth state once a command changed it (written by `save_meta`).
    auth: Option<AuthState>,
    /// The largest `now_ms` applied: a command stamped before it runs at it instead.
    clock_ms: u64,
    /// Every change readers see, recorded under its revision.
    history: HistoryWriter<'txn>,
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
            vaults: txn.open_table(VAULTS)?,
            vault_limits: read_meta_in(txn, VAULT_LIMITS)?.unwrap_or_default(),
            emptied_vaults: BTreeSet::new(),
            revision,
            next_lease_id,
            txn,
            auth: None,
            clock_ms: read_meta_in(txn, CLOCK)?.unwrap_or(0),
            history: HistoryWriter::open(txn)?,
        })
    }

    /// Sets the counters, as when installing a snapshot.
    pub(crate) fn set_counters(&mut self, revision: u64, next_lease_id: u64) {
        self.revision = revision;
        self.next_lease_id = next_lease_id;
        // A state loaded from a file without history has its history start here.
        self.history.start_unless_restored(revision);
    }

    pub(crate) fn save_meta(&self, txn: &WriteTransaction) -> Result<()> {
        write_meta(txn, REVISION, &self.revision)?;
        write_meta(txn, NEXT_LEASE_ID, &self.next_lease_id)?;
        write_meta(txn, CLOCK, &self.clock_ms)?;
        self.history.save(txn)?;
        if let Some(auth) = &self.auth {
            write_meta(txn, AUTH, auth)?;
        }
        write_meta(txn, VAULT_LIMITS, &self.vault_limits)
    }

    fn no_output(&self) -> Response {
        Response {
            revision: self.revision,
            result: Ok(Output::None),
            batch: Vec::new(),
        }
    }

    /// Applies one request (a batch: each of its writes in order, each answered on its own).
    /// `Err` is a storage failure; a refused command is an `Ok` response carrying the
    /// `CommandError`.
    pub(crate) fn apply_request(&mut self, request: &Request) -> Result<Response> {
        let Command::Batch(items) = &request.command else {
            return self.apply_one(request.now_ms, request.command.validate(), |sm, ctx| {
                sm.execute(ctx, &request.command)
            });
        };
        if let Err(refused) = request.command.validate() {
            return Ok(Response {
                revision: self.revision,
                result: Err(refused),
                batch: Vec::new(),
            });
        }
        let batch = items
            .iter()
            .map(|item| {
                self.apply_one(item.now_ms, item.op.validate(), |sm, ctx| {
                    sm.execute_write(ctx, &item.op)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Response {
            revision: self.revision,
            result: Ok(Output::None),
            batch,
        })
    }

    /// Applies one command that is not a batch (a batch holds client writes only): `run`
    /// executes it once `checked` (its validation) passed.
    fn apply_one(
        &mut self,
        now_ms: u64,
        checked: std::result::Result<(), CommandError>,
        run: impl FnOnce(&mut Self, &mut Ctx) -> Result<Result<Output, CommandError>>,
    ) -> Result<Response> {
        // Time never goes back: a leader whose clock is behind the last applied command's
        // (a new leader, a clock set back) runs at the later instant, so nothing expired
        // comes back.
        let now_ms = now_ms.max(self.clock_ms);
        self.clock_ms = now_ms;
        // At the last revision nothing can change any more: every command is refused.
        let Some(stamp) = self.revision.checked_add(1) else {
            return Ok(Response {
                revision: self.revision,
                result: Err(CommandError::Exhausted {
                    what: format!("the revision is at its maximum ({})", self.revision),
                }),
                batch: Vec::new(),
            });
        };
        let mut ctx = Ctx {
            now_ms,
            stamp,
            changed: false,
        };
        let result = match checked {
            Ok(()) => run(self, &mut ctx)?,
            Err(refused) => Err(refused),
        };
        for name in std::mem::take(&mut self.emptied_vaults) {
            if self
                .vault_meta(&name)?
                .is_some_and(|meta| meta.key_count == 0)
            {
                self.vaults.remove(name.as_slice())?;
            }
        }
        if ctx.changed {
            assert!(result.is_ok(), "a refused command must not change state");
            self.revision = ctx.stamp;
        }
        Ok(Response {
            revision: self.revision,
            result,
            batch: Vec::new(),
        })
    }

    fn execute(
        &mut self,
        ctx: &mut Ctx,
        command: &Command,
    ) -> Result<Result<Output, CommandError>> {
        Ok(Ok(match command {
            Command::Write(op) => return self.execute_write(ctx, op),
            Command::Expire { keys, leases } => self.expire(ctx, keys, leases)?,
            Command::SetVaultLimits(limits) => {
                self.vault_limits = *limits;
                Output::None
            }
            Command::Batch(_) => unreachable!("apply_request takes batches apart"),
            Command::Auth(op) => {
                let mut auth = self.auth_state()?;
                if let Err(refused) = auth.apply(op) {
                    return Ok(Err(CommandError::Auth(refused.to_string())));
                }
                self.auth = Some(auth);
                Output::None
            }
            Command::RenewLeases => {
                self.renew_leases(ctx)?;
                Output::None
            }
            // Changes nothing: `write_merged` hashes the state it leaves.
            Command::HashCheck { .. } => Output::None,
            Command::AuthBootstrap { roots } => {
                let mut auth = self.auth_state()?;
                if !auth.has_root() {
                    for root in roots {
                        auth.clients
                            .entry(*root)
                            .or_default()
                            .insert(ROOT_ROLE.to_string());
                    }
                    self.auth = Some(auth);
                }
                Output::None
            }
        }))
    }

    /// The auth state as this transaction sees it.
    fn auth_state(&self) -> Result<AuthState> {
        match &self.auth {
            Some(auth) => Ok(auth.clone()),
            None => Ok(read_meta_in(self.txn, AUTH)?.unwrap_or_default()),
        }
    }

    fn execute_write(
        &mut self,
        ctx: &mut Ctx,
        op: &WriteOp,
    ) -> Result<Result<Output, CommandError>> {
        Ok(Ok(match op {
            WriteOp::Put(put) => {
                if let Err(refused) = self.check_put_lease(ctx, put)? {
                    return Ok(Err(refused));
                }
                if let Err(refused) = self.check_vault_room([put])? {
                    return Ok(Err(refused));
                }
                self.put_op(ctx, put)?
            }
            WriteOp::Delete { key, prev_kv } => self.delete_op(ctx, key, *prev_kv)?,
            WriteOp::DeleteRange(range) => self.delete_range_op(ctx, range)?,
            WriteOp::Txn(txn) => return self.txn(ctx, txn),
            WriteOp::LeaseGrant { id, ttl_ms } => return self.lease_grant(ctx, *id, *ttl_ms),
            WriteOp::LeaseRevoke { id } => match self.lease_revoke(ctx, *id)? {
                Some(keys_deleted) => Output::LeaseRevoke { keys_deleted },
                None => return Ok(Err(CommandError::LeaseNotFound { id: *id })),
            },
            WriteOp::LeaseKeepAlive { id } => return self.lease_keep_alive(ctx, *id),
            WriteOp::Compact { revision } => {
                if let Err(refused) = self.history.compact(*revision, self.revision)? {
                    return Ok(Err(refused));
                }
                Output::None
            }
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
        let old_value_len = old.as_ref().map(|old| old.value.len() as u64);
        if let Some(old) = &old {
            self.unindex(&put.key, old)?;
        }
        let live_old = old.filter(|entry| entry.is_live(ctx.now_ms));
        let entry = KvEntry {
            value: put.value.clone(),
            // 2^64 writes to one key cannot happen; a restored record could claim it.
            version: live_old
                .as_ref()
                .map_or(1, |old| old.version.saturating_add(1)),
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
        self.history
            .record(ctx.stamp, &put.key, Some(&entry), live_old.as_ref())?;
        let key_len = put.key.len() as u64;
        let old_bytes = old_value_len.map(|len| key_len + len);
        self.vault_account(
            &put.key,
            old_bytes,
            Some(key_len + entry.value.len() as u64),
            Some(ctx.stamp),
        )?;
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

    /// Removes a key with its index rows and its vault's share; returns what was stored, live
    /// or not. `visible(entry)` tells whether readers see the removal (a new revision), which
    /// then becomes the vault's `updated_revision`.
    fn remove(
        &mut self,
        ctx: &Ctx,
        key: &[u8],
        visible: impl Fn(&KvEntry) -> bool,
    ) -> Result<Option<KvEntry>> {
        let removed = match self.kv.remove(key)? {
            Some(bytes) => Some(decode_kv_entry(key, bytes.value())?),
            None => None,
        };
        if let Some(entry) = &removed {
            self.unindex(key, entry)?;
            let bytes = (key.len() + entry.value.len()) as u64;
            let stamp = visible(entry).then_some(ctx.stamp);
            self.vault_account(key, Some(bytes), None, stamp)?;
            if let Some(stamp) = stamp {
                self.history.record(stamp, key, None, Some(entry))?;
            }
        }
        Ok(removed)
    }

    /// Deletes a key; returns it if it was live (an expired key is removed silently).
    fn delete(&mut self, ctx: &mut Ctx, key: &[u8]) -> Result<Option<KeyValue>> {
        let now_ms = ctx.now_ms;
        let live = self
            .remove(ctx, key, |entry| entry.is_live(now_ms))?
            .filter(|entry| entry.is_live(now_ms))
            .map(|entry| entry.into_key_value(key.to_vec()));
        ctx.changed |= live.is_some();
        Ok(live)
    }

    /// Deletes every key in the range, a bounded chunk at a time; returns the live count.
    fn delete_range(&mut self, ctx: &mut Ctx, range: &KeyRange) -> Result<u64> {
        let mut deleted = 0;
        self.delete_range_with(ctx, range, |_| deleted += 1)?;
        Ok(deleted)
    }

    /// Deletes every key in the range, a bounded chunk at a time, handing each live entry it
    /// deleted to `each`, in key order.
    fn delete_range_with(
        &mut self,
        ctx: &mut Ctx,
        range: &KeyRange,
        mut each: impl FnMut(KeyValue),
    ) -> Result<()> {
        loop {
            let chunk = self.keys_in(range, DELETE_CHUNK_ENTRIES_MAX)?;
            for key in &chunk {
                if let Some(kv) = self.delete(ctx, key)? {
                    each(kv);
                }
            }
            if chunk.len() < DELETE_CHUNK_ENTRIES_MAX {
                return Ok(());
            }
        }
    }

    /// The stored entries of `range`, live or not, in key order.
    fn kv_range(&self, range: &KeyRange) -> Result<redb::Range<'_, &'static [u8], &'static [u8]>> {
        Ok(match &range.end {
            Some(end) => self.kv.range(range.start.as_slice()..end.as_slice())?,
            None => self.kv.range(range.start.as_slice()..)?,
        })
    }

    /// The live entries of `range` at `now_ms`, in key order.
    fn live_entries(
        &self,
        now_ms: u64,
        range: &KeyRange,
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, KvEntry)>> + '_> {
        Ok(self.kv_range(range)?.filter_map(move |item| {
            let entry = item.map_err(Error::from).and_then(|(key, value)| {
                let entry = decode_kv_entry(key.value(), value.value())?;
                Ok(entry.is_live(now_ms).then(|| (key.value().to_vec(), entry)))
            });
            entry.transpose()
        }))
    }

    fn keys_in(&self, range: &KeyRange, max: usize) -> Result<Vec<Vec<u8>>> {
        let iter = self.kv_range(range)?;
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

    // ---- vaults ----

    fn vault_meta(&self, name: &[u8]) -> Result<Option<VaultMeta>> {
        match self.vaults.get(name)? {
            Some(bytes) => Ok(Some(decode_vault(name, bytes.value())?)),
            None => Ok(None),
        }
    }

    fn write_vault(&mut self, name: &[u8], meta: &VaultMeta) -> Result<()> {
        let bytes = postcard::to_allocvec(meta).map_err(|e| Error::corrupt("vault", e))?;
        self.vaults.insert(name, bytes.as_slice())?;
        Ok(())
    }

    /// Moves `key`'s vault (if it is in one) from `old` to `new` stored bytes (key + value;
    /// `None`: the key was / is not stored). `stamp`: the revision the change is visible at,
    /// if readers see it. A vault left without keys is removed at the end of the command.
    fn vault_account(
        &mut self,
        key: &[u8],
        old: Option<u64>,
        new: Option<u64>,
        stamp: Option<u64>,
    ) -> Result<()> {
        let Some(name) = vault_of(key) else {
            return Ok(());
        };
        let mut meta = self.vault_meta(name)?.unwrap_or(VaultMeta {
            created_revision: stamp.unwrap_or(self.revision),
            ..VaultMeta::default()
        });
        let counted = |bytes: Option<u64>| (u64::from(bytes.is_some()), bytes.unwrap_or(0));
        let (old_keys, old_bytes) = counted(old);
        let (new_keys, new_bytes) = counted(new);
        // Saturating: metadata that disagrees with the keys (a damaged file) must not stop
        // the state machine; `aspen-node check` reports the difference.
        meta.key_count = meta
            .key_count
            .saturating_add(new_keys)
            .saturating_sub(old_keys);
        meta.total_bytes = meta
            .total_bytes
            .saturating_add(new_bytes)
            .saturating_sub(old_bytes);
        if let Some(stamp) = stamp {
            meta.updated_revision = stamp;
        }
        if meta.key_count == 0 {
            self.emptied_vaults.insert(name.to_vec());
        }
        self.write_vault(name, &meta)
    }

    /// Refuses puts that would create a vault past `vaults_max` or a key past a vault's
    /// `keys_per_vault_max`, counting every new key of the command (a transaction's deletes do
    /// not make room for its own puts). Checked before anything is written.
    fn check_vault_room<'a>(
        &self,
        puts: impl IntoIterator<Item = &'a Put>,
    ) -> Result<Result<(), CommandError>> {
        let limits = self.vault_limits;
        let mut new_keys: BTreeMap<&[u8], u64> = BTreeMap::new();
        let mut seen: BTreeSet<&[u8]> = BTreeSet::new();
        let mut vaults = self.vaults.len()?;
        for put in puts {
            let Some(name) = vault_of(&put.key) else {
                continue;
            };
            if !seen.insert(&put.key) || self.kv.get(put.key.as_slice())?.is_some() {
                continue;
            }
            let stored = self.vault_meta(name)?.map_or(0, |meta| meta.key_count);
            let added = new_keys.entry(name).or_insert(0);
            let vault = || String::from_utf8_lossy(name).into_owned();
            if stored == 0 && *added == 0 {
                if vaults >= limits.vaults_max {
                    return Ok(Err(CommandError::TooManyVaults {
                        vault: vault(),
                        max: limits.vaults_max,
                    }));
                }
                vaults += 1;
            }
            *added += 1;
            if stored + *added > limits.keys_per_vault_max {
                return Ok(Err(CommandError::VaultFull {
                    vault: vault(),
                    max: limits.keys_per_vault_max,
                }));
            }
        }
        Ok(Ok(()))
    }

    // ---- transactions ----

    /// Runs a transaction. Every branch, nested transactions' included, is decided on the state
    /// before it runs (as etcd decides them); what could refuse it is checked before anything
    /// is written: the leases of its puts, the vaults' room, the size of range deletes that
    /// answer their entries.
    fn txn(&mut self, ctx: &mut Ctx, txn: &Txn) -> Result<Result<Output, CommandError>> {
        let decided = self.decide(ctx, txn)?;
        let (mut puts, mut answered_deletes) = (Vec::new(), Vec::new());
        chosen_ops(txn, &decided, &mut puts, &mut answered_deletes);
        for put in &puts {
            if let Err(refused) = self.check_put_lease(ctx, put)? {
                return Ok(Err(refused));
            }
        }
        if let Err(refused) = self.check_vault_room(puts.iter().copied())? {
            return Ok(Err(refused));
        }
        for range in answered_deletes {
            // The transaction's puts into the range may add keys before the delete runs.
            let (mut keys, mut bytes) = self.live_in(ctx, range, TXN_RANGE_KEYS_MAX + 1)?;
            for put in puts.iter().filter(|p| range.contains(&p.key)) {
                keys += 1;
                bytes += (put.key.len() + put.value.len()) as u64;
            }
            if keys > TXN_RANGE_KEYS_MAX as u64 || bytes > PAGE_BYTES_MAX as u64 {
                return Ok(Err(CommandError::TxnDeleteTooLarge {
                    keys,
                    max: TXN_RANGE_KEYS_MAX as u64,
                }));
            }
        }
        Ok(Ok(self.run_branch(ctx, txn, &decided)?))
    }

    /// Which branch of `txn` runs, and of each transaction nested in that branch.
    fn decide(&self, ctx: &Ctx, txn: &Txn) -> Result<Decided> {
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
        let mut nested = Vec::new();
        for op in branch {
            if let TxnOp::Txn(inner) = op {
                nested.push(self.decide(ctx, inner)?);
            }
        }
        Ok(Decided { succeeded, nested })
    }

    fn run_branch(&mut self, ctx: &mut Ctx, txn: &Txn, decided: &Decided) -> Result<Output> {
        let branch = decided.branch(txn);
        let mut nested = decided.nested.iter();
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
                TxnOp::Range {
                    range,
                    limit,
                    keys_only,
                    count_only,
                    sort,
                } => self.range_op(ctx, range, *limit, *keys_only, *count_only, *sort)?,
                TxnOp::DeleteRangePrev(range) => {
                    let mut prev = Vec::new();
                    self.delete_range_with(ctx, range, |kv| prev.push(kv))?;
                    Output::DeleteRangePrev {
                        deleted: prev.len() as u64,
                        prev,
                    }
                }
                TxnOp::Txn(inner) => {
                    let decided = nested.next().expect("every nested transaction was decided");
                    self.run_branch(ctx, inner, decided)?
                }
            });
        }
        Ok(Output::Txn {
            succeeded: decided.succeeded,
            results,
        })
    }

    /// A range read inside a transaction, in `sort`'s order: the first entries in that order,
    /// at most `limit` (0: no limit), [`TXN_RANGE_KEYS_MAX`] and [`PAGE_BYTES_MAX`] of them,
    /// with `more` when live keys were left out; `count` is every live key in the range. Every
    /// live key is visited; the selection holds at most the answer's entries plus two (the one
    /// arriving and the first left out), their values only when keys only were not asked or
    /// the sort is by value (counted towards [`PAGE_BYTES_MAX`] then).
    fn range_op(
        &self,
        ctx: &Ctx,
        range: &KeyRange,
        limit: u32,
        keys_only: bool,
        count_only: bool,
        sort: RangeSort,
    ) -> Result<Output> {
        /// An entry ranked by the sort: the greatest is the one to leave out first.
        struct Ranked(KeyValue, usize, RangeSort);
        impl PartialEq for Ranked {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other).is_eq()
            }
        }
        impl Eq for Ranked {}
        impl PartialOrd for Ranked {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for Ranked {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.2.compare(&self.0, &other.0)
            }
        }
        let max = match limit {
            0 => TXN_RANGE_KEYS_MAX,
            n => (n as usize).min(TXN_RANGE_KEYS_MAX),
        };
        let (mut kept, mut count, mut bytes) = (BinaryHeap::new(), 0u64, 0usize);
        // The first entry, in the sort's order, left out so far: it and every entry after it
        // are out of the answer for good (entries arriving later only push it further down).
        let mut cutoff: Option<Ranked> = None;
        let holds_value = sort.holds_value(keys_only);
        for item in self.live_entries(ctx.now_ms, range)? {
            let (key, entry) = item?;
            count += 1;
            if count_only {
                continue;
            }
            let mut kv = entry.into_key_value(key);
            if !holds_value {
                kv.value = Vec::new();
            }
            let size = kv.key.len() + kv.value.len();
            let ranked = Ranked(kv, size, sort);
            if cutoff.as_ref().is_some_and(|c| ranked > *c) {
                continue;
            }
            bytes += size;
            kept.push(ranked);
            while kept.len() > max || bytes > PAGE_BYTES_MAX {
                let Some(out) = kept.pop() else { break };
                bytes -= out.1;
                if cutoff.as_ref().is_none_or(|c| out < *c) {
                    cutoff = Some(out);
                }
            }
        }
        let kvs: Vec<KeyValue> = kept
            .into_sorted_vec()
            .into_iter()
            .map(|Ranked(mut kv, ..)| {
                if keys_only {
                    kv.value = Vec::new();
                }
                kv
            })
            .collect();
        let more = !count_only && count > kvs.len() as u64;
        Ok(Output::Range { kvs, count, more })
    }

    /// The live keys of `range` and their bytes (keys and values), counting at most `max` keys.
    fn live_in(&self, ctx: &Ctx, range: &KeyRange, max: usize) -> Result<(u64, u64)> {
        let (mut keys, mut bytes) = (0u64, 0u64);
        for item in self.live_entries(ctx.now_ms, range)?.take(max) {
            let (key, entry) = item?;
            keys += 1;
            bytes += (key.len() + entry.value.len()) as u64;
        }
        Ok((keys, bytes))
    }

    fn compare_holds(&self, ctx: &Ctx, compare: &Compare) -> Result<bool> {
        if let CompareTarget::InRange { target, .. } = &compare.target {
            // Every live key in the range must hold it; with none, as a missing key (etcd).
            let mut any = false;
            for item in self.live_entries(ctx.now_ms, &compare.keys())? {
                let (_, entry) = item?;
                any = true;
                if !compare_entry(Some(&entry), compare.op, target) {
                    return Ok(false);
                }
            }
            return Ok(any || compare_entry(None, compare.op, target));
        }
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
            match self.next_free_lease_id()? {
                Some(id) => id,
                None => {
                    return Ok(Err(CommandError::Exhausted {
                        what: "every lease id is taken".into(),
                    }));
                }
            }
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

    /// The first id at or after `next_lease_id` that no stored lease holds; past the largest
    /// id the search starts again at `FIRST_LEASE_ID`. `None` only when every id is taken.
    fn next_free_lease_id(&mut self) -> Result<Option<u64>> {
        for from in [self.next_lease_id, FIRST_LEASE_ID] {
            if let Some(id) = self.first_free_lease_id(from)? {
                self.next_lease_id = id;
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn first_free_lease_id(&self, from: u64) -> Result<Option<u64>> {
        let mut candidate = from;
        for item in self.leases.range(from..)? {
            let (id, _) = item?;
            if id.value() != candidate {
                return Ok(Some(candidate));
            }
            match candidate.checked_add(1) {
                Some(next) => candidate = next,
                None => return Ok(None),
            }
        }
        Ok(Some(candidate))
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

    /// Every lease's deadline becomes at least `now + ttl`.
    fn renew_leases(&mut self, ctx: &Ctx) -> Result<()> {
        let mut renewed = Vec::new();
        for item in self.leases.range::<u64>(..)? {
            let (id, bytes) = item?;
            let id = id.value();
            let lease = decode_lease(id, bytes.value())?;
            let deadline = ctx.now_ms.saturating_add(lease.ttl_ms);
            if deadline > lease.deadline_ms {
                renewed.push((id, lease, deadline));
            }
        }
        for (id, mut lease, deadline) in renewed {
            self.idx_lease_deadline.remove((lease.deadline_ms, id))?;
            lease.deadline_ms = deadline;
            self.write_lease(id, &lease)?;
        }
        Ok(())
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
                // An expiry that deletes keys is a new revision (see below).
                self.remove(ctx, key, |_| true)?;
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

    /// Inserts a vault's metadata as read from a snapshot (keys do not recount it).
    pub(crate) fn restore_vault(&mut self, name: &[u8], meta: &VaultMeta) -> Result<()> {
        self.write_vault(name, meta)
    }

    pub(crate) fn set_vault_limits(&mut self, limits: VaultLimits) {
        self.vault_limits = limits;
    }

    /// The largest `now_ms` applied.
    pub(crate) fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Sets the clock, as read from a snapshot or a backup.
    /// The history bounds as read from a snapshot or backup.
    pub(crate) fn restore_history_bounds(&mut self, bounds: crate::storage::types::HistoryBounds) {
        self.history.restore_bounds(bounds);
    }

    /// A history event as read from a snapshot or backup.
    pub(crate) fn restore_history(
        &mut self,
        revision: u64,
        number: u32,
        event: &crate::storage::types::HistoryEvent,
    ) -> Result<()> {
        self.history.restore(revision, number, event)
    }

    pub(crate) fn set_clock(&mut self, clock_ms: u64) {
        self.clock_ms = self.clock_ms.max(clock_ms);
    }

    /// Sets the auth state, as read from a snapshot or a backup.
    pub(crate) fn set_auth(&mut self, auth: AuthState) {
        self.auth = Some(auth);
    }
}

/// The branch a transaction takes, and those of the transactions nested in that branch (one
/// per `TxnOp::Txn` of it, in order).
struct Decided {
    succeeded: bool,
    nested: Vec<Decided>,
}

impl Decided {
    fn branch<'t>(&self, txn: &'t Txn) -> &'t [TxnOp] {
        match self.succeeded {
            true => &txn.success,
            false => &txn.failure,
        }
    }
}

/// The puts and the answered range deletes a decided transaction will run, nested
/// transactions' included.
fn chosen_ops<'t>(
    txn: &'t Txn,
    decided: &Decided,
    puts: &mut Vec<&'t Put>,
    answered_deletes: &mut Vec<&'t KeyRange>,
) {
    let mut nested = decided.nested.iter();
    for op in decided.branch(txn) {
        match op {
            TxnOp::Put(put) => puts.push(put),
            TxnOp::DeleteRangePrev(range) => answered_deletes.push(range),
            TxnOp::Txn(inner) => {
                if let Some(decided) = nested.next() {
                    chosen_ops(inner, decided, puts, answered_deletes);
                }
            }
            _ => {}
        }
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
        CompareTarget::Lease(expected) => entry.and_then(|e| e.lease).unwrap_or(0).cmp(expected),
        // One entry against a range compare: as against its target.
        CompareTarget::InRange { target, .. } => return compare_entry(entry, op, target),
    };
    match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::Greater => ordering == Ordering::Greater,
    }
}
