//! Filters on `key` as key ranges: `=`, `IN`, `LIKE 'prefix%'`, `<`, `<=`, `>`, `>=`,
//! `BETWEEN`, and their conjunctions and disjunctions become a set of disjoint ranges the scan
//! reads, in key order. Anything else stays with DataFusion.
//!
//! A filter is *exact* when the ranges hold precisely the keys it accepts (the scan may then
//! drop it, and DataFusion can push a `LIMIT` into the scan), *inexact* when they hold a
//! superset (`LIKE 'p/%x'` reads the `p/` prefix and DataFusion still checks the rest).
//! String order here is byte order, as in redb and in Arrow's comparison kernels.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Like, Operator};

use crate::api::KeyRange;

/// Sorted, disjoint, non-empty key ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet(Vec<KeyRange>);

impl KeySet {
    /// Every key.
    pub fn all() -> KeySet {
        KeySet(vec![KeyRange {
            start: Vec::new(),
            end: None,
        }])
    }

    fn of(ranges: Vec<KeyRange>) -> KeySet {
        let mut ranges: Vec<KeyRange> = ranges.into_iter().filter(|r| !is_empty(r)).collect();
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        let mut merged: Vec<KeyRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                // Overlapping or touching: extend the previous range.
                Some(last) if last.end.as_ref().is_none_or(|end| range.start <= *end) => {
                    last.end = match (last.end.take(), range.end) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    };
                }
                _ => merged.push(range),
            }
        }
        KeySet(merged)
    }

    /// Every key under any of `prefixes` (none for an empty list).
    pub fn prefixes(prefixes: &[Vec<u8>]) -> KeySet {
        KeySet::of(prefixes.iter().map(|p| KeyRange::prefix(p)).collect())
    }

    pub fn ranges(&self) -> &[KeyRange] {
        &self.0
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.0.iter().any(|range| range.contains(key))
    }

    pub fn is_all(&self) -> bool {
        *self == KeySet::all()
    }

    pub fn union(self, other: KeySet) -> KeySet {
        let mut ranges = self.0;
        ranges.extend(other.0);
        KeySet::of(ranges)
    }

    pub fn intersect(&self, other: &KeySet) -> KeySet {
        let mut ranges = Vec::new();
        for a in &self.0 {
            for b in &other.0 {
                let start = a.start.clone().max(b.start.clone());
                let end = match (&a.end, &b.end) {
                    (None, end) | (end, None) => end.clone(),
                    (Some(x), Some(y)) => Some(x.min(y).clone()),
                };
                ranges.push(KeyRange { start, end });
            }
        }
        KeySet::of(ranges)
    }
}

fn is_empty(range: &KeyRange) -> bool {
    range.end.as_ref().is_some_and(|end| *end <= range.start)
}

/// The keys of `visible` that every filter on `key` among `filters` accepts (a superset
/// where a filter is inexact), and whether any filter was on `key`.
pub fn narrowed(visible: &KeySet, filters: &[Expr]) -> (KeySet, bool) {
    let mut keys = visible.clone();
    let mut filtered = false;
    for filter in filters.iter().filter_map(|f| key_filter(f, "key")) {
        keys = keys.intersect(&filter.keys);
        filtered = true;
    }
    (keys, filtered)
}

/// What a filter on `key` becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFilter {
    pub keys: KeySet,
    /// The ranges hold exactly the keys the filter accepts.
    pub exact: bool,
}

/// The key ranges `filter` selects, reading column `column`; `None` when the filter is not
/// one of the forms above.
pub fn key_filter(filter: &Expr, column: &str) -> Option<KeyFilter> {
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => {
                // Either side alone bounds the keys; both together are exact only if each is.
                match (key_filter(left, column), key_filter(right, column)) {
                    (Some(l), Some(r)) => Some(KeyFilter {
                        keys: l.keys.intersect(&r.keys),
                        exact: l.exact && r.exact,
                    }),
                    (Some(one), None) | (None, Some(one)) => Some(KeyFilter {
                        exact: false,
                        ..one
                    }),
                    (None, None) => None,
                }
            }
            Operator::Or => {
                let (l, r) = (key_filter(left, column)?, key_filter(right, column)?);
                Some(KeyFilter {
                    keys: l.keys.union(r.keys),
                    exact: l.exact && r.exact,
                })
            }
            _ => {
                let (op, literal) = if is_column(left, column) {
                    (*op, literal_bytes(right)?)
                } else if is_column(right, column) {
                    (op.swap()?, literal_bytes(left)?)
                } else {
                    return None;
                };
                Some(KeyFilter {
                    keys: compare(op, literal)?,
                    exact: true,
                })
            }
        },
        Expr::InList(in_list) if !in_list.negated && is_column(&in_list.expr, column) => {
            let mut ranges = Vec::with_capacity(in_list.list.len());
            for item in &in_list.list {
                ranges.push(KeyRange::single(&literal_bytes(item)?));
            }
            Some(KeyFilter {
                keys: KeySet::of(ranges),
                exact: true,
            })
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr, column) => {
            let (low, high) = (literal_bytes(low)?, literal_bytes(high)?);
            Some(KeyFilter {
                keys: KeySet::of(vec![KeyRange {
                    start: low,
                    end: Some(successor(high)),
                }]),
                exact: true,
            })
        }
        Expr::Like(like) => like_filter(like, column),
        _ => None,
    }
}

