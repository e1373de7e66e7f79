//! KV conformance: the semantics users rely on, run on the file store and on the in-memory
//! store alike (the `both_stores!` macro makes one test per store kind).

use aspen::api::{
    CommandError, Compare, CompareOp, CompareTarget, KeyRange, Output, Put, RangeSort, SortBy, Txn,
    TxnOp, WriteOp,
};
use aspen::command::Command;
use aspen::limits::{KEY_BYTES_MAX, SCAN_ENTRIES_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX};
use aspen::storage::StoreWrite;
use aspen::storage::{Error, ScanOptions, Store, ValidationError, verify_snapshot_file};

use crate::util::{Driver, Kind, all_keys, open};

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(#[test] fn $name() { super::$name(super::Kind::File) })*
        }
        mod in_memory {
            $(#[test] fn $name() { super::$name(super::Kind::InMemory) })*
        }
    };
}

both_stores!(
    put_get_delete_follow_etcd_revisions,
    scans_page_in_key_order_with_continuation,
    a_page_is_cut_by_bytes_inside_the_scan,
    delete_range_and_prefix_count_live_keys,
    txn_compares_choose_a_branch_atomically,
    txn_ranges_leases_and_nesting_follow_etcd,
    refused_commands_change_nothing,
    ttl_hides_keys_and_expire_deletes_them,
    leases_attach_extend_and_revoke_keys,
    snapshot_restores_the_same_state_into_a_fresh_store,
    corrupt_snapshot_is_refused_and_changes_nothing,
    validation_names_applied_and_committed,
    a_batch_applies_each_request_with_its_own_revision_and_answer,
    a_truncated_batch_entry_is_never_applied,
    lease_ids_never_overflow,
    the_clock_never_goes_back,
    a_damaged_current_snapshot_is_rebuilt_before_it_is_sent,
);

const NOW: u64 = 1_000_000;

fn put(key: &str, value: &str) -> Command {
    Command::Write(WriteOp::Put(Put::new(key, value)))
}

fn put_prev(key: &str, value: &str) -> Command {
    Command::Write(WriteOp::Put(Put {
        prev_kv: true,
        ..Put::new(key, value)
    }))
}

fn get(store: &Store, key: &str, now_ms: u64) -> Option<aspen::api::KeyValue> {
    store.read(now_ms).unwrap().get(key.as_bytes()).unwrap()
}

// Proves put/get/delete keep etcd's revision, version, create_revision and mod_revision rules,
// and that a delete of a missing key changes no revision.
fn put_get_delete_follow_etcd_revisions(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    assert_eq!(d.run(NOW, put("a", "1")).revision, 1);
    let kv = get(&t.store, "a", NOW).unwrap();
    assert_eq!((kv.version, kv.create_revision, kv.mod_revision), (1, 1, 1));
    assert_eq!(kv.value, b"1");

    let response = d.run(NOW, put_prev("a", "2"));
    assert_eq!(response.revision, 2);
    let Ok(Output::Put { prev: Some(prev) }) = response.result else {
        panic!("expected the previous entry: {response:?}");
    };
    assert_eq!(prev.value, b"1");
    let kv = get(&t.store, "a", NOW).unwrap();
    assert_eq!((kv.version, kv.create_revision, kv.mod_revision), (2, 1, 2));

    let response = d.run(
        NOW,
        Command::Write(WriteOp::Delete {
            key: b"a".to_vec(),
            prev_kv: true,
        }),
    );
    assert_eq!(response.revision, 3);
    assert!(
        matches!(response.result, Ok(Output::Delete { deleted: 1, prev: Some(ref p) }) if p.value == b"2")
    );
    assert_eq!(get(&t.store, "a", NOW), None);

    let response = d.run(
        NOW,
        Command::Write(WriteOp::Delete {
            key: b"a".to_vec(),
            prev_kv: false,
        }),
    );
    assert_eq!(response.revision, 3, "deleting nothing is not a revision");
    assert_eq!(
        response.result,
        Ok(Output::Delete {
            deleted: 0,
            prev: None
        })
    );

    d.run(NOW, put("a", "3"));
    let kv = get(&t.store, "a", NOW).unwrap();
    assert_eq!(
        (kv.version, kv.create_revision),
        (1, 4),
        "a recreated key starts over"
    );
    assert_eq!(t.store.read(NOW).unwrap().revision(), 4);
}

