//! Model test: random command sequences applied to the store and to the `BTreeMap` model of
//! `crate::reference` must agree on every response (values, versions, revisions, errors) and
//! on the whole state after each command, expiry index included.

use aspen::api::WriteOp;
use aspen::api::{Compare, CompareOp, CompareTarget, KeyRange, Put, RangeSort, SortBy, Txn, TxnOp};
use aspen::command::{Command, VaultLimits};
use proptest::prelude::*;

use crate::reference::{KEYS, VALUES, check_steps};

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS.to_vec()).prop_map(|k| k.as_bytes().to_vec())
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(VALUES.to_vec()).prop_map(|v| v.as_bytes().to_vec())
}

fn put_strategy() -> impl Strategy<Value = Put> {
    (key(), value(), 0u8..4, 1u64..400, any::<bool>()).prop_map(|(key, value, mode, n, prev_kv)| {
        Put {
            key,
            value,
            lease: (mode == 1).then_some(n % 4 + 1),
            ttl_ms: (mode == 2).then_some(n),
            prev_kv,
        }
    })
}

fn range_strategy() -> impl Strategy<Value = KeyRange> {
    prop_oneof![
        key().prop_map(|k| KeyRange::prefix(&k)),
        (key(), key()).prop_map(|(a, b)| KeyRange {
            start: a.clone().min(b.clone()),
            end: Some(a.max(b)),
        }),
    ]
}

fn compare_strategy() -> impl Strategy<Value = Compare> {
    let single = || {
        prop_oneof![
            value().prop_map(CompareTarget::Value),
            (0u64..4).prop_map(CompareTarget::Version),
            (0u64..12).prop_map(CompareTarget::CreateRevision),
            (0u64..12).prop_map(CompareTarget::ModRevision),
            any::<bool>().prop_map(CompareTarget::Exists),
            (0u64..5).prop_map(CompareTarget::Lease),
        ]
    };
    let target = prop_oneof![
        4 => single(),
        1 => (proptest::option::of(key()), single()).prop_map(|(end, target)| {
            CompareTarget::InRange { end, target: Box::new(target) }
        }),
    ];
    let op = prop::sample::select(vec![
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ]);
    // A range compare's end sorts after its start, as a valid command's does.
    (key(), op, target).prop_map(|(key, op, target)| match target {
        CompareTarget::InRange {
            end: Some(end),
            target,
        } if end < key => Compare {
            key: end.clone(),
            op,
            target: CompareTarget::InRange {
                end: Some(key),
                target,
            },
        },
        target => Compare { key, op, target },
    })
}

/// An operation that is not a nested transaction.
fn flat_txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        put_strategy().prop_map(TxnOp::Put),
        (key(), any::<bool>()).prop_map(|(key, prev_kv)| TxnOp::Delete { key, prev_kv }),
        range_strategy().prop_map(TxnOp::DeleteRange),
        key().prop_map(|key| TxnOp::Get { key }),
        range_strategy().prop_map(TxnOp::DeleteRangePrev),
        (
            range_strategy(),
            0u32..3,
            any::<bool>(),
            any::<bool>(),
            sort_strategy()
        )
            .prop_map(|(range, limit, keys_only, count_only, sort)| TxnOp::Range {
                range,
                limit,
                keys_only,
                count_only,
                sort,
            }),
    ]
}

fn sort_strategy() -> impl Strategy<Value = RangeSort> {
    let by = prop::sample::select(vec![
        SortBy::Key,
        SortBy::Version,
        SortBy::CreateRevision,
        SortBy::ModRevision,
        SortBy::Value,
    ]);
    (by, any::<bool>()).prop_map(|(by, descending)| RangeSort { by, descending })
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        6 => flat_txn_op(),
        1 => (
            prop::collection::vec(compare_strategy(), 0..2),
            prop::collection::vec(flat_txn_op(), 0..3),
            prop::collection::vec(flat_txn_op(), 0..2),
        )
            .prop_map(|(compares, success, failure)| {
                TxnOp::Txn(Box::new(Txn { compares, success, failure }))
            }),
    ]
}

pub(crate) fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => put_strategy().prop_map(|put| Command::Write(WriteOp::Put(put))),
        2 => (key(), any::<bool>()).prop_map(|(key, prev_kv)| Command::Write(WriteOp::Delete { key, prev_kv })),
        1 => range_strategy().prop_map(|range| Command::Write(WriteOp::DeleteRange(range))),
        3 => (
            prop::collection::vec(compare_strategy(), 0..3),
            prop::collection::vec(txn_op(), 0..4),
            prop::collection::vec(txn_op(), 0..3),
        )
            .prop_map(|(compares, success, failure)| Command::Write(WriteOp::Txn(Txn { compares, success, failure }))),
        2 => (0u64..5, 1u64..600).prop_map(|(id, ttl_ms)| Command::Write(WriteOp::LeaseGrant { id, ttl_ms })),
        1 => (0u64..5).prop_map(|id| Command::Write(WriteOp::LeaseRevoke { id })),
        1 => (1u64..5).prop_map(|id| Command::Write(WriteOp::LeaseKeepAlive { id })),
        2 => (prop::collection::vec(key(), 0..4), prop::collection::vec(1u64..5, 0..3))
            .prop_map(|(keys, leases)| Command::Expire { keys, leases }),
        1 => (1u64..4, 1u64..4).prop_map(|(vaults_max, keys_per_vault_max)| {
            Command::SetVaultLimits(VaultLimits { vaults_max, keys_per_vault_max })
        }),
        1 => (0u64..4).prop_map(|check| Command::HashCheck { check }),
        1 => (0u64..12).prop_map(|revision| Command::Write(WriteOp::Compact { revision })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    // Proves the store and the model agree on every response and on the full state (keys,
    // versions, revisions, leases, expiry order, vault metadata and limits: the model derives
    // vault figures from a full scan) after each of a random sequence of commands.
    #[test]
    fn store_agrees_with_btreemap_model(
        steps in prop::collection::vec((0u64..250, command()), 1..60)
    ) {
        if let Err(difference) = check_steps(&steps) {
            prop_assert!(false, "{}", difference);
        }
    }
}
