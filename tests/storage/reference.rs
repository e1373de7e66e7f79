//! The reference model of the state machine: a plain `BTreeMap` of keys, leases and vault
//! figures, written independently of the store code (it shares only `Command::validate`, the
//! static limits covered by conformance), and a check that runs a command sequence through a
//! store and the model and compares every response and the whole state after each command.
//! Used by the model property test and by the `apply` fuzz target (`fuzz/`).

use std::collections::BTreeMap;

use aspen::api::kv::TXN_RANGE_KEYS_MAX;
use aspen::api::{
    CommandError, Compare, CompareOp, CompareTarget, KeyRange, KeyValue, Output, Put, RangeSort,
    SortBy, Txn, TxnOp, VaultMeta, WriteOp, vault_of,
};
use aspen::command::{Command, Response, VaultLimits};
use aspen::limits::PAGE_BYTES_MAX;
use aspen::storage::{KvEntry, LeaseRecord};

use crate::util::{Driver, Kind, all_keys, open};

#[derive(Debug, Default)]
pub struct Model {
    kv: BTreeMap<Vec<u8>, KvEntry>,
    leases: BTreeMap<u64, LeaseRecord>,
    vaults: BTreeMap<Vec<u8>, VaultMeta>,
    vault_limits: VaultLimits,
    revision: u64,
    next_lease_id: u64,
    /// Auth changes the KV state never sees; kept so a refused change is refused here too.
    auth: aspen::api::AuthState,
    /// The oldest revision the history keeps (compactions move it).
    history_floor: u64,
}

struct Step {
    now: u64,
    stamp: u64,
    changed: bool,
    /// Vaults a reader-visible change touched (a put, a live key deleted, a key expired).
    touched: std::collections::BTreeSet<Vec<u8>>,
}

impl Step {
    fn touch(&mut self, key: &[u8]) {
        if let Some(name) = vault_of(key) {
            self.touched.insert(name.to_vec());
        }
    }
}

impl Model {
    pub fn new() -> Self {
        Model {
            next_lease_id: 1,
            ..Model::default()
        }
    }

    pub fn apply(&mut self, now: u64, command: &Command) -> Response {
        if let Command::Batch(items) = command {
            // Group commit: each write applied on its own, in order, at its own clock.
            if let Err(e) = command.validate() {
                return Response {
                    revision: self.revision,
                    result: Err(e),
                    batch: Vec::new(),
                };
            }
            let batch = items
                .iter()
                .map(|item| self.apply(item.now_ms, &Command::from(item.op.clone())))
                .collect();
            return Response {
                revision: self.revision,
                result: Ok(Output::None),
                batch,
            };
        }
        let mut step = Step {
            now,
            stamp: self.revision + 1,
            changed: false,
            touched: Default::default(),
        };
        let result = match command.validate() {
            Err(e) => Err(e),
            Ok(()) => self.execute(&mut step, command),
        };
        self.update_vaults(&step);
        if step.changed {
            self.revision = step.stamp;
        }
        Response {
            revision: self.revision,
            result,
            batch: Vec::new(),
        }
    }

    fn live(&self, step: &Step, key: &[u8]) -> Option<&KvEntry> {
        self.kv
            .get(key)
            .filter(|e| e.expires_at_ms.is_none_or(|at| at > step.now))
    }

    fn lease_live(&self, step: &Step, id: u64) -> bool {
        self.leases
            .get(&id)
            .is_some_and(|l| l.deadline_ms > step.now)
    }

