//! The key-value data a client sends and gets back: keys and ranges, puts, transactions,
//! stored entries as returned, the outputs of writes, vault names and metadata, and the
//! checks every write must pass before it is proposed. Plain data with serde derives.
//!
//! Wire and disk compatibility: postcard encodes enum variants by position. Add new variants
//! and fields only at the end.
//!
//! Long because the transaction's parts, their checks and their decoding bounds must agree
//! and sit together (about 130 of its lines are tests).

use serde::{Deserialize, Serialize};

use crate::api::error::{CommandError, TxnList};
use crate::limits::{
    COMMAND_BYTES_MAX, KEY_BYTES_MAX, TTL_MS_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX,
    VAULT_NAME_BYTES_MAX,
};

/// A node's id in the Raft cluster.
pub type NodeId = u64;

/// A half-open key range `[start, end)`; `end: None` reaches past the last key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key that starts with `prefix` (all keys for an empty prefix).
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: prefix.to_vec(),
            end: strinc(prefix),
        }
    }

    /// Exactly one key.
    pub fn single(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// Whether `key` falls inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    pub(crate) fn validate(&self) -> Result<(), CommandError> {
        check_key_len(&self.start, true)?;
        if let Some(end) = &self.end {
            check_key_len(end, true)?;
            if end.as_slice() < self.start.as_slice() {
                return Err(CommandError::RangeReversed);
            }
        }
        Ok(())
    }

    pub(crate) fn payload_bytes(&self) -> usize {
        self.start.len() + self.end.as_ref().map_or(0, Vec::len)
    }
}

/// Write `value` at `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Attach the key to this lease: it is deleted when the lease is revoked or expires.
    pub lease: Option<u64>,
    /// Expire the key this many milliseconds after the command's `now_ms`.
    pub ttl_ms: Option<u64>,
    /// Return the entry this put replaced.
    pub prev_kv: bool,
}

impl Put {
    /// A plain put: no lease, no TTL, no previous entry returned.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Put {
            key: key.into(),
            value: value.into(),
            lease: None,
            ttl_ms: None,
            prev_kv: false,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), CommandError> {
        check_key_len(&self.key, false)?;
        check_vault_key(&self.key)?;
        if self.value.len() > VALUE_BYTES_MAX {
            return Err(CommandError::ValueTooLarge {
                bytes: self.value.len() as u64,
                max: VALUE_BYTES_MAX as u64,
            });
        }
        if self.lease.is_some() && self.ttl_ms.is_some() {
            return Err(CommandError::LeaseAndTtl);
        }
        if let Some(ttl_ms) = self.ttl_ms {
            check_ttl(ttl_ms)?;
        }
        if self.lease == Some(0) {
            return Err(CommandError::LeaseIdZero);
        }
        Ok(())
    }
}

/// What a [`Compare`] looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value; a missing key never matches.
    Value(Vec<u8>),
    /// Number of writes since the key was created; 0 when missing.
    Version(u64),
    /// Revision of the key's creation; 0 when missing.
    CreateRevision(u64),
    /// Revision of the key's last write; 0 when missing.
    ModRevision(u64),
    /// Whether the key exists (and has not expired).
    Exists(bool),
    /// The id of the key's lease; 0 when it has none or is missing (etcd's LEASE target).
    Lease(u64),
    /// `target` holds for every live key from the compare's key up to `end` (`None`: to the
    /// last key); with no live key there, as for a missing key (etcd's range compare).
    /// `target` is not itself a range.
    InRange {
        end: Option<Vec<u8>>,
        #[serde(deserialize_with = "crate::api::bounded::nested")]
        target: Box<CompareTarget>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// A condition of a transaction: `actual(key) op target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put(Put),
    Delete {
        key: Vec<u8>,
        prev_kv: bool,
    },
    DeleteRange(KeyRange),
    Get {
        key: Vec<u8>,
    },
    /// The live keys of `range` in `sort`'s order ([`RangeSort::KEY_ORDER`]: as stored): the
    /// first `limit` in that order (0, or more than [`TXN_RANGE_KEYS_MAX`]: that many), with
    /// `more` when others follow, and `count`, the number of live keys in the range. Sorting
    /// by value holds the values, so they count towards the answer's bytes even when keys
    /// only.
    Range {
        range: KeyRange,
        limit: u32,
        keys_only: bool,
        count_only: bool,
        sort: RangeSort,
    },
    /// A transaction inside this one (etcd's nested transaction): its compares are decided on
    /// the state before the outer transaction ran, as etcd decides them.
    Txn(#[serde(deserialize_with = "crate::api::bounded::nested")] Box<Txn>),
    /// As `DeleteRange`, answering the entries it deleted: refused (before anything is
    /// written) when the range may hold more than [`TXN_RANGE_KEYS_MAX`] keys.
    DeleteRangePrev(KeyRange),
}

/// An order for a range read: by what, and which way; equal entries stay in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSort {
    pub by: SortBy,
    pub descending: bool,
}

