//! etcd's transactions as Aspen's: comparisons and operations on single keys, and the
//! answers in etcd's shape. What Aspen's transactions cannot express (a lease comparison,
//! ranges over several keys, nested transactions) is refused as unsupported.

use tonic::Status;

use crate::api::{Compare, CompareOp, CompareTarget, Output, Put, Txn, TxnOp, WriteOp};
use crate::etcd::EtcdPort;
use crate::etcd::kv::{lease_of, to_kv};
use crate::etcd::proto::etcdserverpb::{self as pb, compare, request_op, response_op};
use crate::etcd::{Gateway, key_range, signed, unsigned, unsupported};

impl<P: EtcdPort> Gateway<P> {
    pub(crate) async fn txn_request(&self, r: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        let compares = r
            .compare
            .into_iter()
            .map(compare_of)
            .collect::<Result<Vec<_>, _>>()?;
        let (success, success_asks): (Vec<_>, Vec<_>) = r
            .success
            .into_iter()
            .map(op_of)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let (failure, failure_asks): (Vec<_>, Vec<_>) = r
            .failure
            .into_iter()
            .map(op_of)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let txn = Txn {
            compares,
            success,
            failure,
        };
        let (output, revision, member) = self.write(WriteOp::Txn(txn)).await?;
        let Output::Txn { succeeded, results } = output else {
            return Err(Status::internal("a transaction answered something else"));
        };
        let asks = match succeeded {
            true => success_asks,
            false => failure_asks,
        };
        let header = self.header(revision, member);
        Ok(pb::TxnResponse {
            header,
            succeeded,
            responses: results
                .into_iter()
                .zip(asks)
                .map(|(output, asks)| response_of(output, asks, header))
                .collect(),
        })
    }
}

/// An etcd comparison as Aspen's.
fn compare_of(c: pb::Compare) -> Result<Compare, Status> {
    if !c.range_end.is_empty() {
        return Err(unsupported("a comparison over a range of keys"));
    }
    let op = match compare::CompareResult::try_from(c.result) {
        Ok(compare::CompareResult::Equal) => CompareOp::Equal,
        Ok(compare::CompareResult::NotEqual) => CompareOp::NotEqual,
        Ok(compare::CompareResult::Greater) => CompareOp::Greater,
        Ok(compare::CompareResult::Less) => CompareOp::Less,
        Err(_) => {
            return Err(Status::invalid_argument(
                "etcdserver: unknown compare result",
            ));
        }
    };
    use compare::TargetUnion as U;
    let target = match (compare::CompareTarget::try_from(c.target), c.target_union) {
        (Ok(compare::CompareTarget::Version), Some(U::Version(n))) => {
            CompareTarget::Version(unsigned(n))
        }
        (Ok(compare::CompareTarget::Create), Some(U::CreateRevision(n))) => {
            CompareTarget::CreateRevision(unsigned(n))
        }
        (Ok(compare::CompareTarget::Mod), Some(U::ModRevision(n))) => {
            CompareTarget::ModRevision(unsigned(n))
        }
        (Ok(compare::CompareTarget::Value), Some(U::Value(v))) => CompareTarget::Value(v),
        // A zero number is sent as no field at all.
        (Ok(compare::CompareTarget::Version), None) => CompareTarget::Version(0),
        (Ok(compare::CompareTarget::Create), None) => CompareTarget::CreateRevision(0),
        (Ok(compare::CompareTarget::Mod), None) => CompareTarget::ModRevision(0),
        (Ok(compare::CompareTarget::Value), None) => CompareTarget::Value(Vec::new()),
        (Ok(compare::CompareTarget::Lease), _) => {
            return Err(unsupported("comparing a key's lease"));
        }
        _ => return Err(Status::invalid_argument("etcdserver: bad compare target")),
    };
    Ok(Compare {
        key: c.key,
        op,
        target,
    })
}

/// An etcd transaction operation as Aspen's, with what its answer needs from the request
/// (a range's `keys_only` and `count_only`).
fn op_of(op: pb::RequestOp) -> Result<(TxnOp, (bool, bool)), Status> {
    match op.request {
        Some(request_op::Request::RequestPut(put)) => {
            if put.ignore_value || put.ignore_lease {
                return Err(unsupported(
                    "ignore_value or ignore_lease inside a transaction",
                ));
            }
            Ok((
                TxnOp::Put(Put {
                    key: put.key,
                    value: put.value,
                    lease: lease_of(put.lease),
                    ttl_ms: None,
                    prev_kv: put.prev_kv,
                }),
                (false, false),
            ))
        }
        Some(request_op::Request::RequestDeleteRange(delete)) => {
            match delete.range_end.is_empty() {
                true => Ok((
                    TxnOp::Delete {
                        key: delete.key,
                        prev_kv: delete.prev_kv,
                    },
                    (false, false),
                )),
                false if delete.prev_kv => Err(unsupported("prev_kv on a range delete")),
                false => Ok((
                    TxnOp::DeleteRange(key_range(&delete.key, &delete.range_end)),
                    (false, false),
                )),
            }
        }
        Some(request_op::Request::RequestRange(range)) => {
            if !range.range_end.is_empty() || range.revision > 0 {
                return Err(unsupported(
                    "a range over several keys or at a revision inside a transaction",
                ));
            }
            Ok((
                TxnOp::Get { key: range.key },
                (range.keys_only, range.count_only),
            ))
        }
        Some(request_op::Request::RequestTxn(_)) => Err(unsupported("nested transactions")),
        None => Err(Status::invalid_argument(
            "etcdserver: empty transaction operation",
        )),
    }
}

/// An operation's answer as etcd's.
fn response_of(
    output: Output,
    (keys_only, count_only): (bool, bool),
    header: Option<pb::ResponseHeader>,
) -> pb::ResponseOp {
    use response_op::Response;
    let response = match output {
        Output::Put { prev } => Response::ResponsePut(pb::PutResponse {
            header,
            prev_kv: prev.map(to_kv),
        }),
        Output::Delete { deleted, prev } => {
            Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                header,
                deleted: signed(deleted),
                prev_kvs: prev.into_iter().map(to_kv).collect(),
            })
        }
        Output::DeleteRange { deleted } => Response::ResponseDeleteRange(pb::DeleteRangeResponse {
            header,
            deleted: signed(deleted),
            prev_kvs: Vec::new(),
        }),
        Output::Get { kv } => {
            let count = i64::from(kv.is_some());
            let kvs = match count_only {
                true => Vec::new(),
                false => kv
                    .map(|mut kv| {
                        if keys_only {
                            kv.value.clear();
                        }
                        to_kv(kv)
                    })
                    .into_iter()
                    .collect(),
            };
            Response::ResponseRange(pb::RangeResponse {
                header,
                kvs,
                more: false,
                count,
            })
        }
        // A transaction answers puts, deletes and gets only.
        _ => return pb::ResponseOp { response: None },
    };
    pb::ResponseOp {
        response: Some(response),
    }
}