    fn execute(&mut self, step: &mut Step, command: &Command) -> Result<Output, CommandError> {
        match command {
            Command::Write(WriteOp::Put(put)) => {
                self.check_lease(step, put)?;
                self.check_vault_room([put])?;
                Ok(Output::Put {
                    prev: self.put(step, put),
                })
            }
            Command::Write(WriteOp::Delete { key, prev_kv }) => {
                let prev = self.delete(step, key);
                Ok(Output::Delete {
                    deleted: prev.is_some() as u64,
                    prev: prev.filter(|_| *prev_kv),
                })
            }
            Command::Write(WriteOp::DeleteRange(range)) => Ok(Output::DeleteRange {
                deleted: self.delete_range(step, range),
            }),
            Command::Write(WriteOp::Txn(txn)) => self.txn(step, txn),
            Command::Write(WriteOp::LeaseGrant { id, ttl_ms }) => {
                let id = if *id == 0 {
                    // The first free id from the counter on; past the largest, from 1.
                    let free =
                        |from: u64| (from..=u64::MAX).find(|id| !self.leases.contains_key(id));
                    let Some(id) = free(self.next_lease_id).or_else(|| free(1)) else {
                        return Err(CommandError::Exhausted {
                            what: "every lease id is taken".into(),
                        });
                    };
                    self.next_lease_id = id;
                    id
                } else {
                    *id
                };
                if self.leases.contains_key(&id) {
                    return Err(CommandError::LeaseExists { id });
                }
                let record = LeaseRecord {
                    ttl_ms: *ttl_ms,
                    granted_at_ms: step.now,
                    deadline_ms: step.now + ttl_ms,
                };
                self.leases.insert(id, record);
                self.next_lease_id = self.next_lease_id.max(id + 1);
                Ok(Output::Lease {
                    id,
                    ttl_ms: *ttl_ms,
                    deadline_ms: record.deadline_ms,
                })
            }
            Command::Write(WriteOp::LeaseRevoke { id }) => match self.revoke(step, *id) {
                Some(keys_deleted) => Ok(Output::LeaseRevoke { keys_deleted }),
                None => Err(CommandError::LeaseNotFound { id: *id }),
            },
            Command::Write(WriteOp::Compact { revision }) => {
                if *revision > self.revision {
                    return Err(CommandError::FutureRevision {
                        revision: *revision,
                        current: self.revision,
                    });
                }
                if *revision < self.history_floor {
                    return Err(CommandError::Compacted {
                        revision: *revision,
                        oldest: self.history_floor,
                    });
                }
                self.history_floor = *revision;
                Ok(Output::None)
            }
            Command::Write(WriteOp::LeaseKeepAlive { id }) => {
                if !self.lease_live(step, *id) {
                    return Err(CommandError::LeaseNotFound { id: *id });
                }
                let lease = self.leases.get_mut(id).unwrap();
                lease.deadline_ms = step.now + lease.ttl_ms;
                Ok(Output::Lease {
                    id: *id,
                    ttl_ms: lease.ttl_ms,
                    deadline_ms: lease.deadline_ms,
                })
            }
            Command::Expire { keys, leases } => {
                let mut keys_deleted = 0;
                for key in keys {
                    if self.kv.contains_key(key) && self.live(step, key).is_none() {
                        self.kv.remove(key);
                        step.touch(key);
                        keys_deleted += 1;
                    }
                }
                let mut leases_revoked = 0;
                for id in leases {
                    let expired = self
                        .leases
                        .get(id)
                        .is_some_and(|l| l.deadline_ms <= step.now);
                    if expired {
                        keys_deleted += self.revoke(step, *id).unwrap();
                        leases_revoked += 1;
                    }
                }
                step.changed |= keys_deleted > 0;
                Ok(Output::Expire {
                    keys_deleted,
                    leases_revoked,
                })
            }
            Command::SetVaultLimits(limits) => {
                self.vault_limits = *limits;
                Ok(Output::None)
            }
            Command::Batch(_) => unreachable!("apply takes batches apart"),
            Command::Auth(op) => {
                let mut next = self.auth.clone();
                next.apply(op)
                    .map_err(|e| CommandError::Auth(e.to_string()))?;
                self.auth = next;
                Ok(Output::None)
            }
            // Changes nothing (the store hashes the state it leaves).
            Command::HashCheck { .. } => Ok(Output::None),
            Command::RenewLeases => {
                for lease in self.leases.values_mut() {
                    lease.deadline_ms = lease.deadline_ms.max(step.now + lease.ttl_ms);
                }
                Ok(Output::None)
            }
            Command::AuthBootstrap { roots } => {
                if !self.auth.has_root() {
                    for root in roots {
                        self.auth
                            .clients
                            .entry(*root)
                            .or_default()
                            .insert(aspen::api::ROOT_ROLE.into());
                    }
                }
                Ok(Output::None)
            }
        }
    }

