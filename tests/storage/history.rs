//! History: reads at a revision agree with every state the store went through, and a read
//! below the history floor or past the current revision is refused naming the bounds.

use std::collections::BTreeMap;

use aspen::api::error::CommandError;
use aspen::api::{KeyRange, KeyValue, Output, Put, WriteOp};
use aspen::command::Command;
use aspen::storage::{ScanOptions, Store, StoreOptions, StoreWrite, restore_backup};
use proptest::prelude::*;

use crate::model::command;
use crate::reference::KEYS;
use crate::util::{Driver, Kind, all_keys, open, small};

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
/// `now_ms` (at least the store's clock): below `floor` a read is refused naming it.
fn check_every_revision(
    store: &aspen::storage::Store,
    states: &States,
    floor: u64,
    now_ms: u64,
) -> Result<(), String> {
    let view = store.read_at(now_ms).map_err(|e| e.to_string())?;
    let found = view.history_floor().map_err(|e| e.to_string())?;
    if found != floor {
        return Err(format!("history floor {found}, want {floor}"));
    }
    let all = ScanOptions {
        limit: 10_000,
        ..ScanOptions::default()
    };
    for revision in 0..=view.revision() {
        let page = view
            .range_at(&KeyRange::prefix(b""), all, revision)
            .map_err(|e| e.to_string())?;
        if revision < floor {
            let want = CommandError::Compacted {
                revision,
                oldest: floor,
            };
            if page.as_ref().err() != Some(&want) {
                return Err(format!("range at compacted revision {revision}: {page:?}"));
            }
            continue;
        }
        let expected = states
            .range(..=revision)
            .next_back()
            .map(|(_, state)| live_at(state, now_ms))
            .unwrap_or_default();
        let page = page.map_err(|e| e.to_string())?;
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

/// One step: a command at an instant, or a compaction to a share (in percent) of the way
/// from the floor to the current revision.
#[derive(Debug, Clone)]
enum Step {
    Command(u64, Command),
    Compact(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        9 => (0u64..250, command()).prop_map(|(now_ms, command)| Step::Command(now_ms, command)),
        1 => (0u64..=100).prop_map(Step::Compact),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    // Proves that a read at any revision kept (a range over every key, and a get of each key)
    // returns exactly the state the store held after the command that made that revision,
    // across random puts, deletes, range deletes, transactions, leases, expiries and history
    // compactions, and that every revision compacted away is refused naming the oldest kept.
    #[test]
    fn reads_at_every_revision_match_the_states_the_store_went_through(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let test_store = open(Kind::InMemory);
        let mut driver = Driver::new(test_store.store.clone());
        let mut states = States::new();
        let (mut clock, mut floor, mut revision) = (0, 0, 0);
        for step in steps {
            let response = match step {
                Step::Command(now_ms, command) => {
                    clock = clock.max(now_ms);
                    let compacts = match &command {
                        Command::Write(WriteOp::Compact { revision }) => Some(*revision),
                        _ => None,
                    };
                    let response = driver.run(now_ms, command);
                    if let (Some(to), Ok(_)) = (compacts, &response.result) {
                        floor = to;
                    }
                    response
                }
                Step::Compact(share) => {
                    let to = floor + (revision - floor) * share / 100;
                    let response = driver.run(clock, Command::Write(WriteOp::Compact { revision: to }));
                    prop_assert_eq!(&response.result, &Ok(aspen::api::Output::None));
                    floor = to;
                    response
                }
            };
            revision = response.revision;
            states.insert(revision, all_keys(&test_store.store, 0));
        }
        if let Err(difference) = check_every_revision(&test_store.store, &states, floor, clock) {
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

/// The value of `k` at each revision from 0 to 5 (`Err`: refused, with its message).
fn values(store: &aspen::storage::Store) -> Vec<Result<Option<String>, String>> {
    let view = store.read_at(0).unwrap();
    (0..=5)
        .map(|revision| match view.get_at(b"k", revision).unwrap() {
            Ok(kv) => Ok(kv.map(|kv| String::from_utf8(kv.value).unwrap())),
            Err(refused) => Err(refused.to_string()),
        })
        .collect()
}

// Proves reads outside the history are refused naming the bounds (past the current revision,
// below a compaction), that a compaction below the floor or past the current revision is
// refused and changes nothing, and that a snapshot and a backup carry the history kept: the
// store filled from either answers every revision as the source does.
#[test]
fn history_bounds_hold_through_compaction_snapshots_and_backups() {
    for kind in [Kind::File, Kind::InMemory] {
        let source = open(kind);
        let mut driver = Driver::new(source.store.clone());
        for (i, value) in ["a", "b", "c", "d"].iter().enumerate() {
            driver.run(i as u64, put("k", value));
        }
        let compact = |revision| Command::Write(WriteOp::Compact { revision });
        assert_eq!(driver.run(9, compact(2)).result, Ok(Output::None));
        assert_eq!(
            driver.run(9, compact(1)).result,
            Err(CommandError::Compacted {
                revision: 1,
                oldest: 2
            })
        );
        assert_eq!(
            driver.run(9, compact(5)).result,
            Err(CommandError::FutureRevision {
                revision: 5,
                current: 4
            })
        );
        let compacted = |r: u64| {
            Err(format!(
                "revision {r} is compacted: the oldest revision kept is 2"
            ))
        };
        let want = vec![
            compacted(0),
            compacted(1),
            Ok(Some("b".to_string())),
            Ok(Some("c".to_string())),
            Ok(Some("d".to_string())),
            Err("revision 5 is a future revision: the current revision is 4".to_string()),
        ];
        assert_eq!(values(&source.store), want);

        let (meta, mut file) = source.store.build_snapshot().unwrap();
        let from_snapshot = open(kind);
        from_snapshot
            .store
            .install_snapshot(&meta, &mut file)
            .unwrap();
        assert_eq!(values(&from_snapshot.store), want);

        let (_, bytes) = source.store.write_backup(Vec::new(), 7, |_, _| {}).unwrap();
        let backup = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(backup.path(), &bytes).unwrap();
        let target = tempfile::tempdir().unwrap();
        restore_backup(backup.path(), &target.path().join("node"), 4 << 20, 10).unwrap();
        let restored = Store::open(&small(StoreOptions::file(target.path().join("node")))).unwrap();
        assert_eq!(values(&restored), want);

        // Writes after the install are history from there on.
        let mut driver = Driver::new(from_snapshot.store.clone());
        driver.run(10, put("k", "e"));
        let view = from_snapshot.store.read_at(0).unwrap();
        let value_at = |revision| view.get_at(b"k", revision).unwrap().unwrap().unwrap().value;
        assert_eq!((value_at(4), value_at(5)), (b"d".to_vec(), b"e".to_vec()));
    }
}
