//! etcd's `KV` service: Range, Put, DeleteRange, Txn and Compact as Aspen reads and writes.
//! A range is read page by page at the first page's revision; sorting, the revision filters
//! and `count` beyond a limit are done here, over the keys read.

use tonic::{Request, Response, Status};

use crate::api::{
    ClientOutput, Compare, CompareOp, CompareTarget, Consistency, KeyRange, KeyValue, Output, Put,
    RangeSort, SortBy, Txn, TxnOp, WriteOp,
};
use crate::client::RangeOptions;
use crate::etcd::EtcdPort;
use crate::etcd::proto::etcdserverpb::{self as pb, kv_server::Kv, range_request};
use crate::etcd::proto::mvccpb;
use crate::etcd::{Gateway, key_range, signed, status, unsigned};

/// Times a put with `ignore_value` or `ignore_lease` reads the key again after another write
/// changed it between its read and its write.
const IGNORE_RETRIES: usize = 16;

/// An Aspen record as etcd's.
pub(crate) fn to_kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: signed(kv.create_revision),
        mod_revision: signed(kv.mod_revision),
        version: signed(kv.version),
        value: kv.value,
        lease: kv.lease.map_or(0, signed),
    }
}

pub(crate) fn lease_of(lease: i64) -> Option<u64> {
    (lease != 0).then(|| unsigned(lease))
}

fn consistency(serializable: bool) -> Consistency {
    match serializable {
        true => Consistency::Stale,
        false => Consistency::Linearizable,
    }
}

/// The keys of a range request read from the node (every page, at one revision), before
/// sorting and limiting: the keys, whether more exist past `limit`, and the revision.
struct Read {
    kvs: Vec<KeyValue>,
    more: bool,
    revision: u64,
    served_by: u64,
}

impl<P: EtcdPort> Gateway<P> {
    /// Reads `range` page by page at one revision (`revision`, or the first page's), at most
    /// `limit` keys (0: all), noting whether more exist.
    async fn read_range(
        &self,
        range: KeyRange,
        limit: u64,
        keys_only: bool,
        revision: u64,
        consistency: Consistency,
    ) -> Result<Read, Status> {
        let mut read = Read {
            kvs: Vec::new(),
            more: false,
            revision,
            served_by: 0,
        };
        let mut start = range.start.clone();
        loop {
            // One key past the limit tells whether there are more.
            let want = match limit {
                0 => 0,
                limit => limit + 1 - read.kvs.len() as u64,
            };
            let page = KeyRange {
                start,
                end: range.end.clone(),
            };
            let op = RangeOptions {
                limit: want,
                keys_only,
                count_only: false,
                consistency,
                revision: (read.revision > 0).then_some(read.revision),
            }
            .op(page);
            let answer = self.run(op).await?;
            let ClientOutput::Range {
                kvs, continuation, ..
            } = answer.output
            else {
                return Err(Status::internal("a range answered something else"));
            };
            if read.revision == 0 {
                read.revision = answer.revision;
            }
            read.served_by = answer.served_by;
            read.kvs.extend(kvs);
            if limit > 0 && read.kvs.len() as u64 > limit {
                read.more = true;
                read.kvs.truncate(limit as usize);
                return Ok(read);
            }
            match continuation {
                Some(next) => start = next,
                None => return Ok(read),
            }
        }
    }

    /// The number of keys in `range` at `revision`.
    async fn count(
        &self,
        range: KeyRange,
        revision: u64,
        consistency: Consistency,
    ) -> Result<(u64, u64, u64), Status> {
        let op = RangeOptions {
            limit: 0,
            keys_only: true,
            count_only: true,
            consistency,
            revision: (revision > 0).then_some(revision),
        }
        .op(range);
        let answer = self.run(op).await?;
        match answer.output {
            ClientOutput::Range { count, .. } => Ok((count, answer.revision, answer.served_by)),
            _ => Err(Status::internal("a count answered something else")),
        }
    }