    /// Vault metadata after a command: key count and bytes from a full scan of the model's
    /// keys, `updated_revision` moved for the vaults the command visibly touched,
    /// `created_revision` set when a vault appears.
    fn update_vaults(&mut self, step: &Step) {
        let mut figures: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
        for (key, entry) in &self.kv {
            if let Some(name) = vault_of(key) {
                let f = figures.entry(name.to_vec()).or_default();
                f.0 += 1;
                f.1 += (key.len() + entry.value.len()) as u64;
            }
        }
        self.vaults.retain(|name, _| figures.contains_key(name));
        for (name, (keys, bytes)) in figures {
            let touched = step.touched.contains(&name);
            let meta = self.vaults.entry(name).or_insert(VaultMeta {
                created_revision: step.stamp,
                ..VaultMeta::default()
            });
            meta.key_count = keys;
            meta.total_bytes = bytes;
            if touched {
                meta.updated_revision = step.stamp;
            }
        }
    }

    /// The vault limits over every new key the command's puts create.
    fn check_vault_room<'a>(
        &self,
        puts: impl IntoIterator<Item = &'a Put>,
    ) -> Result<(), CommandError> {
        let mut added: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut vaults = self.vaults.len() as u64;
        for put in puts {
            let Some(name) = vault_of(&put.key) else {
                continue;
            };
            if !seen.insert(put.key.clone()) || self.kv.contains_key(&put.key) {
                continue;
            }
            let stored = self.vaults.get(name).map_or(0, |m| m.key_count);
            let n = added.entry(name.to_vec()).or_insert(0);
            let vault = String::from_utf8_lossy(name).into_owned();
            if stored == 0 && *n == 0 {
                if vaults >= self.vault_limits.vaults_max {
                    return Err(CommandError::TooManyVaults {
                        vault,
                        max: self.vault_limits.vaults_max,
                    });
                }
                vaults += 1;
            }
            *n += 1;
            if stored + *n > self.vault_limits.keys_per_vault_max {
                return Err(CommandError::VaultFull {
                    vault,
                    max: self.vault_limits.keys_per_vault_max,
                });
            }
        }
        Ok(())
    }

    fn check_lease(&self, step: &Step, put: &Put) -> Result<(), CommandError> {
        match put.lease {
            Some(id) if !self.lease_live(step, id) => Err(CommandError::LeaseNotFound { id }),
            _ => Ok(()),
        }
    }

    fn put(&mut self, step: &mut Step, put: &Put) -> Option<KeyValue> {
        let old = self.live(step, &put.key).cloned();
        let entry = KvEntry {
            value: put.value.clone(),
            version: old.as_ref().map_or(1, |o| o.version + 1),
            create_revision: old.as_ref().map_or(step.stamp, |o| o.create_revision),
            mod_revision: step.stamp,
            lease: put.lease,
            expires_at_ms: put.ttl_ms.map(|ttl| step.now + ttl),
        };
        self.kv.insert(put.key.clone(), entry);
        step.changed = true;
        step.touch(&put.key);
        old.filter(|_| put.prev_kv)
            .map(|o| o.into_key_value(put.key.clone()))
    }

    fn delete(&mut self, step: &mut Step, key: &[u8]) -> Option<KeyValue> {
        let live = self.live(step, key).cloned();
        self.kv.remove(key);
        step.changed |= live.is_some();
        if live.is_some() {
            step.touch(key);
        }
        live.map(|e| e.into_key_value(key.to_vec()))
    }

    fn delete_range(&mut self, step: &mut Step, range: &KeyRange) -> u64 {
        self.delete_range_prev(step, range).len() as u64
    }

    /// A transaction's range read: every live key of the range, sorted by a
    /// stable sort of the whole list, then the longest prefix within the limit, the key cap
    /// and the byte cap (a sort by value counting values even when keys only).
    fn range(
        &self,
        step: &Step,
        range: &KeyRange,
        limit: u32,
        keys_only: bool,
        count_only: bool,
        sort: RangeSort,
    ) -> Output {
        let mut live: Vec<KeyValue> = self
            .kv
            .iter()
            .filter(|(k, e)| range.contains(k) && e.is_live(step.now))
            .map(|(k, e)| e.clone().into_key_value(k.clone()))
            .collect();
        let count = live.len() as u64;
        live.sort_by(|a, b| {
            let field = match sort.by {
                SortBy::Key => a.key.cmp(&b.key),
                SortBy::Version => a.version.cmp(&b.version),
                SortBy::CreateRevision => a.create_revision.cmp(&b.create_revision),
                SortBy::ModRevision => a.mod_revision.cmp(&b.mod_revision),
                SortBy::Value => a.value.cmp(&b.value),
            };
            if sort.descending {
                field.reverse()
            } else {
                field
            }
        });
        let max = match limit {
            0 => TXN_RANGE_KEYS_MAX,
            n => (n as usize).min(TXN_RANGE_KEYS_MAX),
        };
        let value_counts = !keys_only || sort.by == SortBy::Value;
        let mut kvs = Vec::new();
        let mut bytes = 0;
        if !count_only {
            for mut kv in live {
                let size = kv.key.len() + if value_counts { kv.value.len() } else { 0 };
                if kvs.len() == max || bytes + size > PAGE_BYTES_MAX {
                    break;
                }
                bytes += size;
                if keys_only {
                    kv.value.clear();
                }
                kvs.push(kv);
            }
        }
        let more = !count_only && count > kvs.len() as u64;
        Output::Range { kvs, count, more }
    }

    /// Deletes every key of the range; the live ones deleted, in key order.
    fn delete_range_prev(&mut self, step: &mut Step, range: &KeyRange) -> Vec<KeyValue> {
        let keys: Vec<_> = self
            .kv
            .keys()
            .filter(|k| range.contains(k))
            .cloned()
            .collect();
        keys.iter().filter_map(|k| self.delete(step, k)).collect()
    }

    fn revoke(&mut self, step: &mut Step, id: u64) -> Option<u64> {
        self.leases.remove(&id)?;
        let keys: Vec<_> = self
            .kv
            .iter()
            .filter(|(_, e)| e.lease == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        Some(
            keys.iter()
                .filter(|k| self.delete(step, k).is_some())
                .count() as u64,
        )
    }

    fn txn(&mut self, step: &mut Step, txn: &Txn) -> Result<Output, CommandError> {
        // Every branch, nested ones' too, is decided on the state before the transaction.
        let path = self.decide(step, txn);
        let (mut puts, mut answered) = (Vec::new(), Vec::new());
        walk(txn, &path, &mut puts, &mut answered);
        for put in &puts {
            self.check_lease(step, put)?;
        }
        self.check_vault_room(puts.iter().copied())?;
        for range in answered {
            // The transaction's puts into the range may add keys before the delete runs.
            let into: Vec<_> = puts.iter().filter(|p| range.contains(&p.key)).collect();
            let put_bytes: u64 = into
                .iter()
                .map(|p| (p.key.len() + p.value.len()) as u64)
                .sum();
            let live: Vec<(&Vec<u8>, &KvEntry)> = self
                .kv
                .iter()
                .filter(|(k, e)| range.contains(k) && e.is_live(step.now))
                .take(TXN_RANGE_KEYS_MAX + 1)
                .collect();
            let keys = live.len() as u64 + into.len() as u64;
            let bytes: u64 = live
                .iter()
                .map(|(k, e)| (k.len() + e.value.len()) as u64)
                .sum::<u64>()
                + put_bytes;
            if keys > TXN_RANGE_KEYS_MAX as u64 || bytes > PAGE_BYTES_MAX as u64 {
                return Err(CommandError::TxnDeleteTooLarge {
                    keys,
                    max: TXN_RANGE_KEYS_MAX as u64,
                });
            }
        }
        Ok(self.run_branch(step, txn, &path))
    }

    fn decide(&self, step: &Step, txn: &Txn) -> Path {
        let succeeded = txn.compares.iter().all(|c| self.holds(step, c));
        let nested = branch_of(txn, succeeded)
            .iter()
            .filter_map(|op| match op {
                TxnOp::Txn(inner) => Some(self.decide(step, inner)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    fn run_branch(&mut self, step: &mut Step, txn: &Txn, path: &Path) -> Output {
        let mut nested = path.nested.iter();
        let results = branch_of(txn, path.succeeded)
            .iter()
            .map(|op| match op {
                TxnOp::Put(put) => Output::Put {
                    prev: self.put(step, put),
                },
                TxnOp::Delete { key, prev_kv } => {
                    let prev = self.delete(step, key);
                    Output::Delete {
                        deleted: prev.is_some() as u64,
                        prev: prev.filter(|_| *prev_kv),
                    }
                }
                TxnOp::DeleteRange(range) => Output::DeleteRange {
                    deleted: self.delete_range(step, range),
                },
                TxnOp::DeleteRangePrev(range) => {
                    let prev = self.delete_range_prev(step, range);
                    Output::DeleteRangePrev {
                        deleted: prev.len() as u64,
                        prev,
                    }
                }
                TxnOp::Get { key } => Output::Get {
                    kv: self
                        .live(step, key)
                        .cloned()
                        .map(|e| e.into_key_value(key.clone())),
                },
                TxnOp::Range {
                    range,
                    limit,
                    keys_only,
                    count_only,
                    sort,
                } => self.range(step, range, *limit, *keys_only, *count_only, *sort),
                TxnOp::Txn(inner) => {
                    let path = nested.next().expect("decided");
                    self.run_branch(step, inner, path)
                }
            })
            .collect();
        Output::Txn {
            succeeded: path.succeeded,
            results,
        }
    }

    fn holds(&self, step: &Step, compare: &Compare) -> bool {
        match &compare.target {
            CompareTarget::InRange { end, target } => {
                let range = KeyRange {
                    start: compare.key.clone(),
                    end: end.clone(),
                };
                let live: Vec<&KvEntry> = self
                    .kv
                    .iter()
                    .filter(|(k, e)| range.contains(k) && e.is_live(step.now))
                    .map(|(_, e)| e)
                    .collect();
                // Every live key of the range; with none, as a missing key.
                match live.is_empty() {
                    true => entry_holds(None, compare.op, target),
                    false => live
                        .into_iter()
                        .all(|e| entry_holds(Some(e), compare.op, target)),
                }
            }
            target => entry_holds(self.live(step, &compare.key), compare.op, target),
        }
    }

    /// Keys whose TTL passed at `now`, ordered as the expiry index orders them.
    fn expired(&self, now: u64) -> Vec<Vec<u8>> {
        let mut rows: Vec<(u64, Vec<u8>)> = self
            .kv
            .iter()
            .filter_map(|(k, e)| {
                e.expires_at_ms
                    .filter(|at| *at <= now)
                    .map(|at| (at, k.clone()))
            })
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, k)| k).collect()
    }
}

/// Whether `op(actual, target)` holds for a key's live entry (`None`: missing).
fn entry_holds(entry: Option<&KvEntry>, op: CompareOp, target: &CompareTarget) -> bool {
    let (actual, expected): (Vec<u8>, Vec<u8>) = match target {
        CompareTarget::Value(v) => match entry {
            Some(e) => (e.value.clone(), v.clone()),
            None => return false,
        },
        CompareTarget::Version(v) => num(entry.map_or(0, |e| e.version), *v),
        CompareTarget::CreateRevision(v) => num(entry.map_or(0, |e| e.create_revision), *v),
        CompareTarget::ModRevision(v) => num(entry.map_or(0, |e| e.mod_revision), *v),
        CompareTarget::Exists(v) => (vec![entry.is_some() as u8], vec![*v as u8]),
        CompareTarget::Lease(v) => num(entry.and_then(|e| e.lease).unwrap_or(0), *v),
        CompareTarget::InRange { .. } => panic!("a range compare's target is a range"),
    };
    match op {
        CompareOp::Equal => actual == expected,
        CompareOp::NotEqual => actual != expected,
        CompareOp::Less => actual < expected,
        CompareOp::Greater => actual > expected,
    }
}

/// The branch a transaction takes, and those of the transactions nested in it, in order.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn branch_of(txn: &Txn, succeeded: bool) -> &[TxnOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// The puts and the answered range deletes a decided transaction runs, nested ones' included.
fn walk<'t>(txn: &'t Txn, path: &Path, puts: &mut Vec<&'t Put>, answered: &mut Vec<&'t KeyRange>) {
    let mut nested = path.nested.iter();
    for op in branch_of(txn, path.succeeded) {
        match op {
            TxnOp::Put(put) => puts.push(put),
            TxnOp::DeleteRangePrev(range) => answered.push(range),
            TxnOp::Txn(inner) => walk(inner, nested.next().expect("decided"), puts, answered),
            _ => {}
        }
    }
}

fn num(actual: u64, expected: u64) -> (Vec<u8>, Vec<u8>) {
    (
        actual.to_be_bytes().to_vec(),
        expected.to_be_bytes().to_vec(),
    )
}

/// `Err` naming what differs when `$a != $b`.
macro_rules! ensure_eq {
    ($a:expr, $b:expr $(,)?) => {
        ensure_eq!($a, $b, "{}", stringify!($a))
    };
    ($a:expr, $b:expr, $($what:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{}: store {:?} != model {:?}", format!($($what)+), a, b));
        }
    }};
}

