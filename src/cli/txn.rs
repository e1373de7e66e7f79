//! `aspen txn`'s expression syntax (`KEY OP VALUE` compares, `put`/`del`/`get` operations)
//! and its JSON file form.

use serde::Deserialize;

use crate::api::{Compare, CompareOp, CompareTarget, KeyRange, Put, Txn, TxnOp};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TxnFile {
    compare: Vec<String>,
    success: Vec<String>,
    failure: Vec<String>,
}

pub(super) fn txn_from_file(path: &std::path::Path) -> Result<Txn, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: TxnFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_txn(&file.compare, &file.success, &file.failure)
}

/// Parses a transaction from the `aspen txn` expression syntax.
pub fn parse_txn(
    compares: &[String],
    success: &[String],
    failure: &[String],
) -> Result<Txn, String> {
    Ok(Txn {
        compares: compares
            .iter()
            .map(|c| parse_compare(c))
            .collect::<Result<_, _>>()?,
        success: success
            .iter()
            .map(|o| parse_op(o))
            .collect::<Result<_, _>>()?,
        failure: failure
            .iter()
            .map(|o| parse_op(o))
            .collect::<Result<_, _>>()?,
    })
}

fn parse_compare(text: &str) -> Result<Compare, String> {
    let bad = |why: &str| format!("compare {text:?}: {why} (expected e.g. `value(KEY) = V`)");
    let (field, rest) = text.trim().split_once('(').ok_or_else(|| bad("no '('"))?;
    let (key, rest) = rest.split_once(')').ok_or_else(|| bad("no ')'"))?;
    let rest = rest.trim_start();
    let (op, target) = [
        ("!=", CompareOp::NotEqual),
        ("=", CompareOp::Equal),
        ("<", CompareOp::Less),
        (">", CompareOp::Greater),
    ]
    .into_iter()
    .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|t| (op, t.trim())))
    .ok_or_else(|| bad("the operator must be one of = != < >"))?;
    let number = || {
        target
            .parse::<u64>()
            .map_err(|_| bad("the target must be a number"))
    };
    let target = match field.trim() {
        "value" => CompareTarget::Value(target.as_bytes().to_vec()),
        "version" => CompareTarget::Version(number()?),
        "create" => CompareTarget::CreateRevision(number()?),
        "mod" => CompareTarget::ModRevision(number()?),
        "exists" => CompareTarget::Exists(
            target
                .parse()
                .map_err(|_| bad("the target must be true or false"))?,
        ),
        other => {
            return Err(bad(&format!(
                "unknown field {other:?} (value, version, create, mod, exists)"
            )));
        }
    };
    Ok(Compare {
        key: key.as_bytes().to_vec(),
        op,
        target,
    })
}

fn parse_op(text: &str) -> Result<TxnOp, String> {
    let bad = |why: &str| {
        format!("op {text:?}: {why} (put KEY VALUE, del KEY, delprefix PREFIX, get KEY)")
    };
    let mut words = text.trim().splitn(3, ' ');
    let verb = words.next().unwrap_or_default();
    let key = words
        .next()
        .ok_or_else(|| bad("no key"))?
        .as_bytes()
        .to_vec();
    let rest = words.next();
    match (verb, rest) {
        ("put", Some(value)) => Ok(TxnOp::Put(Put::new(key, value))),
        ("put", None) => Err(bad("no value")),
        ("del", None) => Ok(TxnOp::Delete {
            key,
            prev_kv: false,
        }),
        ("delprefix", None) => Ok(TxnOp::DeleteRange(KeyRange::prefix(&key))),
        ("get", None) => Ok(TxnOp::Get { key }),
        ("del" | "delprefix" | "get", Some(_)) => Err(bad("too many words")),
        _ => Err(bad("unknown operation")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the txn expression syntax parses every compare field and op, and names the
    // broken part of a bad expression.
    #[test]
    fn txn_syntax() {
        let txn = parse_txn(
            &[
                "value(k) = hello world".into(),
                "version(k) > 2".into(),
                "mod(k) != 7".into(),
                "exists(j) = false".into(),
                "create(k) < 9".into(),
            ],
            &["put k new value".into(), "get k".into()],
            &["del k".into(), "delprefix p/".into()],
        )
        .unwrap();
        assert_eq!(
            txn.compares[0].target,
            CompareTarget::Value(b"hello world".to_vec())
        );
        assert_eq!(txn.compares[1].op, CompareOp::Greater);
        assert_eq!(txn.compares[2].op, CompareOp::NotEqual);
        assert_eq!(txn.compares[3].target, CompareTarget::Exists(false));
        assert_eq!(txn.success[0], TxnOp::Put(Put::new("k", "new value")));
        assert_eq!(txn.failure[1], TxnOp::DeleteRange(KeyRange::prefix(b"p/")));
        assert!(
            parse_compare("size(k) = 1")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse_compare("version(k) = x")
                .unwrap_err()
                .contains("number")
        );
        assert!(parse_op("put k").unwrap_err().contains("no value"));
        assert!(
            parse_op("frob k")
                .unwrap_err()
                .contains("unknown operation")
        );
    }
}
