//! What a query may ask of the parser and planner, checked before each step can cost much:
//! the length of its text, how deep its special forms, expressions and subqueries nest, how
//! many SELECTs and CTEs one query joins, how deep its plan is, and how many yield
//! points its execution nests.
//!
//! sqlparser 0.62 parses a special form such as `CAST(...)` or `SUBSTRING(...)` twice when
//! the first try fails somewhere inside it (once as the special form, again as a function
//! call), so a failure under N nested forms costs 2^N parses: `CAST(` 22 times around
//! `1 AS` (150 bytes) took 18 s, 48 times around a valid `1 AS INT` (hitting the parser's
//! recursion limit) did not finish. Such forms may nest [`SQL_SPECIAL_FORMS_NESTED_MAX`] deep,
//! counted on the tokens before parsing.
//!
//! Planning is not interruptible: it runs within one poll of the query's task, so the
//! timeout cannot stop it, and DataFusion's planner and optimizer take time quadratic in the
//! depth of an expression or plan (a 5,000-term `1 + 1 + ...` took minutes in a debug
//! build). These limits bound that work; the recursion protection and the SQL threads' stacks
//! (see `SqlEngine::new`) keep the recursion within them from overflowing a stack.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNodeRecursion, TreeNodeVisitor};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::limits::{
    SQL_EXPR_DEPTH_MAX, SQL_PLAN_DEPTH_MAX, SQL_QUERY_DEPTH_MAX, SQL_QUERY_TERMS_MAX,
    SQL_SPECIAL_FORMS_NESTED_MAX, SQL_TEXT_BYTES_MAX, SQL_YIELD_POINTS_NESTED_MAX,
};
use crate::sql::SqlError;

/// Parses `sql` within the text limit, the parser's recursion limit and the expression
/// nesting limit.
pub fn parse(state: &SessionState, sql: &str) -> Result<Statement, SqlError> {
    if sql.len() > SQL_TEXT_BYTES_MAX {
        return Err(SqlError::Limit(format!(
            "the query text is {} bytes, over the limit of {SQL_TEXT_BYTES_MAX}",
            sql.len()
        )));
    }
    let parser = &state.config_options().sql_parser;
    check_special_forms(sql, parser.dialect.as_ref())?;
    let statement = match state.sql_to_statement(sql, &parser.dialect) {
        Ok(statement) => statement,
        Err(DataFusionError::SQL(error, _))
            if matches!(*error, ParserError::RecursionLimitExceeded) =>
        {
            return Err(SqlError::Limit(format!(
                "the query nests expressions or subqueries more than {} levels deep",
                parser.recursion_limit
            )));
        }
        Err(error) => return Err(error.into()),
    };
    check_nesting(&statement)?;
    Ok(statement)
}

/// The words sqlparser parses as a special form first and, when that fails, again as an
/// identifier or function call (`Parser::parse_expr_prefix_by_reserved_word`).
const SPECIAL_FORMS: [Keyword; 44] = [
    Keyword::ARRAY,
    Keyword::BOX,
    Keyword::CASE,
    Keyword::CAST,
    Keyword::CEIL,
    Keyword::CIRCLE,
    Keyword::CONVERT,
    Keyword::CURRENT_CATALOG,
    Keyword::CURRENT_DATE,
    Keyword::CURRENT_TIME,
    Keyword::CURRENT_TIMESTAMP,
    Keyword::CURRENT_USER,
    Keyword::EXISTS,
    Keyword::EXTRACT,
    Keyword::FALSE,
    Keyword::FLOOR,
    Keyword::INTERVAL,
    Keyword::LAMBDA,
    Keyword::LINE,
    Keyword::LOCALTIME,
    Keyword::LOCALTIMESTAMP,
    Keyword::LSEG,
    Keyword::MAP,
    Keyword::MATCH,
    Keyword::NOT,
    Keyword::NULL,
    Keyword::OVERLAY,
    Keyword::PATH,
    Keyword::POINT,
    Keyword::POLYGON,
    Keyword::POSITION,
    Keyword::PRIOR,
    Keyword::SAFE_CAST,
    Keyword::SELECT,
    Keyword::SESSION_USER,
    Keyword::STRUCT,
    Keyword::SUBSTR,
    Keyword::SUBSTRING,
    Keyword::TRIM,
    Keyword::TRUE,
    Keyword::TRY_CAST,
    Keyword::TRY_CONVERT,
    Keyword::USER,
    Keyword::WITH,
];