/// Runs `steps` (time advance in ms, command) through an in-memory store and the model;
/// `Err` describes the first difference in a response or in the state after a command.
pub fn check_steps(steps: &[(u64, Command)]) -> Result<(), String> {
    let t = open(Kind::InMemory);
    let mut driver = Driver::new(t.store.clone());
    let mut model = Model::new();
    let mut now = 1_000u64;
    for (advance, mut command) in steps.iter().cloned() {
        now += advance;
        // A batch's writes carry the clock of the step that proposes them.
        if let Command::Batch(items) = &mut command {
            for item in items {
                item.now_ms = now;
            }
        }
        let expected = model.apply(now, &command);
        let actual = driver.run(now, command.clone());
        ensure_eq!(&actual, &expected, "command {:?} at {}", command, now);

        let stored = all_keys(&t.store, 0);
        let modeled: Vec<KeyValue> = model
            .kv
            .iter()
            .map(|(k, e)| e.clone().into_key_value(k.clone()))
            .collect();
        ensure_eq!(stored, modeled);
        let view = t.store.read_at(now).unwrap();
        ensure_eq!(view.revision(), model.revision);
        let vaults: BTreeMap<Vec<u8>, VaultMeta> = view
            .vaults()
            .unwrap()
            .into_iter()
            .map(|v| (v.name.into_bytes(), v.meta))
            .collect();
        ensure_eq!(&vaults, &model.vaults, "vaults after {:?}", command);
        ensure_eq!(view.vault_limits().unwrap(), model.vault_limits);
        ensure_eq!(view.expired_keys(now, 100).unwrap(), model.expired(now));
        let leases: Vec<(u64, LeaseRecord)> = view
            .leases(0, 100)
            .unwrap()
            .into_iter()
            .map(|l| (l.id, l.record))
            .collect();
        let live: Vec<(u64, LeaseRecord)> = model
            .leases
            .iter()
            .filter(|(_, l)| l.deadline_ms > now)
            .map(|(id, l)| (*id, *l))
            .collect();
        ensure_eq!(leases, live);
        for id in model.leases.keys() {
            let keys: Vec<Vec<u8>> = model
                .kv
                .iter()
                .filter(|(_, e)| e.lease == Some(*id))
                .map(|(k, _)| k.clone())
                .collect();
            ensure_eq!(view.lease_keys(*id, 100).unwrap(), keys);
        }
    }
    Ok(())
}

