//! The `history` table: every event kept, in revision order, with revision filters.

use aspen::api::{Put, SqlValue, WriteOp};
use aspen::command::Command;

use crate::util::{Loaded, engine};

/// The rows of `sql` as text (NULL as "-").
async fn rows(loaded: &Loaded, sql: &str) -> Vec<String> {
    let result = engine(|_| {}).query(&loaded.store, sql).await.expect(sql);
    result
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|value| match value {
                    SqlValue::Null => "-".to_string(),
                    SqlValue::Int(n) => n.to_string(),
                    SqlValue::UInt(n) => n.to_string(),
                    SqlValue::Text(text) => text.clone(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

// Proves the history table lists every event in revision order (its kind, the value after it,
// the value it replaced, the record's version), and that filters on revision (=, >=, < with
// the number on either side) return exactly the events they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_table_lists_events_in_revision_order() {
    let mut loaded = Loaded::new();
    let put = |key: &str, value: &str| Command::Write(WriteOp::Put(Put::new(key, value)));
    loaded.run(1, put("a", "1"));
    loaded.run(2, put("b", "1"));
    loaded.run(3, put("a", "2"));
    let delete = WriteOp::Delete {
        key: b"a".to_vec(),
        prev_kv: false,
    };
    loaded.run(4, Command::Write(delete));
    loaded.flush();
    let select = "SELECT revision, number, key, kind, value, prev_value, version FROM history";
    assert_eq!(
        rows(&loaded, &format!("{select} ORDER BY revision, number")).await,
        [
            "1 0 a PUT 1 - 1",
            "2 0 b PUT 1 - 1",
            "3 0 a PUT 2 1 2",
            "4 0 a DELETE - 2 -",
        ]
    );
    let filtered = |filter: &str| format!("{select} WHERE {filter} ORDER BY revision");
    assert_eq!(
        rows(&loaded, &filtered("revision >= 3")).await,
        ["3 0 a PUT 2 1 2", "4 0 a DELETE - 2 -"]
    );
    assert_eq!(
        rows(&loaded, &filtered("revision = 2")).await,
        ["2 0 b PUT 1 - 1"]
    );
    assert_eq!(
        rows(&loaded, &filtered("3 > revision AND key = 'a'")).await,
        ["1 0 a PUT 1 - 1"]
    );
}

// Proves filters on the history's `key` (=, LIKE 'prefix%', IN, with a revision filter too)
// return exactly the events of those keys, and a client that may read only some prefixes
// sees only their events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_and_grants_choose_the_events_of_some_keys() {
    let mut loaded = Loaded::new();
    let put = |key: &str, value: &str| Command::Write(WriteOp::Put(Put::new(key, value)));
    loaded.run(1, put("a/1", "x"));
    loaded.run(2, put("b/1", "x"));
    loaded.run(3, put("a/2", "x"));
    loaded.run(4, put("a/1", "y"));
    loaded.run(5, put("c", "x"));
    loaded.flush();
    let select = "SELECT revision, key, value FROM history";
    let filtered = |filter: &str| format!("{select} WHERE {filter} ORDER BY revision");
    assert_eq!(
        rows(&loaded, &filtered("key = 'a/1'")).await,
        ["1 a/1 x", "4 a/1 y"]
    );
    assert_eq!(
        rows(&loaded, &filtered("key LIKE 'a/%'")).await,
        ["1 a/1 x", "3 a/2 x", "4 a/1 y"]
    );
    assert_eq!(
        rows(&loaded, &filtered("key IN ('c', 'b/1') AND revision > 1")).await,
        ["2 b/1 x", "5 c x"]
    );
    assert_eq!(
        rows(&loaded, &filtered("key = 'a/1' AND revision < 4")).await,
        ["1 a/1 x"]
    );
    assert!(rows(&loaded, &filtered("key = 'nothing'")).await.is_empty());

    let granted = engine(|_| {})
        .query_as(
            &loaded.store,
            &format!("{select} ORDER BY revision"),
            Some(&[b"a/".to_vec()]),
        )
        .await
        .unwrap();
    let keys: Vec<String> = granted
        .rows
        .iter()
        .map(|row| format!("{:?}", row[1]))
        .collect();
    assert_eq!(keys, [r#"Text("a/1")"#, r#"Text("a/2")"#, r#"Text("a/1")"#]);
}
