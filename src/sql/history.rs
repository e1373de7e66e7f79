//! The `history` table of one snapshot: every event the history keeps, in revision order
//! (revision, number within the revision, key, kind `PUT` or `DELETE`, the value after a put,
//! the value it replaced, and the record's version, create and mod revisions and lease; text
//! as in `kv`). Filters on `revision` (`=`, `>`, `>=`, `<`, `<=` against a number) choose the
//! part of the table read; DataFusion applies them again.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::mpsc::Sender;

use crate::sql::tables::{Projected, blocking_scan, external, send};
use crate::storage::ReadView;
use crate::storage::schema::HISTORY;

pub struct HistoryTable {
    view: Arc<ReadView>,
    schema: SchemaRef,
}

impl HistoryTable {
    pub fn new(view: Arc<ReadView>) -> Self {
        let int = |name: &str, nullable| Field::new(name, DataType::Int64, nullable);
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let schema = Arc::new(Schema::new(vec![
            int("revision", false),
            int("number", false),
            text("key"),
            Field::new("kind", DataType::Utf8, false),
            text("value"),
            text("prev_value"),
            int("version", true),
            int("create_revision", true),
            int("mod_revision", true),
            int("lease_id", true),
        ]));
        HistoryTable { view, schema }
    }
}

impl fmt::Debug for HistoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryTable")
            .field("revision", &self.view.revision())
            .finish()
    }
}

/// The revisions a filter keeps, as an inclusive range, when it compares `revision` with a
/// number.
fn revision_bounds(filter: &Expr) -> Option<(u64, u64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = filter else {
        return None;
    };
    let (op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == "revision" => (*op, v),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == "revision" => (op.swap()?, v),
        _ => return None,
    };
    let n = match value {
        ScalarValue::Int64(Some(n)) => *n,
        ScalarValue::Int32(Some(n)) => i64::from(*n),
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok()?,
        _ => return None,
    };
    let at = |n: i64| u64::try_from(n.max(0)).unwrap_or(0);
    match op {
        Operator::Eq if n >= 0 => Some((at(n), at(n))),
        Operator::Gt => Some((at(n).saturating_add(u64::from(n >= 0)), u64::MAX)),
        Operator::GtEq => Some((at(n), u64::MAX)),
        Operator::Lt if n > 0 => Some((0, at(n) - 1)),
        Operator::LtEq if n >= 0 => Some((0, at(n))),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| match revision_bounds(filter) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (mut from, mut to) = (0u64, u64::MAX);
        for (low, high) in filters.iter().filter_map(revision_bounds) {
            (from, to) = (from.max(low), to.min(high));
        }
        let Projected {
            indices,
            schema,
            batch_rows,
        } = Projected::new(&self.schema, projection, state)?;
        let (view, full) = (Arc::clone(&self.view), Arc::clone(&self.schema));
        blocking_scan(schema, None, limit, move |tx| {
            scan_history(&view, &full, &indices, batch_rows, (from, to), tx)
        })
    }
}

fn scan_history(
    view: &ReadView,
    schema: &SchemaRef,
    indices: &[usize],
    batch_rows: usize,
    (from, to): (u64, u64),
    tx: &Sender<Result<RecordBatch>>,
) -> Result<()> {
    if from > to {
        return Ok(());
    }
    let events = view.transaction().open_table(HISTORY).map_err(external)?;
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_owned);
    let mut rows: Vec<(u64, u32, crate::storage::HistoryEvent)> = Vec::with_capacity(batch_rows);
    let flush = |rows: &mut Vec<(u64, u32, crate::storage::HistoryEvent)>| -> Result<RecordBatch> {
        let mut ints: Vec<Int64Builder> = (0..6).map(|_| Int64Builder::new()).collect();
        let mut texts: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
        for (revision, number, event) in rows.drain(..) {
            let record = event.entry.as_ref().or(event.prev.as_ref());
            ints[0].append_value(as_i64(revision));
            ints[1].append_value(i64::from(number));
            ints[2].append_option(event.entry.as_ref().map(|e| as_i64(e.version)));
            ints[3].append_option(record.map(|e| as_i64(e.create_revision)));
            ints[4].append_option(event.entry.as_ref().map(|e| as_i64(e.mod_revision)));
            ints[5].append_option(event.entry.as_ref().and_then(|e| e.lease).map(as_i64));
            texts[0].append_option(text(&event.key));
            texts[1].append_value(if event.entry.is_some() {
                "PUT"
            } else {
                "DELETE"
            });
            texts[2].append_option(event.entry.as_ref().and_then(|e| text(&e.value)));
            texts[3].append_option(event.prev.as_ref().and_then(|e| text(&e.value)));
        }
        let mut ints = ints.into_iter().map(|mut b| Arc::new(b.finish()) as _);
        let mut texts = texts.into_iter().map(|mut b| Arc::new(b.finish()) as _);
        let mut next = |int: bool| match int {
            true => ints.next().expect("six"),
            false => texts.next().expect("four"),
        };
        // Schema order: revision, number, key, kind, value, prev_value, version,
        // create_revision, mod_revision, lease_id.
        let (revision, number) = (next(true), next(true));
        let (key, kind, value, prev) = (next(false), next(false), next(false), next(false));
        let (version, create, modified, lease) = (next(true), next(true), next(true), next(true));
        let columns = vec![
            revision, number, key, kind, value, prev, version, create, modified, lease,
        ];
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?.project(indices)?)
    };
    for item in events.range((from, 0)..).map_err(external)? {
        let (at, bytes) = item.map_err(external)?;
        let (revision, number) = at.value();
        if revision > to {
            break;
        }
        let event = postcard::from_bytes(bytes.value()).map_err(|e| {
            external(crate::storage::Error::corrupt(
                format!("history event {revision}.{number}"),
                e,
            ))
        })?;
        rows.push((revision, number, event));
        if rows.len() == batch_rows && !send(tx, flush(&mut rows)) {
            return Ok(());
        }
    }
    if !rows.is_empty() {
        send(tx, flush(&mut rows));
    }
    Ok(())
}
