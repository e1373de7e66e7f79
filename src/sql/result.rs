//! Turns DataFusion's Arrow batches into the rows a client gets ([`crate::api::SqlValue`]).

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::api::SqlValue;

/// The rows of `batch` as plain values.
pub fn batch_rows(batch: &RecordBatch) -> Result<Vec<Vec<SqlValue>>, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|array| column_values(array.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| columns.iter().map(|column| column[row].clone()).collect())
        .collect())
}

/// One column's values, through the widest Arrow type of its kind.
fn column_values(array: &dyn Array) -> Result<Vec<SqlValue>, ArrowError> {
    let n = array.len();
    let wide = |to: &DataType| cast(array, to);
    let values: Vec<SqlValue> = match array.data_type() {
        DataType::Null => vec![SqlValue::Null; n],
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map(SqlValue::Bool).unwrap_or(SqlValue::Null))
            .collect(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let a = wide(&DataType::Int64)?;
            a.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(SqlValue::Int).unwrap_or(SqlValue::Null))
                .collect()
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let a = wide(&DataType::UInt64)?;
            a.as_primitive::<UInt64Type>()
                .iter()
                .map(|v| v.map(SqlValue::UInt).unwrap_or(SqlValue::Null))
                .collect()
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let a = wide(&DataType::Float64)?;
            a.as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(SqlValue::Float).unwrap_or(SqlValue::Null))
                .collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let a = wide(&DataType::Utf8)?;
            a.as_string::<i32>()
                .iter()
                .map(|v| {
                    v.map(|s| SqlValue::Text(s.to_string()))
                        .unwrap_or(SqlValue::Null)
                })
                .collect()
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let a = wide(&DataType::Binary)?;
            a.as_binary::<i32>()
                .iter()
                .map(|v| {
                    v.map(|b| SqlValue::Bytes(b.to_vec()))
                        .unwrap_or(SqlValue::Null)
                })
                .collect()
        }
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array, &options)?;
            (0..n)
                .map(|i| {
                    if array.is_null(i) {
                        SqlValue::Null
                    } else {
                        SqlValue::Text(formatter.value(i).to_string())
                    }
                })
                .collect()
        }
    };
    Ok(values)
}