    async fn range_request(&self, r: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        let range = key_range(&r.key, &r.range_end);
        let consistency = consistency(r.serializable);
        let revision = unsigned(r.revision);
        if r.count_only {
            let (count, revision, member) = self.count(range, revision, consistency).await?;
            return Ok(pb::RangeResponse {
                header: self.header(revision, member),
                kvs: Vec::new(),
                more: false,
                count: signed(count),
            });
        }
        let sort = request_sort(&r)?;
        let filtered = revision_filtered(&r);
        // As etcd: keys come in key order, so only another target or a descending order
        // sorts (ascending when no order is given).
        let key_order = sort == RangeSort::KEY_ORDER;
        let limit = unsigned(r.limit);
        // Sorting by anything but the key, or filtering, needs every key first.
        let read_limit = if key_order && !filtered { limit } else { 0 };
        // A sort by value needs the values, keys only or not.
        let read_keys_only = !sort.holds_value(r.keys_only);
        let mut read = self
            .read_range(
                range.clone(),
                read_limit,
                read_keys_only,
                revision,
                consistency,
            )
            .await?;
        let mut count = read.kvs.len() as u64;
        if read.more {
            count = self.count(range, read.revision, consistency).await?.0;
        }
        if filtered {
            let within = |n: u64, min: i64, max: i64| {
                (min <= 0 || n >= unsigned(min)) && (max <= 0 || n <= unsigned(max))
            };
            read.kvs.retain(|kv| {
                within(kv.mod_revision, r.min_mod_revision, r.max_mod_revision)
                    && within(
                        kv.create_revision,
                        r.min_create_revision,
                        r.max_create_revision,
                    )
            });
        }
        if !key_order {
            read.kvs.sort_by(|a, b| sort.compare(a, b));
        }
        if r.keys_only && !read_keys_only {
            read.kvs.iter_mut().for_each(|kv| kv.value = Vec::new());
        }
        if limit > 0 && read.kvs.len() as u64 > limit {
            read.kvs.truncate(limit as usize);
            read.more = true;
        }
        Ok(pb::RangeResponse {
            header: self.header(read.revision, read.served_by),
            kvs: read.kvs.into_iter().map(to_kv).collect(),
            more: read.more,
            count: signed(count),
        })
    }

    pub(crate) async fn write(&self, op: WriteOp) -> Result<(Output, u64, u64), Status> {
        self.write_op(op).await.map_err(|error| status(&error))
    }

    /// A put that keeps the key's value or lease: read, then write only if the key was not
    /// changed since (a transaction on its mod revision), else read again.
    async fn put_keeping(&self, r: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        if r.ignore_value && !r.value.is_empty() {
            return Err(Status::invalid_argument("etcdserver: value is provided"));
        }
        if r.ignore_lease && r.lease != 0 {
            return Err(Status::invalid_argument("etcdserver: lease is provided"));
        }
        for _ in 0..IGNORE_RETRIES {
            let read = self
                .read_range(
                    KeyRange::single(&r.key),
                    1,
                    false,
                    0,
                    Consistency::Linearizable,
                )
                .await?;
            let Some(current) = read.kvs.into_iter().next() else {
                return Err(Status::invalid_argument("etcdserver: key not found"));
            };
            let put = Put {
                key: r.key.clone(),
                value: match r.ignore_value {
                    true => current.value.clone(),
                    false => r.value.clone(),
                },
                lease: match r.ignore_lease {
                    true => current.lease,
                    false => lease_of(r.lease),
                },
                ttl_ms: None,
                prev_kv: r.prev_kv,
            };
            let txn = Txn {
                compares: vec![Compare {
                    key: r.key.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(current.mod_revision),
                }],
                success: vec![TxnOp::Put(put)],
                failure: Vec::new(),
            };
            let (output, revision, member) = self.write(WriteOp::Txn(txn)).await?;
            if let Output::Txn {
                succeeded: true,
                results,
            } = output
            {
                let prev = match results.into_iter().next() {
                    Some(Output::Put { prev }) => prev,
                    _ => None,
                };
                return Ok(pb::PutResponse {
                    header: self.header(revision, member),
                    prev_kv: prev.map(to_kv),
                });
            }
        }
        Err(Status::aborted(
            "the key kept changing between the read and the write of a put with ignore_value \
             or ignore_lease",
        ))
    }
}

