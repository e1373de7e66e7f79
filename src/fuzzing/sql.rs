//! Fuzz target `sql`: the input bytes choose a statement from a small grammar of the shapes
//! that stress a SQL engine (long set-operation chains, nested subqueries and parentheses,
//! long `IN` lists and `CASE` chains, nested `CAST`s, string functions with huge counts),
//! which then runs on a node's SQL engine over a small store. Any answer is fine, and so is
//! one `sql:` error line; a panic, an abort (stack overflow) or a hang is the finding.

use crate::api::WriteOp;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload};

use crate::api::Put;
use crate::command::{Command, Entry, LogId, Request};
use crate::limits::SQL_TEXT_BYTES_MAX;
use crate::sql::{SqlEngine, SqlLimits};
use crate::storage::{Store, StoreOptions, StoreWrite};

/// Text past this is refused whatever follows, so the grammar stops growing a statement here.
const STATEMENT_BYTES_MAX: usize = 2 * SQL_TEXT_BYTES_MAX;
/// Deepest nesting of productions; deeper ones become leaves (repetition gives the depth).
const DEPTH_MAX: u32 = 6;

/// The statement `data` describes. Missing bytes read as zero, which picks the leaves.
pub fn statement(data: &[u8]) -> String {
    let mut grammar = Grammar {
        data,
        at: 0,
        out: String::new(),
    };
    grammar.query(0);
    grammar.out
}

/// Runs the statement of `data` and checks the answer is a result or one `sql:` line.
pub fn run(data: &[u8]) {
    let statement = statement(data);
    let (engine, store, runtime) = target();
    let answer = runtime.block_on(engine.query(store, &statement));
    if let Err(error) = answer {
        let line = error.to_string();
        let shown: String = statement.chars().take(200).collect();
        assert!(
            line.starts_with("sql: ") && !line.contains('\n'),
            "not one sql: line for {shown}: {line}"
        );
        assert!(
            !line.contains("query task failed"),
            "the query panicked for {shown}: {line}"
        );
    }
}

/// One engine, store and runtime for every input: as a node has them.
fn target() -> &'static (SqlEngine, Arc<Store>, tokio::runtime::Runtime) {
    static TARGET: OnceLock<(SqlEngine, Arc<Store>, tokio::runtime::Runtime)> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let engine = SqlEngine::new(SqlLimits {
            max_concurrent: 1,
            timeout: Duration::from_secs(5),
            row_limit: 1_000,
            memory_bytes: 64 << 20,
        })
        .expect("an engine");
        let mut options = StoreOptions::in_memory();
        options.cache_bytes = 4 << 20;
        let store = Store::open(&options).expect("an in-memory store");
        let entries: Vec<Entry> = (1..=50u64)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
                payload: EntryPayload::Normal(Request {
                    now_ms: 1,
                    command: Command::Write(WriteOp::Put(Put::new(
                        format!("k/{i}"),
                        format!("value {i}"),
                    ))),
                }),
            })
            .collect();
        store.apply(&entries).expect("apply the fixture");
        (engine, Arc::new(store), runtime)
    })
}

struct Grammar<'a> {
    data: &'a [u8],
    at: usize,
    out: String,
}

const COLUMNS: [&str; 6] = [
    "key",
    "value",
    "version",
    "mod_revision",
    "create_revision",
    "lease_id",
];
const OPERATORS: [&str; 10] = [
    " + ", " - ", " * ", " / ", " % ", " || ", " = ", " < ", " AND ", " OR ",
];
const SET_OPERATIONS: [&str; 4] = [" UNION ALL ", " UNION ", " EXCEPT ", " INTERSECT "];

