//! Subspaces: a key prefix made of a packed tuple, under which keys are packed tuples too
//! (FoundationDB's directory-free subspace). Pure: no I/O.

use crate::api::KeyRange;
use crate::storage::tuple::{Element, Tuple, TupleError};

/// A key prefix; every key built from it sorts inside [`Subspace::range`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subspace {
    prefix: Vec<u8>,
}

impl Subspace {
    /// The subspace of keys under a packed tuple.
    pub fn new(tuple: &Tuple) -> Self {
        Subspace {
            prefix: tuple.pack(),
        }
    }

    /// A subspace under raw prefix bytes.
    pub fn from_bytes(prefix: impl Into<Vec<u8>>) -> Self {
        Subspace {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The nested subspace `self + element`.
    pub fn child(&self, element: impl Into<Element>) -> Subspace {
        let mut prefix = self.prefix.clone();
        Tuple(vec![element.into()]).pack_into(&mut prefix);
        Subspace { prefix }
    }

    /// The key of `tuple` inside this subspace.
    pub fn pack(&self, tuple: &Tuple) -> Vec<u8> {
        let mut key = self.prefix.clone();
        tuple.pack_into(&mut key);
        key
    }

    /// The tuple of a key of this subspace.
    pub fn unpack(&self, key: &[u8]) -> Result<Tuple, TupleError> {
        let rest = key.strip_prefix(self.prefix.as_slice()).ok_or(TupleError {
            offset: 0,
            reason: "key is outside the subspace",
        })?;
        Tuple::unpack(rest).map_err(|e| TupleError {
            offset: e.offset + self.prefix.len(),
            reason: e.reason,
        })
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
    }

    /// Every key packed in this subspace: `[prefix + 0x00, prefix + 0xff)`.
    pub fn range(&self) -> KeyRange {
        let mut start = self.prefix.clone();
        start.push(0x00);
        let mut end = self.prefix.clone();
        end.push(0xff);
        KeyRange {
            start,
            end: Some(end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves keys packed in a subspace unpack to their tuple, sort inside its range, and that
    // a sibling subspace's keys fall outside it.
    #[test]
    fn pack_unpack_and_range() {
        let users = Subspace::new(&Tuple::new().push("users"));
        let key = users.pack(&Tuple::new().push(42i64).push("name"));
        assert_eq!(
            users.unpack(&key).unwrap(),
            Tuple::new().push(42i64).push("name")
        );
        assert!(users.range().contains(&key));
        let other = Subspace::new(&Tuple::new().push("usersx"));
        assert!(
            !users
                .range()
                .contains(&other.pack(&Tuple::new().push(1i64)))
        );
        assert!(users.unpack(b"nope").is_err());
        let child = users.child(42i64);
        assert!(child.contains(&key));
        assert_eq!(child.unpack(&key).unwrap(), Tuple::new().push("name"));
    }
}
