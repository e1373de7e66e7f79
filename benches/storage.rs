//! Storage benchmarks: one durable append beside a raw write + fsync in the same directory
//! (the baseline every durable append pays), batched appends, apply throughput, point gets and
//! prefix scans. Run: `cargo bench --bench storage`.

use aspen::api::WriteOp;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use aspen::api::{KeyRange, Put};
use aspen::command::{Command, Entry, LogId, Request};
use aspen::storage::StoreWrite;
use aspen::storage::{ScanOptions, Store, StoreOptions};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use openraft::{CommittedLeaderId, EntryPayload};

const VALUE_BYTES: usize = 256;
const NOW_MS: u64 = 1_000_000;
/// 4 KiB pages in the file of the page-write baseline (64 MiB).
const PAGE_SLOTS: u64 = 16 * 1024;

fn entry(index: u64, key: String) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Request {
            now_ms: NOW_MS,
            command: Command::Write(WriteOp::Put(Put::new(key, vec![b'v'; VALUE_BYTES]))),
        }),
    }
}

fn open(dir: &std::path::Path, quick_repair: bool) -> Store {
    let mut options = StoreOptions::file(dir);
    options.quick_repair = quick_repair;
    Store::open(&options).expect("open store")
}

fn durable_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_append");
    group.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");

    let raw_path = dir.path().join("raw.log");
    let mut raw = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&raw_path)
        .expect("raw file");
    let payload = [b'v'; VALUE_BYTES];
    group.bench_function("raw_write_fsync_256B", |b| {
        b.iter(|| {
            raw.write_all(&payload).expect("write");
            raw.sync_all().expect("fsync");
        })
    });

    // The I/O floor of a copy-on-write B-tree commit: six scattered 4 KiB page writes and one
    // fdatasync (redb's commit writes leaf, branch, table-tree and header pages).
    let pages_file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("pages"))
        .expect("pages file");
    let page = [b'p'; 4096];
    for slot in 0..PAGE_SLOTS {
        pages_file.write_at(&page, slot * 4096).expect("prefill");
    }
    pages_file.sync_all().expect("fsync");
    let mut slot = 0;
    group.bench_function("raw_6_pages_fdatasync", |b| {
        b.iter(|| {
            for _ in 0..6 {
                slot = (slot + 7_919) % PAGE_SLOTS;
                pages_file.write_at(&page, slot * 4096).expect("write");
            }
            pages_file.sync_data().expect("fdatasync");
        })
    });

    for (name, quick_repair) in [
        ("aspen_append_256B", false),
        ("aspen_append_256B_quick_repair", true),
    ] {
        let store_dir = dir.path().join(name);
        let store = open(&store_dir, quick_repair);
        let mut index = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                index += 1;
                store
                    .append(&[entry(index, format!("k{index}"))])
                    .expect("append");
            })
        });
    }

    let store = open(&dir.path().join("batch"), false);
    let mut index = 0;
    group.throughput(Throughput::Elements(100));
    group.bench_function("aspen_append_100x256B", |b| {
        b.iter_batched(
            || {
                let batch: Vec<Entry> = (index + 1..=index + 100)
                    .map(|i| entry(i, format!("k{i}")))
                    .collect();
                index += 100;
                batch
            },
            |batch| store.append(&batch).expect("append"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(100));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = open(dir.path(), false);
    let mut index = 0;
    group.bench_function("apply_100_puts", |b| {
        b.iter_batched(
            || {
                let batch: Vec<Entry> = (index + 1..=index + 100)
                    .map(|i| entry(i, format!("k{:08}", i % 100_000)))
                    .collect();
                index += 100;
                batch
            },
            |batch| store.apply(&batch).expect("apply"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("reads");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let store = open(dir.path(), false);
    // 100,000 keys over 100 prefixes of 1,000 keys each.
    for chunk in 0..100u64 {
        let batch: Vec<Entry> = (0..1_000u64)
            .map(|i| {
                let n = chunk * 1_000 + i;
                entry(n + 1, format!("p{chunk:03}/{i:06}"))
            })
            .collect();
        store.apply(&batch).expect("load");
    }
    store.close().expect("close");

    let mut n = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("point_get", |b| {
        b.iter(|| {
            n = (n + 7_919) % 100_000;
            let key = format!("p{:03}/{:06}", n / 1_000, n % 1_000);
            let view = store.read(NOW_MS).expect("read");
            assert!(view.get(key.as_bytes()).expect("get").is_some());
        })
    });

    group.throughput(Throughput::Elements(1_000));
    group.bench_function("prefix_scan_1000", |b| {
        b.iter(|| {
            n = (n + 13) % 100;
            let view = store.read(NOW_MS).expect("read");
            let page = view
                .range(
                    &KeyRange::prefix(format!("p{n:03}/").as_bytes()),
                    ScanOptions::default(),
                )
                .expect("scan");
            assert_eq!(page.kvs.len(), 1_000);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = durable_append, apply, reads
}
criterion_main!(benches);