/// The keys commands use, few so that commands collide (vault keys included).
pub const KEYS: [&str; 10] = [
    "a",
    "b",
    "b/1",
    "b/2",
    "c",
    "vault/v1/a",
    "vault/v1/b",
    "vault/v1/c",
    "vault/v2/a",
    "vault/v3/a",
];
/// The values commands write.
pub const VALUES: [&str; 4] = ["x", "y", "z", ""];

/// Reads fuzzer bytes as choices; `None` once they run out.
struct Choices<'a>(std::slice::Iter<'a, u8>);

impl Choices<'_> {
    fn byte(&mut self) -> Option<u8> {
        self.0.next().copied()
    }

    fn below(&mut self, n: u8) -> Option<u8> {
        Some(self.byte()? % n)
    }

    fn key(&mut self) -> Option<Vec<u8>> {
        Some(KEYS[usize::from(self.below(KEYS.len() as u8)?)].into())
    }

    fn value(&mut self) -> Option<Vec<u8>> {
        Some(VALUES[usize::from(self.below(VALUES.len() as u8)?)].into())
    }

    fn flag(&mut self) -> Option<bool> {
        Some(self.byte()? & 1 == 1)
    }

    fn put(&mut self) -> Option<Put> {
        let (key, value, mode, n, prev_kv) = (
            self.key()?,
            self.value()?,
            self.below(4)?,
            u64::from(self.byte()?) + 1,
            self.flag()?,
        );
        Some(Put {
            key,
            value,
            lease: (mode == 1).then_some(n % 4 + 1),
            ttl_ms: (mode == 2).then_some(n),
            prev_kv,
        })
    }

    fn range(&mut self) -> Option<KeyRange> {
        let (a, b) = (self.key()?, self.key()?);
        Some(if self.flag()? {
            KeyRange::prefix(&a)
        } else {
            KeyRange {
                start: a.clone().min(b.clone()),
                end: Some(a.max(b)),
            }
        })
    }

    fn compare(&mut self) -> Option<Compare> {
        let key = self.key()?;
        let op = [
            CompareOp::Equal,
            CompareOp::NotEqual,
            CompareOp::Less,
            CompareOp::Greater,
        ][usize::from(self.below(4)?)];
        let n = u64::from(self.below(12)?);
        let target = match self.below(5)? {
            0 => CompareTarget::Value(self.value()?),
            1 => CompareTarget::Version(n % 4),
            2 => CompareTarget::CreateRevision(n),
            3 => CompareTarget::ModRevision(n),
            _ => CompareTarget::Exists(self.flag()?),
        };
        Some(Compare { key, op, target })
    }

    fn txn_op(&mut self) -> Option<TxnOp> {
        Some(match self.below(4)? {
            0 => TxnOp::Put(self.put()?),
            1 => TxnOp::Delete {
                key: self.key()?,
                prev_kv: self.flag()?,
            },
            2 => TxnOp::DeleteRange(self.range()?),
            _ => TxnOp::Get { key: self.key()? },
        })
    }

    fn list<T>(&mut self, max: u8, item: impl Fn(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let n = self.below(max + 1)?;
        (0..n).map(|_| item(self)).collect()
    }

    /// A command; one time in ten a batch of up to three client writes, one in forty a
    /// lease renewal, one in forty a hash check.
    fn command(&mut self) -> Option<Command> {
        Some(match self.below(10)? {
            n @ 0..=6 => Command::from(self.write_op(n)?),
            9 => Command::Batch(self.list(3, |c| {
                let n = c.below(7)?;
                Some(aspen::command::BatchItem {
                    now_ms: 0,
                    op: c.write_op(n)?,
                })
            })?),
            7 => Command::Expire {
                keys: self.list(3, Self::key)?,
                leases: self.list(2, |c| Some(u64::from(c.below(4)?) + 1))?,
            },
            _ if self.below(4)? == 0 => Command::RenewLeases,
            _ if self.below(3)? == 0 => Command::HashCheck {
                check: u64::from(self.below(4)?),
            },
            _ => Command::SetVaultLimits(VaultLimits {
                vaults_max: u64::from(self.below(3)?) + 1,
                keys_per_vault_max: u64::from(self.below(3)?) + 1,
            }),
        })
    }

    /// Client write number `n` (0 to 6) of the command list.
    fn write_op(&mut self, n: u8) -> Option<WriteOp> {
        Some(match n {
            0 => WriteOp::Put(self.put()?),
            1 => WriteOp::Delete {
                key: self.key()?,
                prev_kv: self.flag()?,
            },
            2 => WriteOp::DeleteRange(self.range()?),
            3 => WriteOp::Txn(Txn {
                compares: self.list(2, Self::compare)?,
                success: self.list(3, Self::txn_op)?,
                failure: self.list(2, Self::txn_op)?,
            }),
            4 => WriteOp::LeaseGrant {
                id: u64::from(self.below(5)?),
                ttl_ms: u64::from(self.byte()?) * 3 + 1,
            },
            5 => WriteOp::LeaseRevoke {
                id: u64::from(self.below(5)?),
            },
            _ => WriteOp::LeaseKeepAlive {
                id: u64::from(self.below(4)?) + 1,
            },
        })
    }
}

/// Reads fuzzer input as a sequence of (time advance in ms, command), at most 64, drawn from
/// `KEYS` and `VALUES` like the property test's; incomplete trailing bytes are ignored.
pub fn steps_from_bytes(data: &[u8]) -> Vec<(u64, Command)> {
    let mut choices = Choices(data.iter());
    let mut steps = Vec::new();
    while steps.len() < 64 {
        let Some(advance) = choices.byte() else { break };
        let Some(command) = choices.command() else {
            break;
        };
        steps.push((u64::from(advance), command));
    }
    steps
}
