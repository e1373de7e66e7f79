//! The `history` table of one snapshot: every event the history keeps, in revision order
//! (revision, number within the revision, key, kind `PUT` or `DELETE`, the value after a put,
//! the value it replaced, and the record's version, create and mod revisions and lease; text
//! as in `kv`). Filters on `revision` (`=`, `>`, `>=`, `<`, `<=` against a number) choose the
//! part of the table read; filters on `key` (as in `kv`: `=`, `IN`, `LIKE 'p%'`, comparisons)
//! skip the other keys' events after reading only their key. DataFusion applies both again.
//! A client that may read only some prefixes sees only their events.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::mpsc::Sender;

use crate::sql::keys::{KeySet, key_filter, narrowed};
use crate::sql::tables::{Projected, blocking_scan, external, send};
use crate::storage::history::{decode_event, stored_event_key};
use crate::storage::{HistoryEvent, ReadView};

/// One event as the table reads it: revision, number within the revision, the event.
type Row = (u64, u32, HistoryEvent);
use crate::storage::schema::HISTORY;

pub struct HistoryTable {
    view: Arc<ReadView>,
    schema: SchemaRef,
    /// The keys whose events the table shows.
    visible: KeySet,
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
        HistoryTable {
            view,
            schema,
            visible: KeySet::all(),
        }
    }

    /// Shows only the events of keys in `visible`.
    pub fn visible(mut self, visible: KeySet) -> Self {
        self.visible = visible;
        self
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
            .map(|filter| {
                match revision_bounds(filter).is_some() || key_filter(filter, "key").is_some() {
                    true => TableProviderFilterPushDown::Inexact,
                    false => TableProviderFilterPushDown::Unsupported,
                }
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
        let (keys, _) = narrowed(&self.visible, filters);
        let Projected {
            indices,
            schema,
            batch_rows,
        } = Projected::new(&self.schema, projection, state)?;
        let (view, full) = (Arc::clone(&self.view), Arc::clone(&self.schema));
        let wanted = Wanted {
            revisions: (from, to),
            keys,
        };
        blocking_scan(schema, None, limit, move |tx| {
            scan_history(&view, &full, &indices, batch_rows, &wanted, tx)
        })
    }
}

/// The events a scan reads: revisions (inclusive) and keys.
struct Wanted {
    revisions: (u64, u64),
    keys: KeySet,
}

fn scan_history(
    view: &ReadView,
    schema: &SchemaRef,
    indices: &[usize],
    batch_rows: usize,
    wanted: &Wanted,
    tx: &Sender<Result<RecordBatch>>,
) -> Result<()> {
    let (from, to) = wanted.revisions;
    if from > to || wanted.keys.ranges().is_empty() {
        return Ok(());
    }
    let every_key = wanted.keys.is_all();
    let events = view.transaction().open_table(HISTORY).map_err(external)?;
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).ok().map(str::to_owned);
    let mut rows: Vec<Row> = Vec::with_capacity(batch_rows);
    // The columns in schema order, from one batch of rows.
    let flush = |rows: &mut Vec<Row>| -> Result<RecordBatch> {
        let batch = std::mem::take(rows);
        let int = |f: &dyn Fn(&Row) -> Option<i64>| -> ArrayRef {
            Arc::new(Int64Array::from_iter(batch.iter().map(f)))
        };
        let string = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from_iter(batch.iter().map(f)))
        };
        let kind = |event: &HistoryEvent| match event.entry {
            Some(_) => "PUT",
            None => "DELETE",
        };
        let columns = vec![
            int(&|(revision, _, _)| Some(as_i64(*revision))),
            int(&|(_, number, _)| Some(i64::from(*number))),
            string(&|(_, _, e)| text(&e.key)),
            string(&|(_, _, e)| Some(kind(e).to_string())),
            string(&|(_, _, e)| e.entry.as_ref().and_then(|kv| text(&kv.value))),
            string(&|(_, _, e)| e.prev.as_ref().and_then(|kv| text(&kv.value))),
            int(&|(_, _, e)| e.entry.as_ref().map(|kv| as_i64(kv.version))),
            int(&|(_, _, e)| {
                let record = e.entry.as_ref().or(e.prev.as_ref());
                record.map(|kv| as_i64(kv.create_revision))
            }),
            int(&|(_, _, e)| e.entry.as_ref().map(|kv| as_i64(kv.mod_revision))),
            int(&|(_, _, e)| e.entry.as_ref().and_then(|kv| kv.lease).map(as_i64)),
        ];
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?.project(indices)?)
    };
    for item in events.range((from, 0)..).map_err(external)? {
        let (at, bytes) = item.map_err(external)?;
        let (revision, number) = at.value();
        if revision > to {
            break;
        }
        let bytes = bytes.value();
        if !every_key
            && !wanted
                .keys
                .contains(stored_event_key(revision, number, bytes).map_err(external)?)
        {
            continue;
        }
        let event = decode_event(revision, number, bytes).map_err(external)?;
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