impl Grammar<'_> {
    fn byte(&mut self) -> u8 {
        let byte = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }

    /// A repetition count, 0 to 65,535.
    fn count(&mut self) -> usize {
        u16::from_be_bytes([self.byte(), self.byte()]) as usize
    }

    /// A large number for function arguments, 0 to 4,294,967,295.
    fn number(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn full(&self) -> bool {
        self.out.len() > STATEMENT_BYTES_MAX
    }

    fn push(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// Runs `body` for each of `items`, stopping once the statement is long enough to be
    /// refused whatever follows.
    fn each(&mut self, items: impl Iterator<Item = usize>, mut body: impl FnMut(&mut Self, usize)) {
        for item in items {
            if self.full() {
                return;
            }
            body(self, item);
        }
    }

    /// `count` times `text`.
    fn push_times(&mut self, text: &str, count: usize) {
        self.each(0..count, |grammar, _| grammar.push(text));
    }

    /// A query of one column named `x`.
    fn query(&mut self, depth: u32) {
        if depth >= DEPTH_MAX {
            return self.select(depth);
        }
        match self.byte() % 6 {
            0 => self.select(depth),
            1 => {
                let (terms, operation) = (self.count(), self.byte());
                let operation = SET_OPERATIONS[usize::from(operation) % SET_OPERATIONS.len()];
                self.select(depth + 1);
                self.each(0..terms, |grammar, _| {
                    grammar.push(operation);
                    grammar.select(depth + 1);
                });
            }
            2 => {
                let levels = self.count();
                self.push_times("SELECT x FROM (", levels);
                self.query(depth + 1);
                self.push_times(") AS t", levels);
            }
            3 => {
                let levels = self.count();
                self.push_times("SELECT key AS x FROM kv WHERE key IN (", levels);
                self.push("SELECT key AS x FROM kv");
                self.push_times(")", levels);
            }
            4 => {
                let levels = self.count();
                self.push_times("(", levels);
                self.query(depth + 1);
                self.push_times(")", levels);
            }
            _ => {
                self.push("WITH c AS (");
                self.query(depth + 1);
                self.push(") SELECT x FROM c");
            }
        }
    }

    fn select(&mut self, depth: u32) {
        let from = self.byte() % 4;
        self.push("SELECT ");
        self.expr(depth + 1);
        self.push(" AS x");
        match from {
            0 => {}
            1 => self.push(" FROM kv"),
            2 => {
                self.push(" FROM kv WHERE ");
                self.expr(depth + 1);
            }
            _ => {
                let limit = self.byte();
                self.push(&format!(" FROM kv ORDER BY 1 LIMIT {limit}"));
            }
        }
    }

    fn expr(&mut self, depth: u32) {
        if depth >= DEPTH_MAX + 2 || self.full() {
            return self.push("0");
        }
        match self.byte() % 12 {
            0 => {
                let value = self.byte();
                self.push(&value.to_string());
            }
            1 => {
                let column = COLUMNS[usize::from(self.byte()) % COLUMNS.len()];
                self.push(column);
            }
            2 => {
                let terms = self.count();
                self.expr(depth + 1);
                self.each(0..terms, |grammar, _| {
                    let operator = OPERATORS[usize::from(grammar.byte()) % OPERATORS.len()];
                    grammar.push(operator);
                    grammar.expr(depth + 1);
                });
            }
            3 => self.function(depth),
            4 => {
                let branches = self.count();
                self.push("CASE");
                self.each(0..=branches, |grammar, branch| {
                    grammar.push(&format!(" WHEN version = {branch} THEN "));
                    grammar.expr(depth + 1);
                });
                self.push(" ELSE 0 END");
            }
            5 => {
                let items = self.count();
                self.push("key IN ('k/0'");
                self.each(1..=items, |grammar, item| {
                    grammar.push(&format!(", 'k/{item}'"));
                });
                self.push(")");
            }
            6 => {
                let levels = self.count();
                self.push_times("(", levels);
                self.expr(depth + 1);
                self.push_times(")", levels);
            }
            7 => {
                self.push("(");
                self.query(depth + 1);
                self.push(")");
            }
            8 => {
                let value = self.byte();
                self.push(&format!("'k/{value}'"));
            }
            9 => {
                let aggregate = ["COUNT(*)", "MAX(key)", "string_agg(value, ',')"];
                let choice = usize::from(self.byte()) % aggregate.len();
                self.push(aggregate[choice]);
            }
            10 => {
                // A cast to no type at all is the syntax error that sqlparser reparses.
                let levels = self.count();
                let types = ["BIGINT", "VARCHAR", "DOUBLE", "BOOLEAN", ""];
                let target = types[usize::from(self.byte()) % types.len()];
                self.push_times("CAST(", levels.max(1));
                self.expr(depth + 1);
                self.push_times(&format!(" AS {target})"), levels.max(1));
            }
            _ => {
                self.push("substring(");
                self.expr(depth + 1);
                let start = self.byte();
                self.push(&format!(" FROM {start})"));
            }
        }
    }

    /// A string function; the amplifying ones get a large count.
    fn function(&mut self, depth: u32) {
        let choice = self.byte() % 6;
        match choice {
            0..=2 => {
                self.push(["repeat", "lpad", "rpad"][usize::from(choice)]);
                self.push("(");
                self.expr(depth + 1);
                let count = self.number();
                self.push(&format!(", {count})"));
            }
            3 => {
                self.push("replace(");
                self.expr(depth + 1);
                self.push(", ");
                self.expr(depth + 1);
                self.push(", ");
                self.expr(depth + 1);
                self.push(")");
            }
            4 => {
                self.push("levenshtein(");
                self.expr(depth + 1);
                self.push(", ");
                self.expr(depth + 1);
                self.push(")");
            }
            _ => {
                self.push("upper(concat(");
                self.expr(depth + 1);
                self.push(", ");
                self.expr(depth + 1);
                self.push("))");
            }
        }
    }
}
