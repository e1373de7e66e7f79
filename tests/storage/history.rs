//! History: reads at a revision agree with every state the store went through, and a read
//! below the history floor or past the current revision is refused naming the bounds.

use std::collections::BTreeMap;

use aspen::api::{KeyRange, KeyValue, Put, WriteOp};
use aspen::command::Command;
use aspen::storage::{ScanOptions, StoreWrite};
use aspen::storage::history::RevisionError;
use proptest::prelude::*;

use crate::model::command;
use crate::reference::KEYS;
use crate::util::{Driver, Kind, all_keys, open};

/// Every record stored (live or not) after the command that made `revision`.
type States = BTreeMap<u64, Vec<KeyValue>>;

/// The keys of `state` a reader sees at `now_ms`.
fn live_at(state: &[KeyValue], now_ms: u64) -> Vec<KeyValue> {
    state
        .iter()
        .filter(|kv| kv.expires_at_ms.is_none_or(|at| at > now_ms))
        .cloned()
        .collect()
}

/// Checks every revision from 0 to the last against the states recorded, judging expiry at
/// `now_ms` (at least the store's clock).
fn check_every_revision(
    store: &aspen::storage::Store,
    states: &States,
    now_ms: u64,
) -> Result<(), String> {
    let view = store.read_at(now_ms).map_err(|e| e.to_string())?;
    if view.history_floor().map_err(|e| e.to_string())? != 0 {
        return Err("a new store's history must start at revision 0".into());
    }
    let all = ScanOptions {
        limit: 10_000,
        ..ScanOptions::default()
    };
    for revision in 0..=view.revision() {
        let expected = states
            .range(..=revision)
            .next_back()
            .map(|(_, state)| live_at(state, now_ms))
            .unwrap_or_default();
        let page = view
            .range_at(&KeyRange::prefix(b""), all.clone(), revision)
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if page.kvs != expected {
            return Err(format!(
                "range at revision {revision}:\n got {:?}\nwant {:?}",
                page.kvs, expected
            ));
        }
        for key in KEYS {
            let got = view
                .get_at(key.as_bytes(), revision)
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let want = expected.iter().find(|kv| kv.key == key.as_bytes());
            if got.as_ref() != want {
                return Err(format!(
                    "get {key} at revision {revision}: got {got:?}, want {want:?}"
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    // Proves that a read at any revision (a range over every key, and a get of each key)
    // returns exactly the state the store held after the command that made that revision,
    // across random puts, deletes, range deletes, transactions, leases and expiries.
    #[test]
    fn reads_at_every_revision_match_the_states_the_store_went_through(
        steps in prop::collection::vec((0u64..250, command()), 1..40)
    ) {
        let test_store = open(Kind::InMemory);
        let mut driver = Driver::new(test_store.store.clone());
        let mut states = States::new();
        let mut clock = 0;
        for (now_ms, command) in steps {
            clock = clock.max(now_ms);
            let response = driver.run(now_ms, command);
            states.insert(response.revision, all_keys(&test_store.store, 0));
        }
        if let Err(difference) = check_every_revision(&test_store.store, &states, clock) {
            prop_assert!(false, "{}", difference);
        }
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Write(WriteOp::Put(Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease: None,
        ttl_ms: None,
        prev_kv: false,
    }))
}

// Proves a read past the current revision is refused naming it, and that a store filled from
// a snapshot keeps no history before the snapshot's revision: a read below it is refused
// naming the oldest revision kept, and the snapshot's own revision reads as the source did.
#[test]
fn reads_outside_the_history_are_refused_naming_the_bounds() {
    for kind in [Kind::File, Kind::InMemory] {
        let source = open(kind);
        let mut driver = Driver::new(source.store.clone());
        for (i, value) in ["a", "b", "c"].iter().enumerate() {
            driver.run(i as u64, put("k", value));
        }
        let view = source.store.read_at(0).unwrap();
        assert_eq!(view.revision(), 3);
        assert_eq!(
            view.get_at(b"k", 4).unwrap(),
            Err(RevisionError::Future {
                revision: 4,
                current: 3
            })
        );
        assert_eq!(
            view.get_at(b"k", 1).unwrap().unwrap().unwrap().value,
            b"a".to_vec()
        );

        let (meta, mut file) = source.store.build_snapshot().unwrap();
        let target = open(kind);
        target.store.install_snapshot(&meta, &mut file).unwrap();
        let view = target.store.read_at(0).unwrap();
        assert_eq!(view.history_floor().unwrap(), 3);
        let refused = view.get_at(b"k", 2).unwrap().unwrap_err();
        assert_eq!(
            refused,
            RevisionError::Compacted {
                revision: 2,
                oldest: 3
            }
        );
        assert_eq!(
            refused.to_string(),
            "revision 2 is compacted: the oldest revision kept is 3"
        );
        assert_eq!(
            view.get_at(b"k", 3).unwrap().unwrap().unwrap().value,
            b"c".to_vec()
        );
        // Writes after the install are history from the floor on.
        let mut driver = Driver::new(target.store.clone());
        driver.run(10, put("k", "d"));
        let view = target.store.read_at(0).unwrap();
        assert_eq!(
            view.get_at(b"k", 3).unwrap().unwrap().unwrap().value,
            b"c".to_vec()
        );
        assert_eq!(
            view.get_at(b"k", 4).unwrap().unwrap().unwrap().value,
            b"d".to_vec()
        );
    }
}
