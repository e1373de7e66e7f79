use std::time::Duration;

use aspen::sql::SqlError;
use aspen::storage::{Command, KeyRange, Put};
use futures::StreamExt;

use crate::util::{Loaded, engine, now_ms};

fn load(keys: u64) -> Loaded {
    let mut loaded = Loaded::new();
    let now = now_ms();
    for i in 0..keys {
        loaded.run(
            now,
            Command::Put(Put::new(format!("k/{i:06}"), format!("v{i}"))),
        );
    }
    loaded.flush();
    loaded
}

/// A cross join of 1,000 keys three times over, 10^9 rows through a filter: seconds of work,
/// far longer than the timeout here.
const SLOW: &str =
    "SELECT COUNT(*) FROM kv a, kv b, kv c WHERE a.version + b.version + c.version > 0";

// Proves the row limit truncates an answer and says so, and that an answer within it is not
// flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_limit_truncates_and_says_so() {
    let loaded = load(1_000);
    let engine = engine(|l| l.row_limit = 100);
    let result = engine
        .query(&loaded.store, "SELECT key FROM kv")
        .await
        .unwrap();
    assert_eq!(result.rows.len(), 100);
    assert_eq!(
        result.truncated.as_deref(),
        Some("row limit of 100 reached")
    );
    let result = engine
        .query(&loaded.store, "SELECT key FROM kv LIMIT 100")
        .await
        .unwrap();
    assert_eq!((result.rows.len(), result.truncated), (100, None));
}

// Proves the timeout stops a slow query with a clear error, that a query waiting for a slot
// counts its wait against its deadline (max_concurrent = 1), and that the slow query really
// stopped: the next query, sent right after, gets the only slot within its own deadline
// (a query that went on computing would hold the slot for seconds more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_a_slow_query_and_bounds_the_wait_for_a_slot() {
    let loaded = load(1_000);
    let engine = std::sync::Arc::new(engine(|l| {
        l.timeout = Duration::from_millis(1_500);
        l.max_concurrent = 1;
    }));
    let slow = tokio::spawn({
        let (engine, store) = (engine.clone(), loaded.store.clone());
        async move { engine.query(&store, SLOW).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while engine.running() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow query never started"
        );
        tokio::task::yield_now().await;
    }
    let view = loaded.store.read(now_ms()).unwrap();
    let waiting = engine
        .query_within(view, "SELECT 1", Duration::from_millis(100))
        .await;
    assert_eq!(
        waiting,
        Err(SqlError::Timeout { ms: 100 }),
        "no slot while the slow query runs"
    );
    let slow = slow.await.unwrap();
    assert_eq!(slow, Err(SqlError::Timeout { ms: 1_500 }));
    assert_eq!(
        slow.unwrap_err().to_string(),
        "sql: query exceeded its timeout of 1500 ms"
    );
    let result = engine
        .query(&loaded.store, "SELECT COUNT(*) FROM kv")
        .await
        .unwrap();
    assert_eq!(result.rows[0][0], aspen::sql::SqlValue::Int(1_000));
}

// Proves SQL only reads: DDL, DML, COPY, SET and the like are refused with an error that says
// so, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_query_is_refused() {
    let loaded = load(10);
    let engine = engine(|_| {});
    let out = tempfile::tempdir().unwrap();
    let copy_to = out.path().join("copy.csv");
    let statements = [
        "INSERT INTO kv (key, value) VALUES ('a', 'b')".to_string(),
        "UPDATE kv SET value = 'x'".to_string(),
        "DELETE FROM kv".to_string(),
        "CREATE TABLE t (a INT)".to_string(),
        "CREATE VIEW v AS SELECT * FROM kv".to_string(),
        "DROP TABLE kv".to_string(),
        format!("COPY (SELECT * FROM kv) TO '{}'", copy_to.display()),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'".to_string(),
    ];
    for statement in &statements {
        match engine.query(&loaded.store, statement).await {
            Err(SqlError::ReadOnly(message)) => {
                assert!(!message.contains('\n'), "{message}");
            }
            other => panic!("{statement}: expected a read-only refusal, got {other:?}"),
        }
    }
    assert!(!copy_to.exists(), "COPY wrote a file");
    let count = engine
        .query(&loaded.store, "SELECT COUNT(*) FROM kv")
        .await
        .unwrap();
    assert_eq!(count.rows[0][0], aspen::sql::SqlValue::Int(10));
    // A bad query is one clear line naming the problem.
    let error = engine
        .query(&loaded.store, "SELECT nope FROM kv")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("sql: ") && error.contains("nope") && !error.contains('\n'),
        "{error}"
    );
}

// Proves a query reads one snapshot: keys deleted and written while its stream is open (the
// scan is paused mid-table) do not show up in its answer, which is the state at its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reads_one_snapshot_while_writes_go_on() {
    let mut loaded = load(30_000);
    let engine = engine(|_| {});
    let view = loaded.store.read(now_ms()).unwrap();
    let (mut stream, _) = engine
        .stream(view, "SELECT key, value FROM kv")
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() < 30_000, "the scan is still running");
    let now = now_ms();
    loaded.run(now, Command::DeleteRange(KeyRange::prefix(b"k/")));
    for i in 0..100 {
        loaded.run(now, Command::Put(Put::new(format!("new/{i}"), "later")));
    }
    loaded.flush();
    let mut rows = first.num_rows();
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        assert!(keys.iter().all(|k| k.unwrap().starts_with("k/")));
        rows += batch.num_rows();
    }
    assert_eq!(rows, 30_000);
    let now = engine
        .query(&loaded.store, "SELECT COUNT(*) FROM kv")
        .await
        .unwrap();
    assert_eq!(now.rows[0][0], aspen::sql::SqlValue::Int(100));
}