/// What a range read is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortBy {
    Key,
    Version,
    CreateRevision,
    ModRevision,
    Value,
}

impl RangeSort {
    /// Ascending keys: the order ranges are stored and answered in.
    pub const KEY_ORDER: RangeSort = RangeSort {
        by: SortBy::Key,
        descending: false,
    };

    /// How `a` and `b` compare in this order (in key order where the sorted field is equal).
    pub fn compare(&self, a: &KeyValue, b: &KeyValue) -> std::cmp::Ordering {
        let ordering = match self.by {
            SortBy::Key => a.key.cmp(&b.key),
            SortBy::Version => a.version.cmp(&b.version),
            SortBy::CreateRevision => a.create_revision.cmp(&b.create_revision),
            SortBy::ModRevision => a.mod_revision.cmp(&b.mod_revision),
            SortBy::Value => a.value.cmp(&b.value),
        };
        match self.descending {
            true => ordering.reverse(),
            false => ordering,
        }
        .then_with(|| a.key.cmp(&b.key))
    }

    /// Whether a sort holds an entry's value: unless keys only were asked, and always when
    /// sorting by value (which then counts towards an answer's bytes even when keys only).
    pub fn holds_value(&self, keys_only: bool) -> bool {
        !keys_only || self.by == SortBy::Value
    }
}

impl TxnOp {
    pub(crate) fn validate(&self) -> Result<(), CommandError> {
        match self {
            TxnOp::Put(put) => put.validate(),
            TxnOp::Delete { key, .. } | TxnOp::Get { key } => check_key_len(key, false),
            TxnOp::DeleteRange(range)
            | TxnOp::DeleteRangePrev(range)
            | TxnOp::Range { range, .. } => range.validate(),
            TxnOp::Txn(txn) => validate_txn_parts(txn),
        }
    }

    pub(crate) fn payload_bytes(&self) -> usize {
        match self {
            TxnOp::Put(put) => put.key.len() + put.value.len(),
            TxnOp::Delete { key, .. } | TxnOp::Get { key } => key.len(),
            TxnOp::DeleteRange(range)
            | TxnOp::DeleteRangePrev(range)
            | TxnOp::Range { range, .. } => range.payload_bytes(),
            TxnOp::Txn(txn) => txn_payload_bytes(txn),
        }
    }
}

/// A range read or a range delete answering its entries, inside a transaction, returns at
/// most this many keys (its output is built on every replica as the command applies).
pub const TXN_RANGE_KEYS_MAX: usize = crate::limits::SCAN_ENTRIES_MAX;

