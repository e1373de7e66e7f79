//! Shared setup: a real redb store loaded by applying commands the way the state machine
//! does (no Raft needed to hold data), an independent model of what readers must see, and
//! SQLite loaded from that model.

use aspen::api::WriteOp;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aspen::api::Put;
use aspen::command::{Command, Entry, LogId, Request};
use aspen::sql::{SqlEngine, SqlLimits};
use aspen::storage::StoreWrite;
use aspen::storage::{Store, StoreOptions};
use openraft::{CommittedLeaderId, EntryPayload};

/// A store on a temporary directory, fed with commands.
pub struct Loaded {
    pub store: Arc<Store>,
    pub _dir: tempfile::TempDir,
    next_index: u64,
    pending: Vec<Entry>,
}

impl Loaded {
    pub fn new() -> Loaded {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = StoreOptions::file(dir.path());
        options.cache_bytes = 16 << 20;
        Loaded {
            store: Arc::new(Store::open(&options).expect("open store")),
            _dir: dir,
            next_index: 1,
            pending: Vec::new(),
        }
    }

    /// Queues `command` stamped `now_ms`; applied in batches.
    pub fn run(&mut self, now_ms: u64, command: Command) {
        self.pending.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), self.next_index),
            payload: EntryPayload::Normal(Request { now_ms, command }),
        });
        self.next_index += 1;
        if self.pending.len() == 1_000 {
            self.flush();
        }
    }

    /// Applies everything queued.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let responses = self.store.apply(&self.pending).expect("apply");
            for response in responses {
                assert!(response.result.is_ok(), "{response:?}");
            }
            self.pending.clear();
        }
    }
}

pub fn engine(configure: impl FnOnce(&mut SqlLimits)) -> SqlEngine {
    let mut limits = SqlLimits {
        max_concurrent: 4,
        timeout: Duration::from_secs(30),
        row_limit: 10_000,
        memory_bytes: 256 << 20,
    };
    configure(&mut limits);
    SqlEngine::new(limits).expect("engine")
}

pub fn now_ms() -> u64 {
    aspen::clock::now_ms()
}

/// What a reader must see of one key (the model's own bookkeeping, not the store's).
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub value: Vec<u8>,
    pub version: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: Option<i64>,
    pub expires_at: Option<i64>,
}

/// The oracle data set: ~2,900 keys under varied prefixes, overwrites, deletes, TTLs (live
/// and already expired), leases, values that are not UTF-8 and keys that are not UTF-8. The
/// same commands go to the store and to the model.
pub struct Dataset {
    pub loaded: Loaded,
    /// Live keys at query time, as the model computes them.
    pub model: BTreeMap<Vec<u8>, ModelEntry>,
    /// Lease id -> ttl_ms.
    pub leases: BTreeMap<i64, i64>,
}

