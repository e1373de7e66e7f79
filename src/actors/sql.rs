//! SqlActor: owns the node's SQL engine and runs each query as its own task, so the mailbox
//! stays free (a ping answers while queries run) and a failing query cannot take the actor
//! down. The engine bounds concurrency, time, rows and memory (`crate::sql`). The caller
//! does the read barrier first for linearizable queries. Reached through its [`SqlHandle`].

use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::ActorKind;
use crate::api::{NodeId, SqlResult};
use crate::fault::Faults;
use crate::sql::{SqlEngine, SqlError, SqlLimits};
use crate::storage::Store;
use crate::sync::lock;

pub struct SqlActor;

pub struct SqlArgs {
    pub node_id: NodeId,
    pub store: Arc<Store>,
    pub limits: SqlLimits,
    pub faults: Faults,
    /// Where the actor publishes itself once it runs.
    pub handle: SqlHandle,
}

pub struct SqlState {
    handle: SqlHandle,
    node_id: NodeId,
    store: Arc<Store>,
    engine: Arc<SqlEngine>,
}

pub enum SqlMsg {
    /// Run a query on a snapshot taken when it starts.
    Query {
        sql: String,
        /// The key prefixes the client may read (`None`: every key).
        readable: Option<Vec<Vec<u8>>>,
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
        myself: ActorRef<SqlMsg>,
        args: SqlArgs,
    ) -> Result<SqlState, ActorProcessingErr> {
        args.faults.take_start_failure(ActorKind::Sql)?;
        let engine = SqlEngine::new(args.limits)?;
        *lock(&args.handle.actor) = Some(myself);
        Ok(SqlState {
            handle: args.handle,
            node_id: args.node_id,
            store: args.store,
            engine: Arc::new(engine),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SqlMsg>,
        state: &mut SqlState,
    ) -> Result<(), ActorProcessingErr> {
        lock(&state.handle.actor).take();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SqlMsg>,
        message: SqlMsg,
        state: &mut SqlState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SqlMsg::Query {
                sql,
                readable,
                reply,
            } => {
                let (engine, store) = (Arc::clone(&state.engine), Arc::clone(&state.store));
                let node = state.node_id.to_string();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let answer = engine.query_as(&store, &sql, readable.as_deref()).await;
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

/// The way to the SqlActor: cheap to clone, reaching the current incarnation (the actor
/// publishes itself when it starts and withdraws when it stops; an actor that failed answers
/// nothing until its restart publishes the new one).
#[derive(Debug, Clone, Default)]
pub struct SqlHandle {
    actor: Arc<Mutex<Option<ActorRef<SqlMsg>>>>,
}

/// Why a query got no answer from the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlUnavailable {
    #[error("the sql actor is not running")]
    NotRunning,
    #[error("sql actor: {0}")]
    Call(String),
}

impl SqlHandle {
    /// Runs `sql` on the SqlActor for a client that may read the keys under `readable`
    /// (`None`: every key); the outer error says the actor did not answer.
    pub async fn query(
        &self,
        sql: String,
        readable: Option<Vec<Vec<u8>>>,
    ) -> Result<Result<SqlResult, SqlError>, SqlUnavailable> {
        let actor = lock(&self.actor)
            .clone()
            .ok_or(SqlUnavailable::NotRunning)?;
        ractor::call!(actor, |reply| SqlMsg::Query {
            sql,
            readable,
            reply
        })
        .map_err(|e| SqlUnavailable::Call(e.to_string()))
    }
}
