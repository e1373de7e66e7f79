//! SQL against a raw redb scan over 1,000,000 keys with 256-byte values: each query beside a
//! read transaction that computes the same answer by hand (iterate, decode the entry, skip
//! expired keys, aggregate). The SQL side drains the query's record batches, as the engine
//! does before it turns them into an answer.
//!
//! Run: `cargo bench --bench sql`. Ratios are medians of the two lines of a group.

use aspen::api::WriteOp;
use std::sync::Arc;
use std::time::Duration;

use aspen::api::Put;
use aspen::command::{Command, Entry, LogId, Request};
use aspen::sql::{SqlEngine, SqlLimits};
use aspen::storage::StoreWrite;
use aspen::storage::schema::KV;
use aspen::storage::{KvEntryRef, Store, StoreOptions};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use openraft::{CommittedLeaderId, EntryPayload};

const KEYS: u64 = 1_000_000;
const VALUE_BYTES: usize = 256;
const NOW_MS: u64 = 1_700_000_000_000;
const ALL: (&[u8], Option<&[u8]>) = (b"", None);

fn load(store: &Store) {
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..KEYS {
        let value = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
        batch.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i + 1),
            payload: EntryPayload::Normal(Request {
                now_ms: NOW_MS,
                command: Command::Write(WriteOp::Put(Put::new(format!("k{i:07}"), value))),
            }),
        });
        if batch.len() == 10_000 {
            store.apply(&batch).expect("load");
            batch.clear();
        }
    }
}

/// Live entries from `start` up to `end` (or the last key) through a plain read transaction,
/// folded by `f`.
fn raw_fold<T>(
    store: &Store,
    (start, end): (&[u8], Option<&[u8]>),
    init: T,
    mut f: impl FnMut(T, &[u8], &KvEntryRef<'_>) -> T,
) -> T {
    let txn = store.begin_read().expect("read");
    let table = txn.open_table(KV).expect("kv");
    let mut acc = init;
    let iter = match end {
        Some(end) => table.range(start..end),
        None => table.range(start..),
    }
    .expect("range");
    for item in iter {
        let (key, bytes) = item.expect("entry");
        let entry: KvEntryRef<'_> = postcard::from_bytes(bytes.value()).expect("decode");
        if entry.is_live(NOW_MS) {
            acc = f(acc, key.value(), &entry);
        }
    }
    acc
}

async fn sql_drain(engine: &SqlEngine, store: &Store, sql: &str) -> usize {
    let view = store.read(NOW_MS).expect("read");
    let (mut stream, _) = engine.stream(view, sql).await.expect("query");
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.expect("batch").num_rows();
    }
    rows
}

fn sql(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = Arc::new(Store::open(&StoreOptions::file(dir.path())).expect("open"));
    load(&store);
    let engine = SqlEngine::new(SqlLimits {
        max_concurrent: 4,
        timeout: Duration::from_secs(30),
        row_limit: 10_000,
        memory_bytes: 256 << 20,
    })
    .expect("engine");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let mut group = c.benchmark_group("count_all");
    group.bench_function("raw", |b| {
        b.iter(|| assert_eq!(raw_fold(&store, ALL, 0u64, |n, _, _| n + 1), KEYS))
    });
    group.bench_function("sql", |b| {
        b.to_async(&runtime).iter(|| async {
            assert_eq!(
                sql_drain(&engine, &store, "SELECT COUNT(*) FROM kv").await,
                1
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("sum_length_value");
    let expected = KEYS * VALUE_BYTES as u64;
    group.bench_function("raw", |b| {
        b.iter(|| {
            let sum = raw_fold(&store, ALL, 0u64, |n, _, e| {
                n + std::str::from_utf8(e.value).map_or(0, |s| s.chars().count() as u64)
            });
            assert_eq!(sum, expected);
        })
    });
    group.bench_function("sql", |b| {
        b.to_async(&runtime).iter(|| async {
            assert_eq!(
                sql_drain(&engine, &store, "SELECT SUM(length(value)) FROM kv").await,
                1
            )
        })
    });
    group.finish();

    // 10,000 keys of one prefix, key and value returned.
    let mut group = c.benchmark_group("prefix_rows");
    group.bench_function("raw", |b| {
        b.iter(|| {
            let rows = raw_fold(
                &store,
                (b"k050", Some(b"k051")),
                Vec::new(),
                |mut rows, k, e| {
                    rows.push((
                        String::from_utf8(k.to_vec()).ok(),
                        String::from_utf8(e.value.to_vec()).ok(),
                    ));
                    rows
                },
            );
            assert_eq!(rows.len(), 10_000);
        })
    });
    group.bench_function("sql", |b| {
        b.to_async(&runtime).iter(|| async {
            let rows = sql_drain(
                &engine,
                &store,
                "SELECT key, value FROM kv WHERE key LIKE 'k050%'",
            )
            .await;
            assert_eq!(rows, 10_000)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = sql
}
criterion_main!(benches);