impl Txn {
    /// How deep transactions nest in this one (0: none).
    pub(crate) fn depth(&self) -> usize {
        self.success
            .iter()
            .chain(&self.failure)
            .filter_map(|op| match op {
                TxnOp::Txn(inner) => Some(1 + inner.depth()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Compares and operations of the transaction and of every transaction nested in it.
    pub(crate) fn op_count(&self) -> usize {
        self.compares.len()
            + self
                .success
                .iter()
                .chain(&self.failure)
                .map(|op| match op {
                    TxnOp::Txn(inner) => 1 + inner.op_count(),
                    _ => 1,
                })
                .sum::<usize>()
    }
}

impl Compare {
    /// The keys the compare reads: its key, or the range of an `InRange` target.
    pub fn keys(&self) -> KeyRange {
        match &self.target {
            CompareTarget::InRange { end, .. } => KeyRange {
                start: self.key.clone(),
                end: end.clone(),
            },
            _ => KeyRange::single(&self.key),
        }
    }
}

/// If every compare holds, run `success`, else `failure`; atomically, as one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    #[serde(deserialize_with = "crate::api::bounded::vec::<_, _, TXN_OPS_MAX>")]
    pub compares: Vec<Compare>,
    #[serde(deserialize_with = "crate::api::bounded::vec::<_, _, TXN_OPS_MAX>")]
    pub success: Vec<TxnOp>,
    #[serde(deserialize_with = "crate::api::bounded::vec::<_, _, TXN_OPS_MAX>")]
    pub failure: Vec<TxnOp>,
}

pub(crate) fn validate_txn(txn: &Txn) -> Result<(), CommandError> {
    if txn.depth() > crate::limits::TXN_NESTING_MAX {
        return Err(CommandError::TxnNestedTooDeep {
            max: crate::limits::TXN_NESTING_MAX as u64,
        });
    }
    validate_txn_parts(txn)?;
    // Nested transactions count toward the same bound as one list.
    let count = txn.op_count();
    if count > TXN_OPS_MAX * 3 {
        return Err(CommandError::TooManyTxnOps {
            list: TxnList::Nested,
            count: count as u64,
            max: (TXN_OPS_MAX * 3) as u64,
        });
    }
    Ok(())
}

/// A transaction's own lists and keys (nested ones included), without the whole-tree bounds.
fn validate_txn_parts(txn: &Txn) -> Result<(), CommandError> {
    for (list, count) in [
        (TxnList::Compares, txn.compares.len()),
        (TxnList::Success, txn.success.len()),
        (TxnList::Failure, txn.failure.len()),
    ] {
        if count > TXN_OPS_MAX {
            return Err(CommandError::TooManyTxnOps {
                list,
                count: count as u64,
                max: TXN_OPS_MAX as u64,
            });
        }
    }
    for compare in &txn.compares {
        check_key_len(&compare.key, false)?;
        if let CompareTarget::InRange { target, .. } = &compare.target {
            compare.keys().validate()?;
            if matches!(**target, CompareTarget::InRange { .. }) {
                return Err(CommandError::NestedRangeCompare);
            }
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        op.validate()?;
    }
    let bytes = txn_payload_bytes(txn);
    if bytes > COMMAND_BYTES_MAX {
        return Err(CommandError::CommandTooLarge {
            bytes: bytes as u64,
            max: COMMAND_BYTES_MAX as u64,
        });
    }
    Ok(())
}

/// Bytes of keys and values a transaction carries (compares and both branches).
pub(crate) fn txn_payload_bytes(txn: &Txn) -> usize {
    let compares: usize = txn
        .compares
        .iter()
        .map(|compare| {
            compare.key.len()
                + match &compare.target {
                    CompareTarget::Value(value) => value.len(),
                    CompareTarget::InRange { end, target } => {
                        end.as_ref().map_or(0, Vec::len)
                            + match &**target {
                                CompareTarget::Value(value) => value.len(),
                                _ => 0,
                            }
                    }
                    _ => 0,
                }
        })
        .sum();
    let ops: usize = txn
        .success
        .iter()
        .chain(&txn.failure)
        .map(TxnOp::payload_bytes)
        .sum();
    compares + ops
}

/// Lease id 0 means "no lease": refused where a lease is named.
pub(crate) fn check_lease_id(id: u64) -> Result<(), CommandError> {
    if id == 0 {
        return Err(CommandError::LeaseIdZero);
    }
    Ok(())
}

/// Whether a branch of the transaction puts a key.
pub(crate) fn txn_puts(txn: &Txn) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        TxnOp::Put(_) => true,
        TxnOp::Txn(inner) => txn_puts(inner),
        _ => false,
    })
}

/// Keys under this prefix belong to a vault: `vault/NAME/REST`.
pub const VAULT_PREFIX: &[u8] = b"vault/";

/// The vault `key` belongs to: NAME for `vault/NAME/...` (NAME not empty, no `/`).
pub fn vault_of(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(VAULT_PREFIX)?;
    let end = rest.iter().position(|b| *b == b'/')?;
    (end > 0).then(|| &rest[..end])
}

/// A key written under `vault/` must name a vault: `vault/NAME/...` with NAME of 1 to
/// `VAULT_NAME_BYTES_MAX` bytes of `[A-Za-z0-9_.-]`.
fn check_vault_key(key: &[u8]) -> Result<(), CommandError> {
    let Some(rest) = key.strip_prefix(VAULT_PREFIX) else {
        return Ok(());
    };
    let refuse = |reason: &str| {
        Err(CommandError::BadVaultKey {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        })
    };
    let Some(end) = rest.iter().position(|b| *b == b'/') else {
        return refuse("keys under vault/ are vault/NAME/...");
    };
    let name = &rest[..end];
    if name.is_empty() || name.len() > VAULT_NAME_BYTES_MAX {
        return refuse(&format!(
            "a vault name is 1 to {VAULT_NAME_BYTES_MAX} bytes"
        ));
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return refuse("a vault name uses only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

/// What a vault holds, kept in the `vaults` table in the same transaction as its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VaultMeta {
    /// Stored keys (a key whose TTL passed counts until the TTL actor deletes it).
    pub key_count: u64,
    /// Bytes of those keys and their values.
    pub total_bytes: u64,
    /// The revision at which the vault got its first key (since it was last empty).
    pub created_revision: u64,
    /// The revision of the last change to its keys.
    pub updated_revision: u64,
}

/// A vault and its metadata, as listed to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultInfo {
    pub name: String,
    pub meta: VaultMeta,
}

/// The rules a stored key and its value follow, as the commands that write them check them:
/// for records read from a snapshot or a backup, which must not bring in what no command could.
pub(crate) fn check_stored_key(key: &[u8], value_bytes: usize) -> Result<(), CommandError> {
    check_key_len(key, false)?;
    check_vault_key(key)?;
    if value_bytes > VALUE_BYTES_MAX {
        return Err(CommandError::ValueTooLarge {
            bytes: value_bytes as u64,
            max: VALUE_BYTES_MAX as u64,
        });
    }
    Ok(())
}

pub(crate) fn check_key_len(key: &[u8], empty_allowed: bool) -> Result<(), CommandError> {
    if key.is_empty() && !empty_allowed {
        return Err(CommandError::KeyEmpty);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(CommandError::KeyTooLarge {
            bytes: key.len() as u64,
            max: KEY_BYTES_MAX as u64,
        });
    }
    Ok(())
}

pub(crate) fn check_ttl(ttl_ms: u64) -> Result<(), CommandError> {
    if ttl_ms == 0 || ttl_ms > TTL_MS_MAX {
        return Err(CommandError::TtlOutOfRange {
            ttl_ms,
            max: TTL_MS_MAX,
        });
    }
    Ok(())
}

/// A key and its record, as returned to readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub version: u64,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub lease: Option<u64>,
    pub expires_at_ms: Option<u64>,
}

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// A blank or membership entry.
    None,
    Put {
        prev: Option<KeyValue>,
    },
    Delete {
        deleted: u64,
        prev: Option<KeyValue>,
    },
    DeleteRange {
        deleted: u64,
    },
    /// `results` holds one output per operation of the branch that ran, in order.
    Txn {
        succeeded: bool,
        results: Vec<Output>,
    },
    /// A get inside a transaction.
    Get {
        kv: Option<KeyValue>,
    },
    Lease {
        id: u64,
        ttl_ms: u64,
        deadline_ms: u64,
    },
    LeaseRevoke {
        keys_deleted: u64,
    },
    Expire {
        keys_deleted: u64,
        leases_revoked: u64,
    },
    /// A range read inside a transaction: the entries (values empty with `keys_only`, none
    /// with `count_only`), the live keys in the range, and whether entries were left out.
    Range {
        kvs: Vec<KeyValue>,
        count: u64,
        more: bool,
    },
    /// A range delete that answers the entries it deleted, in key order.
    DeleteRangePrev {
        deleted: u64,
        prev: Vec<KeyValue>,
    },
}