// Proves scans return keys in byte order, page at the limit with a continuation key that
// resumes exactly where the page stopped, honour keys_only, and count without values.
fn scans_page_in_key_order_with_continuation(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    let mut keys: Vec<String> = (0..2_500)
        .map(|i| format!("p/{:05}", (i * 7919) % 2_500))
        .collect();
    for key in &keys {
        d.run(NOW, put(key, "v"));
    }
    d.run(NOW, put("q", "outside the prefix"));
    d.run(
        NOW,
        put("p", "the prefix itself, shorter than every p/ key"),
    );
    keys.sort();

    let view = t.store.read(NOW).unwrap();
    let mut range = KeyRange::prefix(b"p/");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = view.range(&range, ScanOptions::default()).unwrap();
        assert!(page.kvs.len() <= SCAN_ENTRIES_MAX);
        pages += 1;
        seen.extend(
            page.kvs
                .into_iter()
                .map(|kv| String::from_utf8(kv.key).unwrap()),
        );
        match page.continuation {
            Some(next) => range.start = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, keys);
    assert_eq!(view.count(&KeyRange::prefix(b"p/")).unwrap(), 2_500);
    assert_eq!(view.count(&KeyRange::prefix(b"")).unwrap(), 2_502);

    let page = view
        .range(
            &KeyRange::prefix(b"p/"),
            ScanOptions {
                limit: 3,
                keys_only: true,
                ..ScanOptions::default()
            },
        )
        .unwrap();
    assert_eq!(page.kvs.len(), 3);
    assert!(page.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(page.continuation.as_deref(), Some(keys[3].as_bytes()));
    assert_eq!(page.revision, 2_502);
}

// Proves a range page stops at its byte budget while it scans (the entry that would pass it
// starts the next page), always holds at least one entry, and that keys-only pages count only
// key bytes, so 1 MiB values never build a page past the budget.
fn a_page_is_cut_by_bytes_inside_the_scan(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    let big = "v".repeat(1 << 20);
    for i in 0..5 {
        d.run(NOW, put(&format!("b/{i}"), &big));
    }
    let view = t.store.read(NOW).unwrap();
    let scan = |bytes_max, keys_only| {
        let options = ScanOptions {
            bytes_max,
            keys_only,
            ..ScanOptions::default()
        };
        view.range(&KeyRange::prefix(b"b/"), options).unwrap()
    };
    let page = scan(2 * (1 << 20) + 100, false);
    assert_eq!(page.kvs.len(), 2);
    assert_eq!(page.continuation.as_deref(), Some(&b"b/2"[..]));
    let page = scan(1, false);
    assert_eq!(page.kvs.len(), 1, "a page holds at least one entry");
    assert_eq!(page.continuation.as_deref(), Some(&b"b/1"[..]));
    let page = scan(1 << 20, true);
    assert_eq!(page.kvs.len(), 5);
    assert!(page.continuation.is_none());
}

// Proves DeleteRange deletes exactly the range (prefix or [start, end)), counts what it removed
// across more keys than one deletion chunk, and is one revision.
fn delete_range_and_prefix_count_live_keys(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    for i in 0..1_500 {
        d.run(NOW, put(&format!("x/{i:04}"), "v"));
    }
    for key in ["a", "b", "c", "d", "x", "y"] {
        d.run(NOW, put(key, "v"));
    }
    let before = t.store.read(NOW).unwrap().revision();
    let response = d.run(
        NOW,
        Command::Write(WriteOp::DeleteRange(KeyRange::prefix(b"x/"))),
    );
    assert_eq!(response.result, Ok(Output::DeleteRange { deleted: 1_500 }));
    assert_eq!(response.revision, before + 1);
    let response = d.run(
        NOW,
        Command::Write(WriteOp::DeleteRange(KeyRange {
            start: b"b".to_vec(),
            end: Some(b"d".to_vec()),
        })),
    );
    assert_eq!(response.result, Ok(Output::DeleteRange { deleted: 2 }));
    let left: Vec<_> = all_keys(&t.store, NOW)
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(
        left,
        [b"a".to_vec(), b"d".to_vec(), b"x".to_vec(), b"y".to_vec()]
    );
}

fn compare(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare {
        key: key.as_bytes().to_vec(),
        op,
        target,
    }
}

// Proves a Txn evaluates every compare kind, runs only the chosen branch, applies a multi-key
// batch as one revision, and that gets inside a branch see the branch's earlier writes.
fn txn_compares_choose_a_branch_atomically(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    d.run(NOW, put("k", "v1"));
    d.run(NOW, put("k", "v2"));

    let holds = [
        compare("k", CompareOp::Equal, CompareTarget::Value(b"v2".to_vec())),
        compare(
            "k",
            CompareOp::Greater,
            CompareTarget::Value(b"v1".to_vec()),
        ),
        compare("k", CompareOp::Equal, CompareTarget::Version(2)),
        compare("k", CompareOp::Equal, CompareTarget::CreateRevision(1)),
        compare("k", CompareOp::Equal, CompareTarget::ModRevision(2)),
        compare("k", CompareOp::Less, CompareTarget::ModRevision(3)),
        compare("k", CompareOp::Equal, CompareTarget::Exists(true)),
        compare("missing", CompareOp::Equal, CompareTarget::Exists(false)),
        compare("missing", CompareOp::Equal, CompareTarget::Version(0)),
        compare(
            "k",
            CompareOp::NotEqual,
            CompareTarget::Value(b"zzz".to_vec()),
        ),
    ];
    for c in holds {
        let response = d.run(
            NOW,
            Command::Write(WriteOp::Txn(Txn {
                compares: vec![c.clone()],
                success: vec![],
                failure: vec![],
            })),
        );
        assert!(
            matches!(
                response.result,
                Ok(Output::Txn {
                    succeeded: true,
                    ..
                })
            ),
            "{c:?} should hold"
        );
    }
    let fails = d.run(
        NOW,
        Command::Write(WriteOp::Txn(Txn {
            compares: vec![compare(
                "missing",
                CompareOp::NotEqual,
                CompareTarget::Value(b"x".to_vec()),
            )],
            success: vec![],
            failure: vec![],
        })),
    );
    assert!(
        matches!(
            fails.result,
            Ok(Output::Txn {
                succeeded: false,
                ..
            })
        ),
        "a value compare on a missing key never holds"
    );
    assert_eq!(
        fails.revision, 2,
        "a txn that writes nothing is not a revision"
    );

    let cas = |expected: &str, new: &str| {
        Command::Write(WriteOp::Txn(Txn {
            compares: vec![compare(
                "k",
                CompareOp::Equal,
                CompareTarget::Value(expected.into()),
            )],
            success: vec![
                TxnOp::Put(Put::new("k", new)),
                TxnOp::Put(Put::new("other", new)),
                TxnOp::Get {
                    key: b"other".to_vec(),
                },
            ],
            failure: vec![TxnOp::Get { key: b"k".to_vec() }],
        }))
    };
    let response = d.run(NOW, cas("v2", "v3"));
    assert_eq!(response.revision, 3, "a multi-key batch is one revision");
    let Ok(Output::Txn {
        succeeded: true,
        results,
    }) = response.result
    else {
        panic!("cas should succeed: {response:?}");
    };
    assert!(matches!(&results[2], Output::Get { kv: Some(kv) } if kv.value == b"v3"));
    assert_eq!(get(&t.store, "other", NOW).unwrap().mod_revision, 3);
    assert_eq!(get(&t.store, "k", NOW).unwrap().mod_revision, 3);

    let response = d.run(NOW, cas("v2", "v4"));
    let Ok(Output::Txn {
        succeeded: false,
        results,
    }) = response.result
    else {
        panic!("stale cas should fail: {response:?}");
    };
    assert!(matches!(&results[0], Output::Get { kv: Some(kv) } if kv.value == b"v3"));
    assert_eq!(response.revision, 3);
    assert_eq!(get(&t.store, "k", NOW).unwrap().value, b"v3");
}

fn txn(compares: Vec<Compare>, success: Vec<TxnOp>, failure: Vec<TxnOp>) -> Command {
    Command::Write(WriteOp::Txn(Txn {
        compares,
        success,
        failure,
    }))
}

fn in_range(start: &str, end: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare {
        key: start.as_bytes().to_vec(),
        op,
        target: CompareTarget::InRange {
            end: Some(end.as_bytes().to_vec()),
            target: Box::new(target),
        },
    }
}

/// The outputs of a transaction that must have taken branch `succeeded`.
fn branch(response: aspen::command::Response, succeeded: bool) -> Vec<Output> {
    match response.result {
        Ok(Output::Txn {
            succeeded: took,
            results,
        }) if took == succeeded => results,
        other => panic!("expected branch {succeeded}: {other:?}"),
    }
}

// Proves etcd's transaction features: a lease compare (0 for no lease or a missing key); a
// range compare holds only when every live key of the range holds it, and on an empty range
// as on a missing key; a range read answers entries in key order with limit, more, count,
// keys-only and count-only, or sorted by any field either way (the limit and the caps taking
// the first entries in that order, ties in key order; a sort by value counting the values it
// holds towards the 4 MiB even when keys only; what the cap leaves out taking everything
// after it in the order with it); a range delete answers the entries it deleted, and one that
// may delete more than TXN_RANGE_KEYS_MAX keys (its own and the transaction's puts into it)
// is refused before anything is written; a nested transaction's branch is decided on the state before the outer one ran (as etcd's),
// and its answer nests; a range read answers at most TXN_RANGE_KEYS_MAX entries.
fn txn_ranges_leases_and_nesting_follow_etcd(kind: Kind) {
    use aspen::api::kv::TXN_RANGE_KEYS_MAX;
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    d.run(
        NOW,
        Command::Write(WriteOp::LeaseGrant {
            id: 7,
            ttl_ms: 60_000,
        }),
    );
    d.run(
        NOW,
        Command::Write(WriteOp::Put(Put {
            lease: Some(7),
            ..Put::new("a/1", "x")
        })),
    );
    d.run(NOW, put("a/2", "x"));
    d.run(NOW, put("a/3", "y"));

    let lease = |key: &str, id: u64| compare(key, CompareOp::Equal, CompareTarget::Lease(id));
    assert_eq!(
        branch(d.run(NOW, txn(vec![lease("a/1", 7)], vec![], vec![])), true),
        vec![]
    );
    assert_eq!(
        branch(d.run(NOW, txn(vec![lease("a/2", 0)], vec![], vec![])), true),
        vec![]
    );
    assert_eq!(
        branch(
            d.run(NOW, txn(vec![lease("none", 0)], vec![], vec![])),
            true
        ),
        vec![]
    );
    branch(
        d.run(NOW, txn(vec![lease("a/1", 8)], vec![], vec![])),
        false,
    );

    let x = || CompareTarget::Value(b"x".to_vec());
    branch(
        d.run(
            NOW,
            txn(
                vec![in_range("a/1", "a/3", CompareOp::Equal, x())],
                vec![],
                vec![],
            ),
        ),
        true,
    );
    branch(
        d.run(
            NOW,
            txn(
                vec![in_range("a/1", "a/4", CompareOp::Equal, x())],
                vec![],
                vec![],
            ),
        ),
        false,
    );
    // No live key: as a missing key (a value never matches, a version is 0).
    branch(
        d.run(
            NOW,
            txn(
                vec![in_range("b/", "c/", CompareOp::Equal, x())],
                vec![],
                vec![],
            ),
        ),
        false,
    );
    let version0 = in_range("b/", "c/", CompareOp::Equal, CompareTarget::Version(0));
    branch(d.run(NOW, txn(vec![version0], vec![], vec![])), true);

    let range_of = |prefix: &[u8]| TxnOp::Range {
        range: KeyRange::prefix(prefix),
        limit: 0,
        keys_only: true,
        count_only: false,
        sort: RangeSort::KEY_ORDER,
    };
    let range = |limit: u32, keys_only: bool, count_only: bool| TxnOp::Range {
        range: KeyRange::prefix(b"a/"),
        limit,
        keys_only,
        count_only,
        sort: RangeSort::KEY_ORDER,
    };
    let results = branch(
        d.run(
            NOW,
            txn(
                vec![],
                vec![
                    range(0, false, false),
                    range(2, true, false),
                    range(0, false, true),
                ],
                vec![],
            ),
        ),
        true,
    );
    let Output::Range {
        kvs,
        count: 3,
        more: false,
    } = &results[0]
    else {
        panic!("{results:?}");
    };
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [b"a/1", b"a/2", b"a/3"]);
    assert_eq!(kvs[2].value, b"y");
    let Output::Range {
        kvs,
        count: 3,
        more: true,
    } = &results[1]
    else {
        panic!("{results:?}");
    };
    assert_eq!(kvs.len(), 2);
    assert!(kvs.iter().all(|kv| kv.value.is_empty()));
    assert!(matches!(&results[2], Output::Range { kvs, count: 3, more: false } if kvs.is_empty()));

    // Sorted range reads: the limit takes the first entries in the asked order, and equal
    // entries keep key order (a/1 and a/2 both hold "x"; a/3 "y"; created in that order).
    let sorted_counting = |by, descending, limit, keys_only, count_only| TxnOp::Range {
        range: KeyRange::prefix(b"a/"),
        limit,
        keys_only,
        count_only,
        sort: RangeSort { by, descending },
    };
    let sorted =
        |by, descending, limit, keys_only| sorted_counting(by, descending, limit, keys_only, false);
    let results = branch(
        d.run(
            NOW,
            txn(
                vec![],
                vec![
                    sorted(SortBy::Value, true, 2, true),
                    sorted(SortBy::CreateRevision, true, 1, false),
                    sorted(SortBy::ModRevision, false, 0, false),
                    sorted(SortBy::Key, true, 2, false),
                    sorted(SortBy::Value, false, 0, false),
                    sorted_counting(SortBy::Version, false, 1, false, true),
                ],
                vec![],
            ),
        ),
        true,
    );
    let answer = |i: usize| match &results[i] {
        Output::Range {
            kvs,
            count: 3,
            more,
        } => (
            kvs.iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect::<Vec<_>>(),
            kvs.iter().all(|kv| kv.value.is_empty()),
            *more,
        ),
        other => panic!("{other:?}"),
    };
    assert_eq!(answer(0), (vec!["a/3".into(), "a/1".into()], true, true));
    assert_eq!(answer(1), (vec!["a/3".into()], false, true));
    assert_eq!(
        answer(2),
        (vec!["a/1".into(), "a/2".into(), "a/3".into()], false, false)
    );
    assert_eq!(answer(3), (vec!["a/3".into(), "a/2".into()], false, true));
    assert_eq!(
        answer(4),
        (vec!["a/1".into(), "a/2".into(), "a/3".into()], false, false)
    );
    assert_eq!(answer(5), (vec![], true, false));

    // Nested: the inner compare sees a/3 = "y" as before the outer put changed it.
    let inner = Txn {
        compares: vec![compare(
            "a/3",
            CompareOp::Equal,
            CompareTarget::Value(b"y".to_vec()),
        )],
        success: vec![TxnOp::Put(Put::new("inner", "saw the old state"))],
        failure: vec![TxnOp::Put(Put::new("inner", "saw the outer put"))],
    };
    let before = d.run(NOW, put("probe", "1")).revision;
    let response = d.run(
        NOW,
        txn(
            vec![],
            vec![
                TxnOp::Put(Put::new("a/3", "z")),
                TxnOp::Txn(Box::new(inner)),
            ],
            vec![],
        ),
    );
    assert_eq!(
        response.revision,
        before + 1,
        "one revision for the whole tree"
    );
    let results = branch(response, true);
    assert!(matches!(&results[1], Output::Txn { succeeded: true, results } if results.len() == 1));
    assert_eq!(
        get(&t.store, "inner", NOW).unwrap().value,
        b"saw the old state"
    );

    // A range delete answering its entries, in key order.
    let results = branch(
        d.run(
            NOW,
            txn(
                vec![],
                vec![TxnOp::DeleteRangePrev(KeyRange::prefix(b"a/"))],
                vec![],
            ),
        ),
        true,
    );
    let Output::DeleteRangePrev { deleted: 3, prev } = &results[0] else {
        panic!("{results:?}");
    };
    let values: Vec<&[u8]> = prev.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, [b"x".as_slice(), b"x", b"z"]);
    assert!(get(&t.store, "a/1", NOW).is_none());

    // Too many keys for an answered delete: refused, nothing written.
    for i in 0..TXN_RANGE_KEYS_MAX {
        d.run(NOW, put(&format!("m/{i:05}"), "v"));
    }
    let at = d.run(NOW, put("m/last", "v")).revision;
    let refused = d.run(
        NOW,
        txn(
            vec![],
            vec![
                TxnOp::Put(Put::new("written?", "no")),
                TxnOp::DeleteRangePrev(KeyRange::prefix(b"m/")),
            ],
            vec![],
        ),
    );
    assert!(
        matches!(refused.result, Err(CommandError::TxnDeleteTooLarge { .. })),
        "{:?}",
        refused.result
    );
    assert_eq!(refused.revision, at);
    assert!(get(&t.store, "written?", NOW).is_none());
    assert!(get(&t.store, "m/00000", NOW).is_some());
    // A range read inside a transaction answers at most TXN_RANGE_KEYS_MAX entries, saying
    // more follow, and counts them all.
    let results = branch(d.run(NOW, txn(vec![], vec![range_of(b"m/")], vec![])), true);
    let Output::Range { kvs, count, more } = &results[0] else {
        panic!("{results:?}");
    };
    assert_eq!(
        (kvs.len(), *count, *more),
        (TXN_RANGE_KEYS_MAX, TXN_RANGE_KEYS_MAX as u64 + 1, true)
    );
    // Sorted, the cap takes the first entries in that order: in descending key order, the
    // last key first and the first key left out.
    let (keys, count, more) = sorted_range(&mut d, b"m/", SortBy::Key, true, true);
    assert_eq!(
        (keys.len(), count, more),
        (TXN_RANGE_KEYS_MAX, TXN_RANGE_KEYS_MAX as u64 + 1, true)
    );
    assert_eq!(
        (keys[0].as_str(), keys.last().unwrap().as_str()),
        ("m/last", "m/00001")
    );

    // The 4 MiB cap: five values of 1 MiB. Keys only, a sort by mod revision answers all
    // five; a sort by value holds the values, so it answers the first three and says more.
    for i in 0..5u8 {
        d.run(NOW, put(&format!("v/{i}"), &"v".repeat(VALUE_BYTES_MAX)));
    }
    let newest_first = ["v/4", "v/3", "v/2", "v/1", "v/0"];
    assert_eq!(
        sorted_range(&mut d, b"v/", SortBy::ModRevision, true, true),
        (newest_first.map(String::from).to_vec(), 5, false)
    );
    // Equal values: in key order.
    let first_three = ["v/0", "v/1", "v/2"].map(String::from).to_vec();
    assert_eq!(
        sorted_range(&mut d, b"v/", SortBy::Value, true, true),
        (first_three.clone(), 5, true)
    );
    // What the 4 MiB cap leaves out, everything after it in the order stays out: a small
    // value created after four of 1 MiB is not answered in place of the fourth.
    d.run(NOW, put("v/5", "small"));
    assert_eq!(
        sorted_range(&mut d, b"v/", SortBy::CreateRevision, false, false),
        (first_three, 6, true)
    );

    // Only the transaction's puts into an answered delete's range count towards its bound:
    // three values of 1 MiB deleted with their entries, beside a fourth put elsewhere.
    let mib = "w".repeat(VALUE_BYTES_MAX);
    for i in 0..3 {
        d.run(NOW, put(&format!("w/{i}"), &mib));
    }
    let ops = vec![
        TxnOp::Put(Put::new("elsewhere", mib.clone())),
        TxnOp::DeleteRangePrev(KeyRange::prefix(b"w/")),
    ];
    let results = branch(d.run(NOW, txn(vec![], ops, vec![])), true);
    let deleted = matches!(&results[1], Output::DeleteRangePrev { deleted: 3, .. });
    assert!(deleted, "the three keys under w/ deleted");
}

