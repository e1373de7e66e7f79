use aspen::api::Put;
use aspen::api::WriteOp;
use aspen::command::Command;
use futures::StreamExt;

use crate::util::{Loaded, engine, now_ms};

/// Rows a query produces and the scan counters after it ran to the end.
async fn run(engine: &aspen::sql::SqlEngine, loaded: &Loaded, sql: &str) -> (usize, u64, u64) {
    let view = loaded.store.read(now_ms()).expect("read");
    let (mut stream, stats) = engine.stream(view, sql).await.expect(sql);
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.expect(sql).num_rows();
    }
    (rows, stats.rows_scanned(), stats.values_read())
}

// Proves, over 100,000 keys, that filters on `key` become range scans (a prefix LIKE, `=`,
// `IN` and a range visit only their own rows), that LIMIT stops the scan, that a query that
// does not select `value` copies no value and that COUNT(*) builds no column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_limit_and_projection_reach_the_scan() {
    let mut loaded = Loaded::new();
    let now = now_ms();
    // 100 prefixes of 1,000 keys: "a00/000000" .. "a99/000999", with 'p/' between them.
    for prefix in 0..100u64 {
        let name = if prefix == 50 {
            "p".to_string()
        } else {
            format!("a{prefix:02}")
        };
        for i in 0..1_000u64 {
            let put = Put::new(format!("{name}/{i:06}"), format!("value {i}"));
            loaded.run(now, Command::Write(WriteOp::Put(put)));
        }
    }
    loaded.flush();
    let engine = engine(|_| {});

    let (rows, scanned, values) = run(
        &engine,
        &loaded,
        "SELECT key, value FROM kv WHERE key LIKE 'p/%'",
    )
    .await;
    assert_eq!(
        (rows, scanned),
        (1_000, 1_000),
        "a prefix scans only its rows"
    );
    assert_eq!(values, 1_000);

    let (rows, scanned, values) =
        run(&engine, &loaded, "SELECT key FROM kv WHERE key LIKE 'p/%'").await;
    assert_eq!(
        (rows, scanned, values),
        (1_000, 1_000, 0),
        "no value is read"
    );

    let (rows, scanned, values) = run(&engine, &loaded, "SELECT key, version FROM kv").await;
    assert_eq!((rows, scanned, values), (100_000, 100_000, 0));

    let (rows, scanned, _) = run(
        &engine,
        &loaded,
        "SELECT COUNT(*) FROM kv WHERE key LIKE 'p/%'",
    )
    .await;
    assert_eq!((rows, scanned), (1, 1_000));

    let (rows, scanned, _) = run(
        &engine,
        &loaded,
        "SELECT key FROM kv WHERE key = 'a07/000005' OR key IN ('a08/000001', 'zz')",
    )
    .await;
    assert_eq!((rows, scanned), (2, 2));

    let (rows, scanned, _) = run(
        &engine,
        &loaded,
        "SELECT key FROM kv WHERE key >= 'a10/000990' AND key < 'a11/000010'",
    )
    .await;
    assert_eq!((rows, scanned), (20, 20));

    // An inexact filter (more wildcards after the prefix) still scans only the prefix.
    let (rows, scanned, _) =
        run(&engine, &loaded, "SELECT key FROM kv WHERE key LIKE 'p/%9'").await;
    assert_eq!((rows, scanned), (100, 1_000));

    let (rows, scanned, _) = run(&engine, &loaded, "SELECT key FROM kv LIMIT 10").await;
    assert_eq!((rows, scanned), (10, 10), "LIMIT stops the scan");
    let (rows, scanned, _) = run(
        &engine,
        &loaded,
        "SELECT key FROM kv WHERE key LIKE 'p/%' LIMIT 5",
    )
    .await;
    assert_eq!((rows, scanned), (5, 5));

    // COUNT(*) asks the scan for no column at all.
    let view = loaded.store.read(now_ms()).expect("read");
    let (mut stream, stats) = engine
        .stream(view, "SELECT COUNT(*) FROM kv")
        .await
        .expect("count");
    let batch = stream.next().await.expect("a batch").expect("count");
    let count = batch
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .expect("int64")
        .value(0);
    assert_eq!(count, 100_000);
    assert_eq!(stats.values_read(), 0);
    let plan = engine
        .query(&loaded.store, "EXPLAIN SELECT COUNT(*) FROM kv")
        .await
        .expect("explain");
    let text = format!("{:?}", plan.rows);
    assert!(
        text.contains("projection=[]"),
        "COUNT(*) projects no column: {text}"
    );
}