/// The first key after every key that starts with `prefix`: drop trailing 0xff bytes, then add
/// one to the last byte. `None` when no such key exists (empty or all 0xff).
pub fn strinc(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut out = prefix[..=keep].to_vec();
    out[keep] += 1;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn_of(ops: usize) -> Txn {
        Txn {
            compares: Vec::new(),
            success: (0..ops).map(|_| TxnOp::Get { key: Vec::new() }).collect(),
            failure: Vec::new(),
        }
    }

    // Proves a transaction list longer than TXN_OPS_MAX is refused while decoding, from its
    // announced length, even when the bytes for its elements are not there (a frame of tiny
    // operations never inflates), and that a list at the limit decodes whole.
    #[test]
    fn long_transaction_lists_are_refused_before_their_elements() {
        let at_limit = postcard::to_allocvec(&txn_of(TXN_OPS_MAX)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Txn>(&at_limit).unwrap(),
            txn_of(TXN_OPS_MAX)
        );
        let over = postcard::to_allocvec(&txn_of(TXN_OPS_MAX + 1)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Txn>(&over),
            Err(postcard::Error::SerdeDeCustom)
        );
        // compares: empty; success: a million two-byte gets (2 MB that would decode into
        // 88 MB of elements); failure: empty.
        let mut tiny = vec![0u8];
        tiny.extend_from_slice(&[0xc0, 0x84, 0x3d]); // varint 1,000,000
        tiny.extend(std::iter::repeat_n([3u8, 0], 1_000_000).flatten());
        tiny.push(0);
        assert_eq!(
            postcard::from_bytes::<Txn>(&tiny),
            Err(postcard::Error::SerdeDeCustom)
        );
        // The same list announcing more elements than its bytes can hold stops at their end.
        assert_eq!(
            postcard::from_bytes::<Txn>(&tiny[..100]),
            Err(postcard::Error::DeserializeUnexpectedEnd)
        );
    }

    /// A transaction of `ops` gets of key "k".
    fn gets(ops: usize) -> Txn {
        Txn {
            compares: Vec::new(),
            success: (0..ops)
                .map(|_| TxnOp::Get { key: b"k".to_vec() })
                .collect(),
            failure: Vec::new(),
        }
    }

    /// A transaction with `depth` transactions nested one in another inside it.
    fn nested(depth: usize) -> Txn {
        let mut txn = gets(1);
        for _ in 0..depth {
            txn = Txn {
                compares: Vec::new(),
                success: vec![TxnOp::Txn(Box::new(txn))],
                failure: Vec::new(),
            };
        }
        txn
    }

    // Proves transactions nested TXN_NESTING_MAX deep decode and validate, one level more is
    // refused by both (the decoder before it recurses further: a frame nesting thousands of
    // levels cannot overflow its stack), and that nested operations count toward the bound.
    #[test]
    fn nesting_is_bounded_when_decoding_and_validating() {
        let max = crate::limits::TXN_NESTING_MAX;
        let ok = nested(max);
        assert_eq!(
            postcard::from_bytes::<Txn>(&postcard::to_allocvec(&ok).unwrap()).unwrap(),
            ok
        );
        assert_eq!(validate_txn(&ok), Ok(()));
        let deep = nested(max + 1);
        assert_eq!(
            validate_txn(&deep),
            Err(CommandError::TxnNestedTooDeep { max: max as u64 })
        );
        let bytes = postcard::to_allocvec(&nested(max + 2)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Txn>(&bytes),
            Err(postcard::Error::SerdeDeCustom)
        );
        // Ten thousand levels: refused at the limit, no stack overflow.
        let mut hostile = Vec::new();
        for _ in 0..10_000 {
            hostile.extend_from_slice(&[0, 1, 5]); // no compares, one success op: a Txn
        }
        assert_eq!(
            postcard::from_bytes::<Txn>(&hostile),
            Err(postcard::Error::SerdeDeCustom)
        );
        // A range compare of a range compare is refused.
        let compare = |target| Compare {
            key: b"a".to_vec(),
            op: CompareOp::Equal,
            target,
        };
        let in_range = |target| CompareTarget::InRange {
            end: None,
            target: Box::new(target),
        };
        let txn = Txn {
            compares: vec![compare(in_range(in_range(CompareTarget::Version(0))))],
            success: Vec::new(),
            failure: Vec::new(),
        };
        assert_eq!(validate_txn(&txn), Err(CommandError::NestedRangeCompare));
        // Nested operations count together.
        let wide = Txn {
            compares: Vec::new(),
            success: (0..TXN_OPS_MAX)
                .map(|_| TxnOp::Txn(Box::new(gets(3))))
                .collect(),
            failure: Vec::new(),
        };
        assert!(matches!(
            validate_txn(&wide),
            Err(CommandError::TooManyTxnOps {
                list: TxnList::Nested,
                ..
            })
        ));
    }
}