/// A transaction reading every key under `prefix` sorted by `by`: the keys it answered, its
/// count and whether it said more.
fn sorted_range(
    d: &mut Driver,
    prefix: &[u8],
    by: SortBy,
    descending: bool,
    keys_only: bool,
) -> (Vec<String>, u64, bool) {
    let op = TxnOp::Range {
        range: KeyRange::prefix(prefix),
        limit: 0,
        keys_only,
        count_only: false,
        sort: RangeSort { by, descending },
    };
    let results = branch(d.run(NOW, txn(vec![], vec![op], vec![])), true);
    let Output::Range { kvs, count, more } = &results[0] else {
        panic!("{results:?}");
    };
    let keys = kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned());
    (keys.collect(), *count, *more)
}

// Proves every limit is enforced with a typed error naming it, and that a refused command,
// including a Txn refused after its compares ran, changes no key and no revision.
fn refused_commands_change_nothing(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    d.run(NOW, put("keep", "v"));
    let before = all_keys(&t.store, NOW);
    let too_many = vec![TxnOp::Get { key: b"k".to_vec() }; TXN_OPS_MAX + 1];
    let cases: Vec<(Command, CommandError)> = vec![
        (put("", "v"), CommandError::KeyEmpty),
        (
            Command::Write(WriteOp::Put(Put::new(vec![b'k'; KEY_BYTES_MAX + 1], "v"))),
            CommandError::KeyTooLarge {
                bytes: KEY_BYTES_MAX as u64 + 1,
                max: KEY_BYTES_MAX as u64,
            },
        ),
        (
            Command::Write(WriteOp::Put(Put::new("k", vec![0u8; VALUE_BYTES_MAX + 1]))),
            CommandError::ValueTooLarge {
                bytes: VALUE_BYTES_MAX as u64 + 1,
                max: VALUE_BYTES_MAX as u64,
            },
        ),
        (
            Command::Write(WriteOp::Put(Put {
                lease: Some(7),
                ttl_ms: Some(10),
                ..Put::new("k", "v")
            })),
            CommandError::LeaseAndTtl,
        ),
        (
            Command::Write(WriteOp::Put(Put {
                ttl_ms: Some(0),
                ..Put::new("k", "v")
            })),
            CommandError::TtlOutOfRange {
                ttl_ms: 0,
                max: aspen::limits::TTL_MS_MAX,
            },
        ),
        (
            Command::Write(WriteOp::Put(Put {
                lease: Some(7),
                ..Put::new("k", "v")
            })),
            CommandError::LeaseNotFound { id: 7 },
        ),
        (
            Command::Write(WriteOp::Txn(Txn {
                compares: vec![],
                success: too_many,
                failure: vec![],
            })),
            CommandError::TooManyTxnOps {
                list: aspen::api::TxnList::Success,
                count: TXN_OPS_MAX as u64 + 1,
                max: TXN_OPS_MAX as u64,
            },
        ),
        (
            Command::Write(WriteOp::Txn(Txn {
                compares: vec![compare(
                    "keep",
                    CompareOp::Equal,
                    CompareTarget::Exists(true),
                )],
                success: vec![
                    TxnOp::Put(Put::new("first", "written?")),
                    TxnOp::Put(Put {
                        lease: Some(9),
                        ..Put::new("second", "v")
                    }),
                ],
                failure: vec![],
            })),
            CommandError::LeaseNotFound { id: 9 },
        ),
        (
            Command::Write(WriteOp::DeleteRange(KeyRange {
                start: b"z".to_vec(),
                end: Some(b"a".to_vec()),
            })),
            CommandError::RangeReversed,
        ),
        (
            Command::Write(WriteOp::LeaseRevoke { id: 5 }),
            CommandError::LeaseNotFound { id: 5 },
        ),
        (
            Command::Write(WriteOp::LeaseKeepAlive { id: 5 }),
            CommandError::LeaseNotFound { id: 5 },
        ),
        (
            Command::Write(WriteOp::LeaseRevoke { id: 0 }),
            CommandError::LeaseIdZero,
        ),
    ];
    for (command, expected) in cases {
        let response = d.run(NOW, command);
        assert_eq!(response.result, Err(expected.clone()));
        assert_eq!(
            response.revision, 1,
            "{expected} must not change the revision"
        );
        assert!(expected.to_string().starts_with("storage: "));
    }
    assert_eq!(all_keys(&t.store, NOW), before);
}