/// A delete's answer as etcd's (`None`: not a delete's output).
pub(crate) fn delete_response(
    output: Output,
    header: Option<pb::ResponseHeader>,
) -> Option<pb::DeleteRangeResponse> {
    let (deleted, prev) = match output {
        Output::Delete { deleted, prev } => (deleted, prev.into_iter().collect()),
        Output::DeleteRange { deleted } => (deleted, Vec::new()),
        Output::DeleteRangePrev { deleted, prev } => (deleted, prev),
        _ => return None,
    };
    Some(pb::DeleteRangeResponse {
        header,
        deleted: signed(deleted),
        prev_kvs: prev.into_iter().map(to_kv).collect(),
    })
}

/// etcd's DeleteRange as Aspen's operation: a key, or a range (answering the entries it
/// deleted when `prev_kv` asks for them).
pub(crate) fn delete_op(key: Vec<u8>, range_end: Vec<u8>, prev_kv: bool) -> TxnOp {
    match (range_end.is_empty(), prev_kv) {
        (true, _) => TxnOp::Delete { key, prev_kv },
        (false, true) => TxnOp::DeleteRangePrev(key_range(&key, &range_end)),
        (false, false) => TxnOp::DeleteRange(key_range(&key, &range_end)),
    }
}

/// A range request's order as Aspen's; `None` order with another target is ascending, as
/// in etcd, and equal entries stay in key order, as etcd's answers show them.
pub(crate) fn request_sort(r: &pb::RangeRequest) -> Result<RangeSort, Status> {
    use range_request::SortTarget as T;
    let order = range_request::SortOrder::try_from(r.sort_order)
        .map_err(|_| Status::invalid_argument("etcdserver: unknown sort order"))?;
    let by = match T::try_from(r.sort_target) {
        Ok(T::Key) => SortBy::Key,
        Ok(T::Version) => SortBy::Version,
        Ok(T::Create) => SortBy::CreateRevision,
        Ok(T::Mod) => SortBy::ModRevision,
        Ok(T::Value) => SortBy::Value,
        Err(_) => return Err(Status::invalid_argument("etcdserver: unknown sort target")),
    };
    Ok(RangeSort {
        by,
        descending: order == range_request::SortOrder::Descend,
    })
}

/// Whether a range request filters by revision (min or max, of mod or create).
pub(crate) fn revision_filtered(r: &pb::RangeRequest) -> bool {
    r.min_mod_revision > 0
        || r.max_mod_revision > 0
        || r.min_create_revision > 0
        || r.max_create_revision > 0
}

#[tonic::async_trait]
impl<P: EtcdPort> Kv for Gateway<P> {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(
            self.range_request(request.into_inner()).await?,
        ))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let r = request.into_inner();
        if r.ignore_value || r.ignore_lease {
            return Ok(Response::new(self.put_keeping(r).await?));
        }
        let put = Put {
            key: r.key,
            value: r.value,
            lease: lease_of(r.lease),
            ttl_ms: None,
            prev_kv: r.prev_kv,
        };
        let (output, revision, member) = self.write(WriteOp::Put(put)).await?;
        let prev = match output {
            Output::Put { prev } => prev,
            _ => None,
        };
        Ok(Response::new(pb::PutResponse {
            header: self.header(revision, member),
            prev_kv: prev.map(to_kv),
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let r = request.into_inner();
        let op = match delete_op(r.key, r.range_end, r.prev_kv) {
            TxnOp::Delete { key, prev_kv } => WriteOp::Delete { key, prev_kv },
            TxnOp::DeleteRange(range) => WriteOp::DeleteRange(range),
            // Answering the deleted entries of a range is a transaction's operation.
            op => WriteOp::Txn(Txn {
                compares: Vec::new(),
                success: vec![op],
                failure: Vec::new(),
            }),
        };
        let (output, revision, member) = self.write(op).await?;
        let output = match output {
            Output::Txn { mut results, .. } => results.pop(),
            output => Some(output),
        };
        output
            .and_then(|output| delete_response(output, self.header(revision, member)))
            .map(Response::new)
            .ok_or_else(|| Status::internal("a delete answered something else"))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        Ok(Response::new(self.txn_request(request.into_inner()).await?))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = unsigned(request.into_inner().revision);
        let (_, at, member) = self.write(WriteOp::Compact { revision }).await?;
        Ok(Response::new(pb::CompactionResponse {
            header: self.header(at, member),
        }))
    }
}