/// Refuses text where a parenthesis opened right after a special-form word (`CAST(`) sits
/// inside more than [`SQL_SPECIAL_FORMS_NESTED_MAX`] others. Counted on tokens (linear), so
/// quotes and comments do not count.
fn check_special_forms(sql: &str, dialect: &str) -> Result<(), SqlError> {
    let dialect = dialect_from_str(dialect)
        .ok_or_else(|| SqlError::Query(format!("unknown SQL dialect {dialect}")))?;
    let tokens = Tokenizer::new(dialect.as_ref(), sql)
        .tokenize()
        .map_err(|error| SqlError::Query(format!("SQL error: {error}")))?;
    // One entry per open parenthesis: whether a special-form word opened it.
    let mut open: Vec<bool> = Vec::new();
    let (mut special, mut previous) = (0usize, None::<&Token>);
    for token in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        match token {
            Token::LParen => {
                let is_special = matches!(previous,
                    Some(Token::Word(word)) if SPECIAL_FORMS.contains(&word.keyword));
                open.push(is_special);
                special += usize::from(is_special);
                if special > SQL_SPECIAL_FORMS_NESTED_MAX {
                    return Err(SqlError::Limit(format!(
                        "the query nests special forms such as CAST( or SUBSTRING( more than \
                         {SQL_SPECIAL_FORMS_NESTED_MAX} deep"
                    )));
                }
            }
            Token::RParen => special -= usize::from(open.pop() == Some(true)),
            _ => {}
        }
        previous = Some(token);
    }
    Ok(())
}