// Proves a TTL hides a key exactly at its deadline (judged by the reader's clock), that the
// expiry index finds it, that Expire re-checks the deadline with the command's clock, and that
// a put over an expired key starts a new key.
fn ttl_hides_keys_and_expire_deletes_them(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    d.run(
        NOW,
        Command::Write(WriteOp::Put(Put {
            ttl_ms: Some(500),
            ..Put::new("t", "v")
        })),
    );
    d.run(NOW, put("plain", "v"));
    assert!(get(&t.store, "t", NOW + 499).is_some());
    assert_eq!(
        get(&t.store, "t", NOW + 499).unwrap().expires_at_ms,
        Some(NOW + 500)
    );
    assert!(get(&t.store, "t", NOW + 500).is_none());
    let view = t.store.read(NOW + 500).unwrap();
    assert_eq!(view.count(&KeyRange::prefix(b"")).unwrap(), 1);
    assert_eq!(
        view.expired_keys(NOW + 499, 10).unwrap(),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(
        view.expired_keys(NOW + 500, 10).unwrap(),
        vec![b"t".to_vec()]
    );

    let early = d.run(
        NOW + 499,
        Command::Expire {
            keys: vec![b"t".to_vec(), b"plain".to_vec()],
            leases: vec![],
        },
    );
    assert_eq!(
        early.result,
        Ok(Output::Expire {
            keys_deleted: 0,
            leases_revoked: 0
        })
    );
    assert_eq!(early.revision, 2);
    let on_time = d.run(
        NOW + 500,
        Command::Expire {
            keys: vec![b"t".to_vec()],
            leases: vec![],
        },
    );
    assert_eq!(
        on_time.result,
        Ok(Output::Expire {
            keys_deleted: 1,
            leases_revoked: 0
        })
    );
    assert_eq!(on_time.revision, 3);
    assert!(
        t.store
            .read(NOW + 500)
            .unwrap()
            .expired_keys(u64::MAX, 10)
            .unwrap()
            .is_empty()
    );

    // (After the clock reached NOW + 500: a command stamped earlier would run at that.)
    d.run(
        NOW + 600,
        Command::Write(WriteOp::Put(Put {
            ttl_ms: Some(10),
            ..Put::new("t", "v")
        })),
    );
    d.run(NOW + 620, put("t", "again"));
    let kv = get(&t.store, "t", NOW + 620).unwrap();
    assert_eq!((kv.version, kv.expires_at_ms), (1, None));
    assert!(
        t.store
            .read(NOW + 620)
            .unwrap()
            .expired_keys(u64::MAX, 10)
            .unwrap()
            .is_empty()
    );
}

// Proves leases: auto ids, attaching keys, the lease index, keep-alive moving the deadline,
// expired-lease lookup, and revoke/expire deleting every attached key as one revision.
fn leases_attach_extend_and_revoke_keys(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    let granted = d.run(
        NOW,
        Command::Write(WriteOp::LeaseGrant {
            id: 0,
            ttl_ms: 1_000,
        }),
    );
    assert_eq!(
        granted.result,
        Ok(Output::Lease {
            id: 1,
            ttl_ms: 1_000,
            deadline_ms: NOW + 1_000
        })
    );
    assert_eq!(granted.revision, 0, "granting a lease is not a revision");
    let second = d.run(
        NOW,
        Command::Write(WriteOp::LeaseGrant { id: 0, ttl_ms: 50 }),
    );
    assert!(matches!(second.result, Ok(Output::Lease { id: 2, .. })));
    assert_eq!(
        d.run(
            NOW,
            Command::Write(WriteOp::LeaseGrant { id: 2, ttl_ms: 5 })
        )
        .result,
        Err(CommandError::LeaseExists { id: 2 })
    );
    for key in ["l/a", "l/b", "l/c"] {
        d.run(
            NOW,
            Command::Write(WriteOp::Put(Put {
                lease: Some(1),
                ..Put::new(key, "v")
            })),
        );
    }
    d.run(
        NOW,
        Command::Write(WriteOp::Put(Put {
            lease: Some(2),
            ..Put::new("short", "v")
        })),
    );
    d.run(NOW, put("l/b", "detached by a put without lease"));
    let view = t.store.read(NOW).unwrap();
    assert_eq!(
        view.lease_keys(1, 10).unwrap(),
        vec![b"l/a".to_vec(), b"l/c".to_vec()]
    );
    assert_eq!(view.expired_leases(NOW + 50, 10).unwrap(), vec![2]);

    let kept = d.run(NOW + 900, Command::Write(WriteOp::LeaseKeepAlive { id: 1 }));
    assert_eq!(
        kept.result,
        Ok(Output::Lease {
            id: 1,
            ttl_ms: 1_000,
            deadline_ms: NOW + 1_900
        })
    );
    let view = t.store.read(NOW + 1_000).unwrap();
    assert_eq!(view.expired_leases(NOW + 1_000, 10).unwrap(), vec![2]);
    assert!(view.lease(1).unwrap().is_some());

    let before = view.revision();
    let expired = d.run(
        NOW + 1_000,
        Command::Expire {
            keys: vec![],
            leases: vec![1, 2],
        },
    );
    assert_eq!(
        expired.result,
        Ok(Output::Expire {
            keys_deleted: 1,
            leases_revoked: 1
        }),
        "only lease 2 has expired at the command's clock"
    );
    assert_eq!(expired.revision, before + 1);
    assert!(get(&t.store, "short", NOW + 1_000).is_none());

    let revoked = d.run(NOW + 1_000, Command::Write(WriteOp::LeaseRevoke { id: 1 }));
    assert_eq!(revoked.result, Ok(Output::LeaseRevoke { keys_deleted: 2 }));
    assert_eq!(revoked.revision, before + 2);
    let left: Vec<_> = all_keys(&t.store, NOW)
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, vec![b"l/b".to_vec()]);
    assert!(t.store.read(NOW).unwrap().leases(0, 10).unwrap().is_empty());
}