pub fn dataset() -> Dataset {
    let now = now_ms();
    let hour = 3_600_000;
    let mut d = Dataset {
        loaded: Loaded::new(),
        model: BTreeMap::new(),
        leases: BTreeMap::new(),
    };
    let mut revision = 0i64;
    let mut put = |d: &mut Dataset,
                   at: u64,
                   key: Vec<u8>,
                   value: Vec<u8>,
                   lease: Option<u64>,
                   ttl: Option<u64>| {
        revision += 1;
        let mut p = Put::new(key.clone(), value.clone());
        p.lease = lease;
        p.ttl_ms = ttl;
        d.loaded.run(at, Command::Write(WriteOp::Put(p)));
        let previous = d.model.get(&key).cloned();
        d.model.insert(
            key,
            ModelEntry {
                value,
                version: previous.as_ref().map_or(1, |e| e.version + 1),
                create_revision: previous.as_ref().map_or(revision, |e| e.create_revision),
                mod_revision: revision,
                lease: lease.map(|l| l as i64),
                expires_at: ttl.map(|t| (at + t) as i64),
            },
        );
        revision
    };
    // Written two hours ago with a one-hour TTL: expired, still stored. First: the state
    // machine's clock never goes back, so a later command stamped earlier would run at `now`.
    for i in (1..300u64).step_by(2) {
        let key = format!("tmp/{i:03}").into_bytes();
        put(
            &mut d,
            now - 2 * hour,
            key.clone(),
            b"gone".to_vec(),
            None,
            Some(hour),
        );
        d.model.remove(&key);
    }
    const COLORS: [&str; 3] = ["red", "green", "blue"];
    for i in 0..1_000u64 {
        let value = format!("name-{i}|age={}|{}", 18 + i % 60, COLORS[(i % 3) as usize]);
        put(
            &mut d,
            now,
            format!("users/{i:04}").into_bytes(),
            value.into_bytes(),
            None,
            None,
        );
    }
    for i in 0..1_200u64 {
        let key = format!("orders/2026-{:02}/{i:05}", 1 + i % 12);
        put(
            &mut d,
            now,
            key.into_bytes(),
            ((i * 37) % 1_000).to_string().into_bytes(),
            None,
            None,
        );
    }
    for round in 0..3u64 {
        for i in 0..30u64 {
            if round > 0 && i % (round + 1) != 0 {
                continue;
            }
            let value = format!("setting {} v{round}", i % 7);
            put(
                &mut d,
                now,
                format!("cfg/{}", (b'a' + i as u8 % 26) as char).into_bytes(),
                value.into_bytes(),
                None,
                None,
            );
        }
    }
    for i in (0..300u64).step_by(2) {
        let key = format!("tmp/{i:03}").into_bytes();
        put(&mut d, now, key, b"live".to_vec(), None, Some(hour));
    }
    for lease in 101..=105u64 {
        d.loaded.run(
            now,
            Command::Write(WriteOp::LeaseGrant {
                id: lease,
                ttl_ms: hour * lease / 100,
            }),
        );
        d.leases.insert(lease as i64, (hour * lease / 100) as i64);
    }
    for i in 0..200u64 {
        let lease = 101 + i % 5;
        put(
            &mut d,
            now,
            format!("sess/{i:03}").into_bytes(),
            format!("token-{}", i * 7919 % 1000).into_bytes(),
            Some(lease),
            None,
        );
    }
    for i in 0..5u8 {
        put(
            &mut d,
            now,
            format!("bin/{i}").into_bytes(),
            vec![0xff, 0xfe, i],
            None,
            None,
        );
    }
    for i in 0..3u8 {
        put(
            &mut d,
            now,
            vec![0xff, b'r', b'a', b'w', i],
            b"raw key".to_vec(),
            None,
            None,
        );
    }
    // Deletes of live keys: each is a revision.
    for i in (0..1_000u64).step_by(10) {
        let key = format!("users/{i:04}").into_bytes();
        d.loaded.run(
            now,
            Command::Write(WriteOp::Delete {
                key: key.clone(),
                prev_kv: false,
            }),
        );
        d.model.remove(&key);
    }
    d.loaded.flush();
    d
}

impl Dataset {
    /// SQLite holding the model's live keys in a `kv` table of the same shape, and `leases`
    /// (without the time-dependent `remaining_ms`).
    pub fn sqlite(&self) -> rusqlite::Connection {
        let db = rusqlite::Connection::open_in_memory().expect("sqlite");
        db.execute_batch(
            "PRAGMA case_sensitive_like = ON;
             CREATE TABLE kv (key TEXT, value TEXT, version INTEGER, create_revision INTEGER,
                              mod_revision INTEGER, lease_id INTEGER, expires_at INTEGER);
             CREATE TABLE leases (id INTEGER, ttl_ms INTEGER, key_count INTEGER);",
        )
        .expect("schema");
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).ok();
        for (key, e) in &self.model {
            db.execute(
                "INSERT INTO kv VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    text(key),
                    text(&e.value),
                    e.version,
                    e.create_revision,
                    e.mod_revision,
                    e.lease,
                    e.expires_at
                ],
            )
            .expect("insert");
        }
        for (id, ttl) in &self.leases {
            let keys = self.model.values().filter(|e| e.lease == Some(*id)).count() as i64;
            db.execute(
                "INSERT INTO leases VALUES (?1, ?2, ?3)",
                rusqlite::params![id, ttl, keys],
            )
            .expect("insert lease");
        }
        db
    }
}
