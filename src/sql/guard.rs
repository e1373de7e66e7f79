//! What a query may ask of the parser and planner, checked before each step can cost much:
//! the length of its text, how deep its special forms nest, how deep its expressions nest,
//! how deep its plan is.
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

use datafusion::common::tree_node::{TreeNodeRecursion, TreeNodeVisitor};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::limits::{
    SQL_EXPR_DEPTH_MAX, SQL_PLAN_DEPTH_MAX, SQL_SPECIAL_FORMS_NESTED_MAX, SQL_TEXT_BYTES_MAX,
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
/// nests one level per operator; the parser lets such chains through its recursion limit).
/// The walk stops at the first level over the limit, so it never recurses deeper itself.
fn check_nesting(statement: &Statement) -> Result<(), SqlError> {
    struct Nesting {
        depth: usize,
    }
    impl Visitor for Nesting {
        type Break = ();

        fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
            self.depth += 1;
            if self.depth > SQL_EXPR_DEPTH_MAX {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }

        fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
            self.depth -= 1;
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
    match statement.visit(&mut Nesting { depth: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(SqlError::Limit(format!(
            "the query nests expressions more than {SQL_EXPR_DEPTH_MAX} levels deep \
             (a long chain of AND, OR or arithmetic counts one level per operator; use IN)"
        ))),
    }
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