/// Builds a state with plain keys, TTL keys, leased keys and leases.
fn populate(d: &mut Driver) {
    for i in 0..300 {
        d.run(NOW, put(&format!("k/{i:03}"), &format!("value {i}")));
    }
    d.run(
        NOW,
        Command::Write(WriteOp::LeaseGrant {
            id: 0,
            ttl_ms: 10_000,
        }),
    );
    d.run(
        NOW,
        Command::Write(WriteOp::LeaseGrant { id: 40, ttl_ms: 20 }),
    );
    for i in 0..20 {
        d.run(
            NOW,
            Command::Write(WriteOp::Put(Put {
                lease: Some(1 + (i % 2) * 39),
                ..Put::new(format!("lease/{i:02}"), "v")
            })),
        );
        d.run(
            NOW,
            Command::Write(WriteOp::Put(Put {
                ttl_ms: Some(10 + i),
                ..Put::new(format!("ttl/{i:02}"), "v")
            })),
        );
    }
    d.run(
        NOW,
        Command::Write(WriteOp::Delete {
            key: b"k/007".to_vec(),
            prev_kv: false,
        }),
    );
}

// Proves a snapshot built from one store and installed into a fresh one reproduces the same
// keys, revisions, leases, lease and expiry indexes, raises `committed`, and passes validation.
fn snapshot_restores_the_same_state_into_a_fresh_store(kind: Kind) {
    let source = open(kind);
    let mut d = Driver::new(source.store.clone());
    populate(&mut d);
    let (meta, mut file) = source.store.build_snapshot().unwrap();
    let summary = verify_snapshot_file(&mut file).unwrap();
    assert_eq!(summary.keys, 339);
    assert_eq!(summary.leases, 2);

    let target = open(kind);
    target.store.install_snapshot(&meta, &mut file).unwrap();
    assert_eq!(all_keys(&target.store, 0), all_keys(&source.store, 0));
    let (src, dst) = (
        source.store.read(NOW + 15).unwrap(),
        target.store.read(NOW + 15).unwrap(),
    );
    assert_eq!(dst.revision(), src.revision());
    assert_eq!(dst.leases(0, 10).unwrap(), src.leases(0, 10).unwrap());
    assert_eq!(
        dst.lease_keys(40, 100).unwrap(),
        src.lease_keys(40, 100).unwrap()
    );
    assert_eq!(dst.lease_keys(40, 100).unwrap().len(), 10);
    assert_eq!(
        dst.expired_keys(NOW + 15, 100).unwrap(),
        src.expired_keys(NOW + 15, 100).unwrap()
    );
    assert_eq!(dst.expired_keys(NOW + 15, 100).unwrap().len(), 6);
    assert_eq!(dst.expired_leases(NOW + 20, 10).unwrap(), vec![40]);
    assert_eq!(
        target.store.applied_state().unwrap(),
        source.store.applied_state().unwrap()
    );
    assert_eq!(target.store.read_committed().unwrap(), meta.last_log_id);
    target.store.validate().expect("validation after install");

    // The installed snapshot is the target's current one, and the state machine carries on.
    let (current, _) = target
        .store
        .current_snapshot()
        .unwrap()
        .expect("current snapshot");
    assert_eq!(current.last_log_id, meta.last_log_id);
    let mut next = Driver::new(target.store.clone());
    let response = next.run(
        NOW,
        Command::Write(WriteOp::LeaseGrant { id: 0, ttl_ms: 5 }),
    );
    assert!(matches!(response.result, Ok(Output::Lease { id: 41, .. })));
}

