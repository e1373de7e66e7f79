//! etcd's transactions as Aspen's: comparisons on a key or a range (value, version, create and
//! mod revision, lease), puts, deletes (of ranges too, answering what they deleted), range
//! reads (sorted as asked, by the state machine, so that a limit takes the first entries in
//! that order) and nested transactions, and the answers in etcd's shape. A range read inside
//! a transaction at a revision, or with revision filters, is refused as unsupported.

use tonic::Status;

use crate::api::{Compare, CompareOp, CompareTarget, Output, Put, Txn, TxnOp, WriteOp};
use crate::etcd::EtcdPort;
use crate::etcd::kv::{
    delete_op, delete_response, lease_of, request_sort, revision_filtered, to_kv,
};
use crate::etcd::proto::etcdserverpb::{self as pb, compare, request_op, response_op};
use crate::etcd::{Gateway, key_range, signed, unsigned, unsupported};

impl<P: EtcdPort> Gateway<P> {
    pub(crate) async fn txn_request(&self, r: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        let (output, revision, member) = self.write(WriteOp::Txn(txn_of(r)?)).await?;
        let header = self.header(revision, member);
        match response_of(output, header) {
            Some(response_op::Response::ResponseTxn(response)) => Ok(response),
            _ => Err(Status::internal("a transaction answered something else")),
        }
    }
}

/// An etcd transaction as Aspen's.
fn txn_of(r: pb::TxnRequest) -> Result<Txn, Status> {
    let branch = |ops: Vec<pb::RequestOp>| ops.into_iter().map(op_of).collect::<Result<_, _>>();
    Ok(Txn {
        compares: r
            .compare
            .into_iter()
            .map(compare_of)
            .collect::<Result<Vec<_>, _>>()?,
        success: branch(r.success)?,
        failure: branch(r.failure)?,
    })
}

/// An etcd comparison as Aspen's: on the key, or on every key of `[key, range_end)`.
fn compare_of(c: pb::Compare) -> Result<Compare, Status> {
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
        (Ok(compare::CompareTarget::Lease), Some(U::Lease(n))) => CompareTarget::Lease(unsigned(n)),
        // A zero number is sent as no field at all.
        (Ok(compare::CompareTarget::Version), None) => CompareTarget::Version(0),
        (Ok(compare::CompareTarget::Create), None) => CompareTarget::CreateRevision(0),
        (Ok(compare::CompareTarget::Mod), None) => CompareTarget::ModRevision(0),
        (Ok(compare::CompareTarget::Value), None) => CompareTarget::Value(Vec::new()),
        (Ok(compare::CompareTarget::Lease), None) => CompareTarget::Lease(0),
        _ => return Err(Status::invalid_argument("etcdserver: bad compare target")),
    };
    let target = match c.range_end.is_empty() {
        true => target,
        false => CompareTarget::InRange {
            end: key_range(&c.key, &c.range_end).end,
            target: Box::new(target),
        },
    };
    Ok(Compare {
        key: match c.range_end.as_slice() {
            // `"\0"` to `"\0"`: every key.
            [0] if c.key == [0] => Vec::new(),
            _ => c.key,
        },
        op,
        target,
    })
}

/// An etcd operation as Aspen's.
fn op_of(op: pb::RequestOp) -> Result<TxnOp, Status> {
    match op.request {
        Some(request_op::Request::RequestPut(put)) => {
            if put.ignore_value || put.ignore_lease {
                return Err(unsupported(
                    "ignore_value or ignore_lease inside a transaction",
                ));
            }
            Ok(TxnOp::Put(Put {
                key: put.key,
                value: put.value,
                lease: lease_of(put.lease),
                ttl_ms: None,
                prev_kv: put.prev_kv,
            }))
        }
        Some(request_op::Request::RequestDeleteRange(delete)) => {
            Ok(delete_op(delete.key, delete.range_end, delete.prev_kv))
        }
        Some(request_op::Request::RequestRange(range)) => {
            if range.revision > 0 || revision_filtered(&range) {
                return Err(unsupported(
                    "a range at a revision, or with revision filters, inside a transaction",
                ));
            }
            Ok(TxnOp::Range {
                sort: request_sort(&range)?,
                range: key_range(&range.key, &range.range_end),
                limit: u32::try_from(unsigned(range.limit)).unwrap_or(u32::MAX),
                keys_only: range.keys_only,
                count_only: range.count_only,
            })
        }
        Some(request_op::Request::RequestTxn(txn)) => Ok(TxnOp::Txn(Box::new(txn_of(txn)?))),
        None => Err(Status::invalid_argument(
            "etcdserver: empty transaction operation",
        )),
    }
}

/// An operation's answer as etcd's.
fn response_of(
    output: Output,
    header: Option<pb::ResponseHeader>,
) -> Option<response_op::Response> {
    use response_op::Response;
    Some(match output {
        Output::Put { prev } => Response::ResponsePut(pb::PutResponse {
            header,
            prev_kv: prev.map(to_kv),
        }),
        output @ (Output::Delete { .. }
        | Output::DeleteRange { .. }
        | Output::DeleteRangePrev { .. }) => {
            Response::ResponseDeleteRange(delete_response(output, header)?)
        }
        Output::Range { kvs, count, more } => Response::ResponseRange(pb::RangeResponse {
            header,
            kvs: kvs.into_iter().map(to_kv).collect(),
            more,
            count: signed(count),
        }),
        Output::Txn { succeeded, results } => Response::ResponseTxn(pb::TxnResponse {
            header,
            succeeded,
            responses: results
                .into_iter()
                .map(|output| pb::ResponseOp {
                    response: response_of(output, header),
                })
                .collect(),
        }),
        // A transaction answers the operations above only.
        _ => return None,
    })
}
