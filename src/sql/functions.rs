//! String functions that can build a value far larger than their arguments (`repeat`,
//! `lpad`, `rpad`, `replace`), bounded by the SQL memory limit.
//!
//! DataFusion builds their results outside its memory pool: `repeat('x', 2000000000)` would
//! allocate 2 GB in one call. Each is replaced here by the same function behind a check that
//! computes, before any work, an upper bound of the bytes the call would build for its whole
//! batch (a constant result counts once per row it is copied into), and refuses the call when
//! that bound is over the limit. Everything else (types, coercion, simplification, results)
//! is the original function's, but for volatility: see `bound_string_functions`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{ExprSchema, ScalarValue};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::execution::registry::FunctionRegistry;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, StructFieldMapping, Volatility,
};

use crate::sql::SqlError;

/// How a function's output size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, count)`: `len(text) * count`.
    Repeat,
    /// `lpad|rpad(text, chars [, fill])`: the text plus `chars` characters of fill, each at
    /// most `len(fill)` bytes (a space without one).
    Pad,
    /// `replace(text, from, to)`: every occurrence of `from` (at most `len(text) / len(from)`,
    /// plus one for an empty `from`) becomes `to`.
    Replace,
}

/// Replaces the amplifying string functions of `state` with bounded ones.
pub fn bound_string_functions(state: &mut SessionState, limit_bytes: u64) -> Result<(), SqlError> {
    for (name, growth) in [
        ("repeat", Growth::Repeat),
        ("lpad", Growth::Pad),
        ("rpad", Growth::Pad),
        ("replace", Growth::Replace),
    ] {
        let inner = state.udf(name)?.as_ref().clone();
        // Volatile, so the planner never folds a call on constants into one literal: the
        // literal would then be copied into every row of a batch after the check, which sees
        // a batch's row count only when it runs per batch.
        let signature = Signature {
            volatility: Volatility::Volatile,
            ..inner.signature().clone()
        };
        let bounded = Bounded {
            inner,
            signature,
            growth,
            limit_bytes,
        };
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(bounded)))?;
    }
    Ok(())
}

/// One function behind its size check.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    signature: Signature,
    growth: Growth,
    limit_bytes: u64,
}

impl Bounded {
    /// Refuses the call when the bytes it may build are over the limit.
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows.max(1);
        let arg = |i: usize| -> Result<PerRow> {
            match args.args.get(i) {
                Some(value) if i == 1 && self.growth != Growth::Replace => counts(value),
                Some(value) => lengths(value),
                None => Ok(PerRow::Same(1)),
            }
        };
        let (first, second, third) = (arg(0)?, arg(1)?, arg(2)?);
        let mut total: u128 = 0;
        for row in 0..rows {
            let (a, b, c) = (first.at(row), second.at(row), third.at(row));
            total += match self.growth {
                Growth::Repeat => a * b,
                Growth::Pad => a + b * c.max(1),
                Growth::Replace => a + (a / b.max(1) + 1) * c,
            };
            if total > u128::from(self.limit_bytes) {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "{}() would build more than the SQL memory limit of {} bytes \
                     (sql.memory_limit_bytes)",
                    self.inner.name(),
                    self.limit_bytes
                )));
            }
        }
        Ok(())
    }
}

/// One figure per row: the same for every row (a scalar argument), or one each.
enum PerRow {
    Same(u128),
    Each(Vec<u128>),
}

impl PerRow {
    fn at(&self, row: usize) -> u128 {
        match self {
            PerRow::Same(value) => *value,
            PerRow::Each(values) => values.get(row).copied().unwrap_or(0),
        }
    }
}

/// Byte lengths of a string argument (null counts 0).
fn lengths(value: &ColumnarValue) -> Result<PerRow> {
    per_row(value, |array| {
        let lengths = cast_int64(&length(array)?)?;
        Ok(column(&lengths))
    })
}

/// Values of a count argument (null and negative count 0).
fn counts(value: &ColumnarValue) -> Result<PerRow> {
    per_row(value, |array| Ok(column(&cast_int64(array)?)))
}

fn per_row(value: &ColumnarValue, each: impl Fn(&ArrayRef) -> Result<Vec<u128>>) -> Result<PerRow> {
    match value {
        ColumnarValue::Scalar(scalar) => {
            let one = scalar.to_array_of_size(1)?;
            Ok(PerRow::Same(each(&one)?.first().copied().unwrap_or(0)))
        }
        ColumnarValue::Array(array) => Ok(PerRow::Each(each(array)?)),
    }
}

fn cast_int64(array: &ArrayRef) -> Result<ArrayRef> {
    // A count out of the Int64 range is null here; the function itself refuses it.
    let options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    Ok(cast_with_options(array, &DataType::Int64, &options)?)
}

fn column(array: &ArrayRef) -> Vec<u128> {
    array
        .as_primitive::<Int64Type>()
        .iter()
        .map(|value| value.map_or(0, |v| v.max(0) as u128))
        .collect()
}

// Delegates every method to the original function except `invoke_with_args`, which checks
// first.
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn display_name(&self, args: &[Expr]) -> Result<String> {
        #[expect(deprecated)]
        self.inner.inner().display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.inner.inner().preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.inner().evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> Result<Option<Vec<Interval>>> {
        self.inner.inner().propagate_constraints(interval, inputs)
    }

    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.inner().struct_field_mapping(literal_args)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.inner().output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().preserves_lex_ordering(inputs)
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.inner().strictly_order_preserving(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.inner().documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }
}