// Proves a snapshot with one flipped byte, or cut short, is refused with an error naming the
// problem, and the target's state is left exactly as it was.
fn corrupt_snapshot_is_refused_and_changes_nothing(kind: Kind) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let source = open(kind);
    let mut d = Driver::new(source.store.clone());
    populate(&mut d);
    let (meta, mut file) = source.store.build_snapshot().unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();

    let target = open(kind);
    let mut td = Driver::new(target.store.clone());
    td.run(NOW, put("mine", "untouched"));
    let before = all_keys(&target.store, 0);

    let flipped = {
        let mut b = bytes.clone();
        let at = b.len() / 2;
        b[at] ^= 0x40;
        b
    };
    let truncated = bytes[..bytes.len() - 9].to_vec();
    for (name, content) in [("flipped", flipped), ("truncated", truncated)] {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&content).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let error = target.store.install_snapshot(&meta, &mut f).unwrap_err();
        assert!(matches!(error, Error::Corrupt { .. }), "{name}: {error}");
        assert!(
            error.to_string().starts_with("storage: snapshot"),
            "{name}: {error}"
        );
        assert_eq!(
            all_keys(&target.store, 0),
            before,
            "{name} changed the state"
        );
    }
}

// Proves the cross-storage validation refuses a file whose meta says last_applied > committed,
// with both numbers in the typed error, and still does after the file is reopened.
fn validation_names_applied_and_committed(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    for i in 0..5 {
        d.run(NOW, put(&format!("k{i}"), "v"));
    }
    t.store
        .validate()
        .expect("a store driven like openraft validates");
    t.store
        .save_committed(Some(&crate::util::log_id(3)))
        .unwrap();
    // The saved value reaches the file with the next commit that writes it: the close.
    t.store.close().unwrap();
    let expected = ValidationError::AppliedBeyondCommitted {
        last_applied: aspen::storage::error::IndexText(Some(5)),
        committed: aspen::storage::error::IndexText(Some(3)),
    };
    let check = |store: &Store| match store.validate() {
        Err(Error::Validation(error)) => {
            assert_eq!(error, expected);
            assert_eq!(
                error.to_string(),
                "storage: last_applied (5) exceeds committed (3)"
            );
        }
        other => panic!("expected a validation error, got {other:?}"),
    };
    check(&t.store);
    if kind == Kind::File {
        t.store.close().unwrap();
        let dir = t.dir.as_ref().unwrap().path().to_path_buf();
        drop(d);
        let store = std::sync::Arc::into_inner(t.store).expect("sole owner");
        drop(store);
        let reopened = Store::open(&crate::util::small(aspen::storage::StoreOptions::file(
            &dir,
        )))
        .unwrap();
        check(&reopened);
    }
}

