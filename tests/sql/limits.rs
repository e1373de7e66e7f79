use aspen::api::WriteOp;
use std::time::Duration;

use aspen::api::{KeyRange, Put};
use aspen::command::Command;
use aspen::sql::SqlError;
use futures::StreamExt;

use crate::util::{Loaded, engine, now_ms};

fn load(keys: u64) -> Loaded {
    let mut loaded = Loaded::new();
    let now = now_ms();
    for i in 0..keys {
        loaded.run(
            now,
            Command::Write(WriteOp::Put(Put::new(format!("k/{i:06}"), format!("v{i}")))),
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
    assert_eq!(result.rows[0][0], aspen::api::SqlValue::Int(1_000));
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
    assert_eq!(count.rows[0][0], aspen::api::SqlValue::Int(10));
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
    loaded.run(
        now,
        Command::Write(WriteOp::DeleteRange(KeyRange::prefix(b"k/"))),
    );
    for i in 0..100 {
        loaded.run(
            now,
            Command::Write(WriteOp::Put(Put::new(format!("new/{i}"), "later"))),
        );
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
    assert_eq!(now.rows[0][0], aspen::api::SqlValue::Int(100));
}

/// What a hostile query must get back.
#[derive(Debug)]
pub enum Expect {
    /// An answer of this many rows.
    Rows(usize),
    /// One `sql:` line containing this.
    Error(&'static str),
}

/// The query shapes that aborted a node or grew without bound, each with what it must get.
/// Shared with the node test (`tests/sql/node.rs`).
pub fn hostile_queries() -> Vec<(String, String, Expect)> {
    let union = |terms: usize| vec!["SELECT 1 AS x"; terms].join(" UNION ALL ");
    let nested_from = |levels: usize| {
        format!(
            "{}SELECT 1 AS x{}",
            "SELECT x FROM (".repeat(levels),
            ") AS t".repeat(levels)
        )
    };
    let nested_in = |levels: usize| {
        format!(
            "SELECT COUNT(*) FROM kv WHERE key IN ({}SELECT key FROM kv{}",
            "SELECT key FROM kv WHERE key IN (".repeat(levels - 1),
            ")".repeat(levels)
        )
    };
    let in_list = (0..5_000)
        .map(|i| format!("'k/{i:06}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let case = (0..2_000)
        .map(|i| format!("WHEN version = {i} THEN {i}"))
        .collect::<Vec<_>>()
        .join(" ");
    // WITH c0 AS (SELECT 1 AS x), c1 AS (SELECT x FROM c0 UNION ALL SELECT 1 ...), ...
    let chained_ctes = |ctes: usize, terms: usize| {
        let ctes = (1..=ctes)
            .map(|i| {
                let rest = " UNION ALL SELECT 1".repeat(terms - 1);
                format!("c{i} AS (SELECT x FROM c{}{rest})", i - 1)
            })
            .collect::<Vec<_>>();
        format!(
            "WITH c0 AS (SELECT 1 AS x), {} SELECT COUNT(*) FROM c{}",
            ctes.join(", "),
            ctes.len()
        )
    };
    let plus = vec!["1"; 5_000].join(" + ");
    let casts = |levels: usize, target: &str| {
        format!(
            "SELECT {}1{}",
            "CAST(".repeat(levels),
            format!(" AS {target})").repeat(levels)
        )
    };
    let parens = format!("SELECT {}1{}", "(".repeat(400), ")".repeat(400));
    use Expect::{Error, Rows};
    vec![
        ("UNION ALL of 256".into(), union(256), Rows(256)),
        (
            "UNION ALL of 600".into(),
            union(600),
            Error("a query joins more than 256 SELECTs with UNION, EXCEPT or INTERSECT"),
        ),
        (
            "INTERSECT of 128".into(),
            vec!["SELECT 1 AS x"; 128].join(" INTERSECT "),
            Error("the query plan nests more than 100 operators"),
        ),
        (
            "2,000 chained CTEs".into(),
            chained_ctes(2_000, 1),
            Error("or defines more than 256 CTEs"),
        ),
        (
            "6 chained CTEs of 250-term unions".into(),
            chained_ctes(6, 250),
            Error("the query plan is nested more than 1000 levels deep"),
        ),
        (
            "UNION ALL of 5,000".into(),
            union(5_000),
            Error("the query text is 119989 bytes, over the limit of 65536"),
        ),
        ("11 nested FROM subqueries".into(), nested_from(11), Rows(1)),
        (
            "20 nested IN subqueries".into(),
            nested_in(20),
            Error("the query nests subqueries more than 12 levels deep"),
        ),
        (
            "400 nested FROM subqueries".into(),
            nested_from(400),
            Error("nests expressions or subqueries more than 50 levels deep"),
        ),
        ("10 nested IN subqueries".into(), nested_in(10), Rows(1)),
        (
            "400 nested IN subqueries".into(),
            nested_in(400),
            Error("nests expressions or subqueries more than 50 levels deep"),
        ),
        (
            "IN list of 5,000".into(),
            format!("SELECT key FROM kv WHERE key IN ({in_list})"),
            Rows(100),
        ),
        (
            "CASE of 2,000 branches".into(),
            format!("SELECT CASE {case} ELSE 0 END FROM kv"),
            Rows(100),
        ),
        (
            "repeat with a huge count".into(),
            "SELECT repeat('x', 2000000000)".into(),
            Error("repeat() would build more than the SQL memory limit"),
        ),
        (
            "lpad with a huge length".into(),
            "SELECT lpad('x', 2000000000, 'ab')".into(),
            Error("lpad() would build more than the SQL memory limit"),
        ),
        (
            "replace multiplying a value".into(),
            "SELECT replace(repeat('ab', 60000), 'a', repeat('b', 60000))".into(),
            Error("replace() would build more than the SQL memory limit"),
        ),
        (
            "repeat per row".into(),
            "SELECT repeat(value, version) FROM kv".into(),
            Rows(100),
        ),
        (
            "5,000 additions".into(),
            format!("SELECT {plus}"),
            Error("the query nests expressions more than 256 levels deep"),
        ),
        ("6 nested CASTs".into(), casts(6, "BIGINT"), Rows(1)),
        (
            "48 nested CASTs".into(),
            casts(48, "BIGINT"),
            Error("nests special forms such as CAST( or SUBSTRING( more than 6 deep"),
        ),
        (
            "22 nested CASTs missing their type".into(),
            casts(22, ""),
            Error("nests special forms such as CAST( or SUBSTRING( more than 6 deep"),
        ),
        (
            "6 nested CASTs missing their type".into(),
            casts(6, ""),
            Error("Expected: a data type name"),
        ),
        (
            "400 nested parentheses".into(),
            parens,
            Error("nests expressions or subqueries more than 50 levels deep"),
        ),
    ]
}

/// Checks `answer` is what `expect` says, as one line for an error.
pub fn check_hostile<T: std::fmt::Debug>(
    name: &str,
    answer: Result<Vec<T>, String>,
    expect: &Expect,
) {
    match (answer, expect) {
        (Ok(rows), Expect::Rows(count)) => assert_eq!(rows.len(), *count, "{name}"),
        (Err(line), Expect::Error(part)) => assert!(
            line.starts_with("sql: ") && !line.contains('\n') && line.contains(part),
            "{name}: expected one sql: line with {part:?}, got {line}"
        ),
        (answer, expect) => panic!("{name}: expected {expect:?}, got {answer:?}"),
    }
}

// Proves each hostile query shape (long UNION ALL chains, deep nesting, long IN lists and
// CASE chains, string functions asked to build gigabytes) gets an answer or one `sql:` line
// naming the limit it hit, and that the engine answers the next query. A stack overflow
// aborts this test binary; an unbounded `repeat` would allocate 2 GB before answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_get_an_answer_or_one_error_line() {
    let loaded = load(100);
    let engine = engine(|_| {});
    for (name, sql, expect) in hostile_queries() {
        let answer = engine
            .query(&loaded.store, &sql)
            .await
            .map(|result| result.rows)
            .map_err(|error| error.to_string());
        check_hostile(&name, answer, &expect);
    }
    let repeated = engine
        .query(&loaded.store, "SELECT repeat('ab', 3), lpad('x', 3, '-')")
        .await
        .unwrap();
    assert_eq!(
        repeated.rows,
        vec![vec![
            aspen::api::SqlValue::Text("ababab".into()),
            aspen::api::SqlValue::Text("--x".into())
        ]]
    );
    let count = engine
        .query(&loaded.store, "SELECT COUNT(*) FROM kv")
        .await
        .unwrap();
    assert_eq!(count.rows[0][0], aspen::api::SqlValue::Int(100));
}
