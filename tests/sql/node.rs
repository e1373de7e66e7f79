use aspen::actors::ActorKind;
use aspen::api::{ClientError, Consistency, SqlValue};
use aspen::client::Error;
use aspen::testing::TestNode;

// Proves the SqlActor path of a real node over the client protocol: a linearizable query sees
// a write acknowledged just before it, a stale one answers locally, the configured row limit
// truncates and says so, a write statement comes back as a one-line `sql:` error, the
// `sql_actor` health check reports, and after the actor panics the supervisor restarts it
// and queries work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_through_the_sql_actor_of_a_node() {
    let node = TestNode::start(60, |config| config.sql.row_limit = 5).await;
    let client = aspen::testing::root_client(&[node.node.address()])
        .await
        .unwrap();
    for i in 0..10 {
        client.put(format!("t/{i}"), format!("{i}")).await.unwrap();
    }
    let written = client.put("t/last", "x").await.unwrap();
    let result = client
        .sql("SELECT COUNT(*), MAX(mod_revision) FROM kv WHERE key LIKE 't/%'")
        .await
        .unwrap();
    assert_eq!(
        result.rows,
        vec![vec![
            SqlValue::Int(11),
            SqlValue::Int(written.revision as i64)
        ]]
    );
    assert!(result.revision >= written.revision);
    let stale = client
        .sql_with("SELECT key FROM kv WHERE key = 't/3'", Consistency::Stale)
        .await
        .unwrap();
    assert_eq!(stale.rows, vec![vec![SqlValue::Text("t/3".into())]]);

    let truncated = client.sql("SELECT key FROM kv").await.unwrap();
    assert_eq!(truncated.rows.len(), 5);
    assert_eq!(
        truncated.truncated.as_deref(),
        Some("row limit of 5 reached")
    );

    match client.sql("DELETE FROM kv").await {
        Err(Error::Server(ClientError::Sql(message))) => {
            assert!(
                message.starts_with("sql: only queries are allowed"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    assert!(
        node.wait_until(|n| n
            .node
            .board
            .checks()
            .get("sql_actor")
            .is_some_and(|c| c.status == aspen::api::CheckStatus::Ok))
            .await,
        "sql_actor check reported ok"
    );
    let restarts = node.node.board.restarts(ActorKind::Sql);
    node.panic_actor(ActorKind::Sql);
    assert!(
        node.wait_until(|n| n.node.board.restarts(ActorKind::Sql) > restarts)
            .await
    );
    assert!(node.wait_serving().await);
    let after = client.sql("SELECT COUNT(*) FROM kv").await.unwrap();
    assert_eq!(after.rows, vec![vec![SqlValue::Int(11)]]);
    node.shutdown().await;
}

// Proves a node survives every hostile query shape sent as a client sends it (the 600-term
// UNION ALL that aborted a node with a stack overflow, 5,000 terms, deep nesting, huge
// `repeat`): each gets an answer or one `sql:` error line, and afterwards the same node
// still takes writes and answers queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_queries_leave_the_node_serving() {
    let node = TestNode::start(61, |_| {}).await;
    let client = aspen::testing::root_client(&[node.node.address()])
        .await
        .unwrap();
    for i in 0..100 {
        client
            .put(format!("k/{i:06}"), format!("v{i}"))
            .await
            .unwrap();
    }
    for (name, sql, expect) in crate::limits::hostile_queries() {
        let answer = match client.sql(&sql).await {
            Ok(result) => Ok(result.rows),
            Err(Error::Server(ClientError::Sql(line))) => Err(line),
            Err(other) => panic!("{name}: the node did not answer: {other:?}"),
        };
        crate::limits::check_hostile(&name, answer, &expect);
    }
    client.put("after", "still serving").await.unwrap();
    let after = client
        .sql("SELECT value FROM kv WHERE key = 'after'")
        .await
        .unwrap();
    assert_eq!(
        after.rows,
        vec![vec![SqlValue::Text("still serving".into())]]
    );
    node.shutdown().await;
}
