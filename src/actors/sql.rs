//! SqlActor: owns the node's SQL engine and runs each query as its own task, so the mailbox
//! stays free (a ping answers while queries run) and a failing query cannot take the actor
//! down. The engine bounds concurrency, time, rows and memory (`crate::sql`). The caller
//! does the read barrier first for linearizable queries.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::ActorKind;
use crate::api::{NodeId, SqlResult};
use crate::fault::Faults;
use crate::sql::{SqlEngine, SqlError, SqlLimits};
use crate::storage::Store;

pub struct SqlActor;

pub struct SqlArgs {
    pub node_id: NodeId,
    pub store: Arc<Store>,
    pub limits: SqlLimits,
    pub faults: Faults,
}

pub struct SqlState {
    node_id: NodeId,
    store: Arc<Store>,
    engine: Arc<SqlEngine>,
}

pub enum SqlMsg {
    /// Run a query on a snapshot taken when it starts.
    Query {
        sql: String,
        reply: RpcReplyPort<Result<SqlResult, SqlError>>,
    },
    Ping(RpcReplyPort<()>),
    /// Fault injection: panic inside the handler.
    Panic(String),
}

impl Actor for SqlActor {
    type Msg = SqlMsg;
    type State = SqlState;
    type Arguments = SqlArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SqlMsg>,
        args: SqlArgs,
    ) -> Result<SqlState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Sql)?;
        let engine = SqlEngine::new(args.limits)?;
        Ok(SqlState {
            node_id: args.node_id,
            store: args.store,
            engine: Arc::new(engine),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SqlMsg>,
        message: SqlMsg,
        state: &mut SqlState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SqlMsg::Query { sql, reply } => {
                let (engine, store) = (Arc::clone(&state.engine), Arc::clone(&state.store));
                let node = state.node_id.to_string();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let answer = engine.query(&store, &sql).await;
                    record(node, started, &answer);
                    let _ = reply.send(answer);
                });
            }
            SqlMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            SqlMsg::Panic(reason) => panic!("sql: injected panic: {reason}"),
        }
        Ok(())
    }
}

fn record(node: String, started: std::time::Instant, answer: &Result<SqlResult, SqlError>) {
    use crate::metrics::{SQL_QUERIES, SQL_QUERY_SECONDS, SQL_ROWS_SCANNED};
    let outcome = match answer {
        Ok(result) if result.truncated.is_some() => "truncated",
        Ok(_) => "ok",
        Err(SqlError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
    if let Ok(result) = answer {
        metrics::counter!(SQL_ROWS_SCANNED, "node_id" => node.clone())
            .increment(result.rows_scanned);
    }
    metrics::histogram!(SQL_QUERY_SECONDS, "node_id" => node.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(SQL_QUERIES, "node_id" => node, "outcome" => outcome).increment(1);
}
