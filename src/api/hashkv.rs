//! Replica comparison (`aspen cluster hashkv`): each member's hash of its key space at one
//! point of the log, and the report that compares them. The leader proposes a hash check (a
//! log entry that changes nothing); every member hashes its `kv` table as it stands right
//! after applying that entry, so equal replicas give equal hashes whatever they applied since.

use serde::{Deserialize, Serialize};

use crate::api::kv::NodeId;

/// One member's hash of its key space just after applying a hash check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvHash {
    /// The cluster revision at the check (the same on every member that applied it).
    pub revision: u64,
    /// The log index of the check entry.
    pub applied_index: u64,
    /// Keys stored (expired keys not yet removed included).
    pub keys: u64,
    /// CRC-32 of every stored key and record, in key order.
    pub hash: u32,
}

/// Why a member has no hash for a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HashKvError {
    /// The member had not applied the check within the wait (lagging, or it was down).
    #[error("check {check} not applied here within {waited_ms} ms (lagging or down?)")]
    NotApplied { check: u64, waited_ms: u64 },
    /// The member could not be asked (unreachable, refused the request).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Reading the member's store failed, or too many checks were hashing at once.
    #[error("hashing failed: {0}")]
    Failed(String),
}

/// One member's answer to a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    pub id: NodeId,
    pub result: Result<KvHash, HashKvError>,
}

/// What `aspen cluster hashkv` answers: every member's hash at one check, and the members
/// whose hash differs from the agreed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashKvReport {
    /// The leader that ran the check.
    pub leader: NodeId,
    /// The check's id (random, chosen by the leader).
    pub check: u64,
    pub members: Vec<MemberHash>,
    /// Members whose hash differs from the one most members have (the leader's, on a tie):
    /// their key space is not what the others hold at the same point of the log.
    pub mismatched: Vec<NodeId>,
}

impl HashKvReport {
    /// Compares the members' hashes: the reference is the hash most members answered (the
    /// leader's among equally common ones); every member with another hash is mismatched.
    pub fn new(leader: NodeId, check: u64, members: Vec<MemberHash>) -> Self {
        let hashes = || members.iter().filter_map(|m| m.result.as_ref().ok());
        let count = |hash: &KvHash| hashes().filter(|h| *h == hash).count();
        let leader_hash = members
            .iter()
            .find(|m| m.id == leader)
            .and_then(|m| m.result.as_ref().ok());
        let reference = hashes().max_by_key(|hash| (count(hash), Some(*hash) == leader_hash));
        let mismatched = members
            .iter()
            .filter(|m| matches!((&m.result, reference), (Ok(h), Some(r)) if h != r))
            .map(|m| m.id)
            .collect();
        HashKvReport {
            leader,
            check,
            members,
            mismatched,
        }
    }

    /// The revision the check was at (from any member's answer; 0 when none answered).
    pub fn revision(&self) -> u64 {
        let answered = self.members.iter().find_map(|m| m.result.as_ref().ok());
        answered.map_or(0, |hash| hash.revision)
    }

    /// Whether every member answered, with the same hash (a report of no members agrees on
    /// nothing).
    pub fn all_agree(&self) -> bool {
        !self.members.is_empty()
            && self.mismatched.is_empty()
            && self.members.iter().all(|m| m.result.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: NodeId, hash: u32) -> MemberHash {
        MemberHash {
            id,
            result: Ok(KvHash {
                revision: 7,
                applied_index: 9,
                keys: 3,
                hash,
            }),
        }
    }

    // Proves the odd member out is named whichever member leads, a tie goes to the leader's
    // hash, and a member without an answer is not called mismatched (but spoils agreement).
    #[test]
    fn the_member_that_differs_is_named() {
        let report = HashKvReport::new(1, 5, vec![answer(1, 10), answer(2, 10), answer(3, 11)]);
        assert_eq!(report.mismatched, vec![3]);
        assert!(!report.all_agree());
        let report = HashKvReport::new(3, 5, vec![answer(1, 10), answer(2, 10), answer(3, 11)]);
        assert_eq!(report.mismatched, vec![3]);
        let report = HashKvReport::new(2, 5, vec![answer(1, 10), answer(2, 11)]);
        assert_eq!(report.mismatched, vec![1]);
        let silent = MemberHash {
            id: 3,
            result: Err(HashKvError::NotApplied {
                check: 5,
                waited_ms: 10,
            }),
        };
        let report = HashKvReport::new(1, 5, vec![answer(1, 10), answer(2, 10), silent]);
        assert!(report.mismatched.is_empty());
        assert!(!report.all_agree());
        let report = HashKvReport::new(1, 5, vec![answer(1, 10), answer(2, 10)]);
        assert!(report.all_agree());
        assert!(!HashKvReport::new(1, 5, Vec::new()).all_agree());
    }
}