/// `key LIKE 'abc%'` is the prefix `abc` (exact); a pattern with more wildcards after its
/// literal prefix reads that prefix (inexact); a pattern without wildcards is one key.
fn like_filter(like: &Like, column: &str) -> Option<KeyFilter> {
    if like.negated || like.case_insensitive || !is_column(&like.expr, column) {
        return None;
    }
    let pattern = match literal(&like.pattern)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s,
        _ => return None,
    };
    // The literal prefix ends at the first wildcard or escape character.
    let special = |c: char| c == '%' || c == '_' || c == '\\' || Some(c) == like.escape_char;
    let cut = pattern.find(special).unwrap_or(pattern.len());
    let (prefix, rest) = pattern.split_at(cut);
    if rest.is_empty() {
        return Some(KeyFilter {
            keys: KeySet::of(vec![KeyRange::single(prefix.as_bytes())]),
            exact: true,
        });
    }
    if prefix.is_empty() {
        return None;
    }
    Some(KeyFilter {
        keys: KeySet::of(vec![KeyRange::prefix(prefix.as_bytes())]),
        exact: rest == "%",
    })
}

fn compare(op: Operator, literal: Vec<u8>) -> Option<KeySet> {
    let range = match op {
        Operator::Eq => KeyRange::single(&literal),
        Operator::Lt => KeyRange {
            start: Vec::new(),
            end: Some(literal),
        },
        Operator::LtEq => KeyRange {
            start: Vec::new(),
            end: Some(successor(literal)),
        },
        Operator::Gt => KeyRange {
            start: successor(literal),
            end: None,
        },
        Operator::GtEq => KeyRange {
            start: literal,
            end: None,
        },
        _ => return None,
    };
    Some(KeySet::of(vec![range]))
}

/// The least key greater than `key`.
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

fn is_column(expr: &Expr, column: &str) -> bool {
    matches!(expr, Expr::Column(c) if c.name == column)
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        _ => None,
    }
}

/// A non-null string or binary literal as bytes.
fn literal_bytes(expr: &Expr) -> Option<Vec<u8>> {
    match literal(expr)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.as_bytes().to_vec()),
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::FixedSizeBinary(_, Some(b)) => Some(b.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn range(start: &str, end: Option<&str>) -> KeyRange {
        KeyRange {
            start: start.as_bytes().to_vec(),
            end: end.map(|e| e.as_bytes().to_vec()),
        }
    }

    fn keys(filter: &Expr) -> (Vec<KeyRange>, bool) {
        let f = key_filter(filter, "key").expect("a key filter");
        (f.keys.ranges().to_vec(), f.exact)
    }

    // Proves each supported form becomes the ranges it means, and which ones are exact.
    #[test]
    fn forms() {
        assert_eq!(
            keys(&col("key").eq(lit("a"))),
            (vec![range("a", Some("a\0"))], true)
        );
        assert_eq!(
            keys(&lit("a").lt(col("key"))),
            (vec![range("a\0", None)], true)
        );
        assert_eq!(
            keys(&col("key").lt_eq(lit("b"))),
            (vec![range("", Some("b\0"))], true)
        );
        assert_eq!(
            keys(&col("key").between(lit("a"), lit("c"))),
            (vec![range("a", Some("c\0"))], true)
        );
        assert_eq!(
            keys(&col("key").in_list(vec![lit("b"), lit("a"), lit("b")], false)),
            (vec![range("a", Some("a\0")), range("b", Some("b\0"))], true)
        );
        assert_eq!(
            keys(&col("key").like(lit("p/%"))),
            (vec![range("p/", Some("p0"))], true)
        );
        assert_eq!(
            keys(&col("key").like(lit("p/%x"))),
            (vec![range("p/", Some("p0"))], false)
        );
        assert_eq!(
            keys(&col("key").like(lit("p/x"))),
            (vec![range("p/x", Some("p/x\0"))], true)
        );
        // Conjunction: intersect; disjunction: union; a non-key conjunct makes it inexact.
        assert_eq!(
            keys(&col("key").gt_eq(lit("b")).and(col("key").like(lit("b/%")))),
            (vec![range("b/", Some("b0"))], true)
        );
        assert_eq!(
            keys(&col("key").eq(lit("z")).or(col("key").like(lit("a%")))),
            (vec![range("a", Some("b")), range("z", Some("z\0"))], true)
        );
        assert_eq!(
            keys(&col("key").like(lit("a%")).and(col("version").gt(lit(1)))),
            (vec![range("a", Some("b"))], false)
        );
    }

    // Proves the forms that cannot be ranges are left to DataFusion.
    #[test]
    fn unsupported() {
        for filter in [
            col("key").not_eq(lit("a")),
            col("key").like(lit("%a")),
            col("key").not_like(lit("a%")),
            col("key").ilike(lit("a%")),
            col("key").in_list(vec![lit("a")], true),
            col("value").eq(lit("a")),
            col("key").eq(col("value")),
            col("key").eq(lit("a")).or(col("version").gt(lit(1))),
        ] {
            assert_eq!(key_filter(&filter, "key"), None, "{filter}");
        }
    }

    // Proves set algebra: overlapping ranges merge, disjoint intersections are empty.
    #[test]
    fn algebra() {
        let a = KeySet::of(vec![range("a", Some("c")), range("b", Some("d"))]);
        assert_eq!(a.ranges(), &[range("a", Some("d"))]);
        let b = KeySet::of(vec![range("x", None)]);
        assert!(a.intersect(&b).ranges().is_empty());
        assert_eq!(a.clone().union(b.clone()).ranges().len(), 2);
        assert_eq!(KeySet::all().intersect(&a), a);
        assert!(KeySet::all().is_all());
        assert_eq!(
            KeySet::of(vec![range("a", None), range("b", Some("c"))]).ranges(),
            &[range("a", None)]
        );
    }
}