// Proves group commit's state machine side: a `Command::Batch` entry applies its writes in
// order, each with its own revision and its own answer (a refused one changes nothing and does
// not stop the others), in one entry; a batch over the limit is refused whole.
fn a_batch_applies_each_request_with_its_own_revision_and_answer(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    assert_eq!(d.run(NOW, put("a", "0")).revision, 1);
    let batch = Command::Batch(vec![
        item(WriteOp::Put(Put {
            prev_kv: true,
            ..Put::new("a", "1")
        })),
        item(WriteOp::LeaseRevoke { id: 77 }),
        item(WriteOp::Put(Put::new("b", "2"))),
        item(WriteOp::Delete {
            key: b"a".to_vec(),
            prev_kv: false,
        }),
    ]);
    let response = d.run(NOW, batch);
    assert_eq!(response.result, Ok(Output::None));
    assert_eq!(response.revision, 4, "three writes changed the state");
    let answers: Vec<_> = response
        .batch
        .iter()
        .map(|r| (r.revision, r.result.clone()))
        .collect();
    let Ok(Output::Put { prev: Some(prev) }) = &answers[0].1 else {
        panic!("the first put sees the value before the batch: {answers:?}");
    };
    assert_eq!((answers[0].0, prev.value.as_slice()), (2, b"0".as_slice()));
    assert_eq!(
        answers[1],
        (2, Err(CommandError::LeaseNotFound { id: 77 })),
        "a refused write keeps the revision and the others go on"
    );
    assert_eq!(answers[2].0, 3);
    assert_eq!(
        answers[3],
        (
            4,
            Ok(Output::Delete {
                deleted: 1,
                prev: None
            })
        )
    );
    assert!(get(&t.store, "a", NOW).is_none());
    assert_eq!(get(&t.store, "b", NOW).unwrap().mod_revision, 3);

    let too_many = aspen::limits::PROPOSAL_BATCH_MAX + 1;
    let over = Command::Batch(
        (0..too_many)
            .map(|i| item(WriteOp::Put(Put::new(format!("c{i}"), "3"))))
            .collect(),
    );
    let response = d.run(NOW, over);
    assert!(
        matches!(response.result, Err(CommandError::BadBatch { .. })),
        "{response:?}"
    );
    assert_eq!(response.revision, 4);
    assert!(response.batch.is_empty());
    assert!(get(&t.store, "c0", NOW).is_none());
}

