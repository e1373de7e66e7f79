use aspen::api::SqlValue;

use crate::util::{dataset, engine};

/// A cell both engines can agree on.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

fn same(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (Cell::Real(x), Cell::Real(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        (Cell::Real(x), Cell::Int(y)) | (Cell::Int(y), Cell::Real(x)) => *x == *y as f64,
        _ => a == b,
    }
}

fn from_aspen(value: &SqlValue) -> Cell {
    match value {
        SqlValue::Null => Cell::Null,
        SqlValue::Bool(b) => Cell::Int(*b as i64),
        SqlValue::Int(i) => Cell::Int(*i),
        SqlValue::UInt(u) => Cell::Int(*u as i64),
        SqlValue::Float(f) => Cell::Real(*f),
        SqlValue::Text(s) => Cell::Text(s.clone()),
        SqlValue::Bytes(b) => Cell::Text(format!("{b:?}")),
    }
}

fn from_sqlite(value: rusqlite::types::Value) -> Cell {
    use rusqlite::types::Value;
    match value {
        Value::Null => Cell::Null,
        Value::Integer(i) => Cell::Int(i),
        Value::Real(f) => Cell::Real(f),
        Value::Text(s) => Cell::Text(s),
        Value::Blob(b) => Cell::Text(format!("{b:?}")),
    }
}

/// (DataFusion SQL, SQLite SQL when the dialects differ). Every query orders its rows.
const QUERIES: &[(&str, Option<&str>)] = &[
    // Pushed-down key filters, alone and combined.
    (
        "SELECT key, value, version FROM kv WHERE key = 'users/0001'",
        None,
    ),
    (
        "SELECT key, value FROM kv WHERE key IN ('users/0002', 'cfg/a', 'nope', 'orders/2026-03/00002', 'users/0010') ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key LIKE 'users/00%' ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key LIKE 'orders/2026-0_/%1' ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key LIKE '%/0042' ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key LIKE 'cfg/b' ORDER BY key",
        None,
    ),
    ("SELECT key FROM kv WHERE key < 'cfg/m' ORDER BY key", None),
    (
        "SELECT key, mod_revision FROM kv WHERE key <= 'orders/2026-01/00100' AND key > 'orders/2026-01' ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key >= 'users/0990' ORDER BY key",
        None,
    ),
    (
        "SELECT key, lease_id FROM kv WHERE key BETWEEN 'sess/' AND 'sess/050' ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key LIKE 'users/%' AND value LIKE '%blue%' AND key < 'users/0100' ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key = 'users/0001' OR key LIKE 'cfg/%' ORDER BY key",
        None,
    ),
    (
        "SELECT COUNT(*) FROM kv WHERE key > 'users/' AND key < 'users/0500' AND version = 1",
        None,
    ),
    // Counts and aggregates; TTL keys past their deadline are invisible.
    ("SELECT COUNT(*) FROM kv", None),
    ("SELECT COUNT(*) FROM kv WHERE key LIKE 'tmp/%'", None),
    (
        "SELECT COUNT(*), SUM(version), MIN(create_revision), MAX(mod_revision) FROM kv",
        None,
    ),
    (
        "SELECT AVG(version), COUNT(DISTINCT lease_id) FROM kv",
        None,
    ),
    (
        "SELECT max(key), min(key) FROM kv WHERE key LIKE 'sess/%'",
        None,
    ),
    // GROUP BY over a key segment.
    (
        "SELECT split_part(key, '/', 1) AS p, COUNT(*), SUM(length(value)) FROM kv GROUP BY p ORDER BY p NULLS FIRST",
        Some(
            "SELECT CASE WHEN instr(key, '/') > 0 THEN substr(key, 1, instr(key, '/') - 1) ELSE key END AS p, COUNT(*), SUM(length(value)) FROM kv GROUP BY p ORDER BY p NULLS FIRST",
        ),
    ),
    (
        "SELECT substr(key, 1, 14) AS month, COUNT(*), SUM(CAST(value AS BIGINT)) FROM kv WHERE key LIKE 'orders/%' GROUP BY month ORDER BY month",
        Some(
            "SELECT substr(key, 1, 14) AS month, COUNT(*), SUM(CAST(value AS INTEGER)) FROM kv WHERE key LIKE 'orders/%' GROUP BY month ORDER BY month",
        ),
    ),
    (
        "SELECT split_part(key, '/', 2) AS m, COUNT(*) FROM kv WHERE key LIKE 'orders/%' GROUP BY m HAVING COUNT(*) > 99 ORDER BY m",
        Some(
            "SELECT substr(key, 8, 7) AS m, COUNT(*) FROM kv WHERE key LIKE 'orders/%' GROUP BY m HAVING COUNT(*) > 99 ORDER BY m",
        ),
    ),
    (
        "SELECT lease_id, COUNT(*) FROM kv WHERE lease_id IS NOT NULL GROUP BY lease_id ORDER BY lease_id",
        None,
    ),
    (
        "SELECT CASE WHEN length(value) > 20 THEN 'long' ELSE 'short' END AS size, COUNT(*) FROM kv GROUP BY size ORDER BY size",
        None,
    ),
    // ORDER BY, LIMIT, OFFSET.
    (
        "SELECT key, version FROM kv WHERE version > 1 ORDER BY key",
        None,
    ),
    (
        "SELECT key FROM kv ORDER BY mod_revision DESC LIMIT 5",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key LIKE 'users/%' ORDER BY key LIMIT 7",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key LIKE 'users/%' ORDER BY key DESC LIMIT 3 OFFSET 2",
        None,
    ),
    // String functions.
    (
        "SELECT upper(key), lower(value), length(value), replace(value, ' ', '_') FROM kv WHERE key LIKE 'cfg/%' ORDER BY 1",
        None,
    ),
    (
        "SELECT key || '=' || value FROM kv WHERE key LIKE 'users/001%' ORDER BY 1",
        None,
    ),
    (
        "SELECT key FROM kv WHERE key NOT LIKE 'users/%' AND key NOT LIKE 'orders/%' ORDER BY key NULLS FIRST",
        None,
    ),
    // Keys and values that are not UTF-8 are NULL in `kv`.
    ("SELECT COUNT(*) FROM kv WHERE value IS NULL", None),
    (
        "SELECT COUNT(*), MIN(value) FROM kv WHERE key IS NULL",
        None,
    ),
    // Self-join.
    (
        "SELECT a.key, b.key FROM kv a JOIN kv b ON a.value = b.value AND a.key < b.key WHERE a.key LIKE 'cfg/%' ORDER BY 1, 2",
        None,
    ),
    // Timestamps and the leases table.
    (
        "SELECT key, CAST(expires_at AS BIGINT) FROM kv WHERE expires_at IS NOT NULL ORDER BY key LIMIT 20",
        Some("SELECT key, expires_at FROM kv WHERE expires_at IS NOT NULL ORDER BY key LIMIT 20"),
    ),
    ("SELECT id, ttl_ms, key_count FROM leases ORDER BY id", None),
];

// Proves the SQL engine answers like SQLite over the same data: ~35 queries covering every
// pushed-down filter form, LIKE with and without a literal prefix, aggregates, GROUP BY over
// key segments, ORDER BY/LIMIT/OFFSET, COUNT(*), string functions, NULL for non-UTF-8 bytes,
// expired TTL keys, leases and a self-join give the same rows in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_sqlite() {
    let data = dataset();
    let sqlite = data.sqlite();
    let engine = engine(|_| {});
    for (query, sqlite_query) in QUERIES {
        let ours = engine
            .query(&data.loaded.store, query)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(ours.truncated.is_none(), "{query}");
        let ours: Vec<Vec<Cell>> = ours
            .rows
            .iter()
            .map(|row| row.iter().map(from_aspen).collect())
            .collect();
        let theirs_sql = sqlite_query.unwrap_or(query);
        let mut statement = sqlite.prepare(theirs_sql).expect(theirs_sql);
        let width = statement.column_count();
        let theirs: Vec<Vec<Cell>> = statement
            .query_map([], |row| {
                (0..width)
                    .map(|i| row.get::<_, rusqlite::types::Value>(i).map(from_sqlite))
                    .collect()
            })
            .expect(theirs_sql)
            .collect::<Result<_, _>>()
            .expect(theirs_sql);
        assert!(!theirs.is_empty(), "{query}: the oracle returned no rows");
        assert_eq!(ours.len(), theirs.len(), "{query}: row counts differ");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
                "{query}: row {i} differs: {a:?} vs {b:?}"
            );
        }
    }
}