/// Refuses expressions nested deeper than [`SQL_EXPR_DEPTH_MAX`] (a chain of `+`, `OR`, `||`
/// nests one level per operator; the parser lets such chains through its recursion limit),
/// queries nested deeper than [`SQL_QUERY_DEPTH_MAX`], and more than [`SQL_QUERY_TERMS_MAX`]
/// SELECTs or CTEs in one query.
/// The walk stops at the first level over the limit, so it never recurses deeper itself.
fn check_nesting(statement: &Statement) -> Result<(), SqlError> {
    /// Which limit the walk stopped at.
    enum Over {
        Expressions,
        Queries,
        Terms,
    }
    struct Nesting {
        expressions: usize,
        queries: usize,
    }
    impl Visitor for Nesting {
        type Break = Over;

        fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Over> {
            self.expressions += 1;
            if self.expressions > SQL_EXPR_DEPTH_MAX {
                return ControlFlow::Break(Over::Expressions);
            }
            ControlFlow::Continue(())
        }

        fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<Over> {
            self.expressions -= 1;
            ControlFlow::Continue(())
        }

        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Over> {
            self.queries += 1;
            if self.queries > SQL_QUERY_DEPTH_MAX {
                return ControlFlow::Break(Over::Queries);
            }
            let ctes = query.with.as_ref().map_or(0, |with| with.cte_tables.len());
            if ctes > SQL_QUERY_TERMS_MAX || set_terms(&query.body) > SQL_QUERY_TERMS_MAX {
                return ControlFlow::Break(Over::Terms);
            }
            ControlFlow::Continue(())
        }

        fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<Over> {
            self.queries -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut statement = statement;
    while let Statement::Explain(explain) = statement {
        statement = &explain.statement;
    }
    // Only plain statements can be queries; the others are refused as such after planning.
    let Statement::Statement(statement) = statement else {
        return Ok(());
    };
    let mut nesting = Nesting {
        expressions: 0,
        queries: 0,
    };
    let message = match statement.visit(&mut nesting) {
        ControlFlow::Continue(()) => return Ok(()),
        ControlFlow::Break(Over::Expressions) => format!(
            "the query nests expressions more than {SQL_EXPR_DEPTH_MAX} levels deep \
             (a long chain of AND, OR or arithmetic counts one level per operator; use IN)"
        ),
        ControlFlow::Break(Over::Queries) => {
            format!("the query nests subqueries more than {SQL_QUERY_DEPTH_MAX} levels deep")
        }
        ControlFlow::Break(Over::Terms) => format!(
            "a query joins more than {SQL_QUERY_TERMS_MAX} SELECTs with UNION, EXCEPT or \
             INTERSECT, or defines more than {SQL_QUERY_TERMS_MAX} CTEs"
        ),
    };
    Err(SqlError::Limit(message))
}

/// The SELECTs a set operation joins (`a UNION b EXCEPT c`: 3), counted without recursion.
fn set_terms(body: &SetExpr) -> usize {
    let (mut terms, mut pending) = (0, vec![body]);
    while let Some(expr) = pending.pop() {
        match expr {
            SetExpr::SetOperation { left, right, .. } => pending.extend([&**left, &**right]),
            _ => terms += 1,
        }
    }
    terms
}

/// Refuses a physical plan with more than [`SQL_YIELD_POINTS_NESTED_MAX`] yield points on one
/// path from its root to a leaf. Each takes one unit of tokio's cooperative budget (128 per
/// task poll) as a poll passes through it: past the budget a poll never reaches the leaves,
/// and the query makes no progress until its timeout (an `INTERSECT` of 128 terms did that).
pub fn check_yield_points(plan: &Arc<dyn ExecutionPlan>) -> Result<(), SqlError> {
    let mut pending = vec![(Arc::clone(plan), 0usize)];
    while let Some((node, above)) = pending.pop() {
        let here = above + usize::from(node.name() == CooperativeExec::static_name());
        if here > SQL_YIELD_POINTS_NESTED_MAX {
            return Err(SqlError::Limit(format!(
                "the query plan nests more than {SQL_YIELD_POINTS_NESTED_MAX} operators"
            )));
        }
        pending.extend(
            node.children()
                .into_iter()
                .map(|child| (Arc::clone(child), here)),
        );
    }
    Ok(())
}

/// Refuses a plan nested deeper than [`SQL_PLAN_DEPTH_MAX`], subqueries included. The walk
/// stops at the first level over the limit.
pub fn check_plan_depth(plan: &LogicalPlan) -> Result<(), SqlError> {
    struct Depth {
        now: usize,
    }
    impl TreeNodeVisitor<'_> for Depth {
        type Node = LogicalPlan;

        fn f_down(&mut self, _node: &LogicalPlan) -> datafusion::error::Result<TreeNodeRecursion> {
            self.now += 1;
            if self.now > SQL_PLAN_DEPTH_MAX {
                return Err(DataFusionError::ResourcesExhausted(String::new()));
            }
            Ok(TreeNodeRecursion::Continue)
        }

        fn f_up(&mut self, _node: &LogicalPlan) -> datafusion::error::Result<TreeNodeRecursion> {
            self.now -= 1;
            Ok(TreeNodeRecursion::Continue)
        }
    }
    match plan.visit_with_subqueries(&mut Depth { now: 0 }) {
        Ok(_) => Ok(()),
        Err(DataFusionError::ResourcesExhausted(_)) => Err(SqlError::Limit(format!(
            "the query plan is nested more than {SQL_PLAN_DEPTH_MAX} levels deep"
        ))),
        Err(error) => Err(error.into()),
    }
}