fn item(op: WriteOp) -> aspen::command::BatchItem {
    aspen::command::BatchItem { now_ms: NOW, op }
}

// Proves a batched entry follows the log's rules like any other: appended but truncated (a new
// leader's log disagrees), it is gone from the log, none of its writes reaches the state, and
// the entry that replaces it applies at the same index.
fn a_truncated_batch_entry_is_never_applied(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    d.run(NOW, put("a", "0"));
    let batch = Command::Batch(vec![
        item(WriteOp::Put(Put::new("a", "1"))),
        item(WriteOp::Put(Put::new("b", "1"))),
    ]);
    let appended = crate::util::entry(2, NOW, batch);
    t.store.append(&[appended]).unwrap();
    t.store.truncate(2).unwrap();
    assert_eq!(t.store.log_state().unwrap().1.map(|id| id.index), Some(1));
    assert!(t.store.log_entries(2..).unwrap().is_empty());
    let response = Driver::new(t.store.clone()).run(NOW, put("c", "2"));
    assert_eq!(response.revision, 2);
    assert_eq!(get(&t.store, "a", NOW).unwrap().value, b"0");
    assert!(get(&t.store, "b", NOW).is_none());
    assert_eq!(
        t.store.applied_state().unwrap().0.map(|id| id.index),
        Some(2)
    );
}

// Proves the lease-id counter cannot overflow in apply (the robustness issue's item 6): after
// a lease takes the largest id, a grant without an id gets the first free one from the
// bottom, and once the top is taken too the search still ends with a free id.
fn lease_ids_never_overflow(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    let grant = |id| Command::Write(WriteOp::LeaseGrant { id, ttl_ms: 60_000 });
    let top = d.run(NOW, grant(u64::MAX));
    assert!(
        matches!(top.result, Ok(Output::Lease { id: u64::MAX, .. })),
        "{top:?}"
    );
    let next = d.run(NOW, grant(0));
    assert!(
        matches!(next.result, Ok(Output::Lease { id: 1, .. })),
        "{next:?}"
    );
    let again = d.run(NOW, grant(0));
    assert!(
        matches!(again.result, Ok(Output::Lease { id: 2, .. })),
        "{again:?}"
    );
    d.run(NOW, grant(3));
    let gap = d.run(NOW, grant(0));
    assert!(
        matches!(gap.result, Ok(Output::Lease { id: 4, .. })),
        "{gap:?}"
    );
}

// Proves the state machine's clock never goes back (the robustness issue's item 4): after a
// command stamped later, one stamped earlier (a leader whose clock is behind) runs at the
// later instant, so a key whose TTL passed is neither shown to a reader whose clock is behind
// nor kept by an Expire from such a leader, and a TTL given then counts from the later one.
fn the_clock_never_goes_back(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    d.run(
        NOW,
        Command::Write(WriteOp::Put(Put {
            ttl_ms: Some(100),
            ..Put::new("ttl", "v")
        })),
    );
    d.run(NOW + 500, put("other", "v"));
    assert!(
        get(&t.store, "ttl", NOW).is_none(),
        "an expired key came back"
    );
    let expire = d.run(
        NOW,
        Command::Expire {
            keys: vec![b"ttl".to_vec()],
            leases: vec![],
        },
    );
    assert!(
        matches!(
            expire.result,
            Ok(Output::Expire {
                keys_deleted: 1,
                ..
            })
        ),
        "{expire:?}"
    );
    d.run(
        NOW,
        Command::Write(WriteOp::Put(Put {
            ttl_ms: Some(1_000),
            ..Put::new("late", "v")
        })),
    );
    let late = get(&t.store, "late", NOW).expect("late");
    assert_eq!(late.expires_at_ms, Some(NOW + 1_500));
}

// Proves the snapshot handed to openraft for sending is checked whole (the robustness issue's
// item 5): with a byte of `current.snap` flipped past its header, the store answers with a new
// snapshot of its state, which checks out, instead of the damaged file.
fn a_damaged_current_snapshot_is_rebuilt_before_it_is_sent(kind: Kind) {
    let t = open(kind);
    let mut d = Driver::new(t.store.clone());
    populate(&mut d);
    let (meta, _) = t.store.build_snapshot().unwrap();
    let path = t.store.snapshot_dir().join("current.snap");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let (sent_meta, mut file) = t.store.current_snapshot().unwrap().expect("a snapshot");
    let summary = verify_snapshot_file(&mut file).expect("the snapshot sent checks out");
    assert_eq!(summary.meta, sent_meta);
    assert_eq!(sent_meta.last_log_id, meta.last_log_id);
    assert_eq!(summary.keys, 339);
}
