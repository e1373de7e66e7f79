//! Decoders for the lists and maps a client request carries, bounded by their announced
//! length: postcard says how many elements follow before any of them, so a list past its
//! limit is refused before a single element is decoded or allocated (`#[serde(deserialize_with
//! = "...")]` on the fields).

use serde::Deserialize;

/// Decodes a list of at most `MAX` elements, refusing a longer one from its announced length
/// before any element is decoded (a 2-byte operation decodes into an 88-byte element, so a
/// frame of tiny elements would otherwise inflate some forty times before any check).
pub(crate) fn vec<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const MAX: usize>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> serde::de::Visitor<'de> for Bounded<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX} elements")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let too_long = |len| {
                serde::de::Error::invalid_length(len, &format!("at most {MAX} elements").as_str())
            };
            if let Some(len) = seq.size_hint().filter(|len| *len > MAX) {
                return Err(too_long(len));
            }
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX));
            while let Some(element) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(too_long(MAX + 1));
                }
                out.push(element);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_seq(Bounded::<T, MAX>(std::marker::PhantomData))
}

/// Decodes a map of at most `MAX` entries, refusing a longer one before its entries (as
/// [`vec`] does for lists).
pub(crate) fn map<'de, D, K, V, const MAX: usize>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<K, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Bounded<K, V, const MAX: usize>(std::marker::PhantomData<(K, V)>);

    impl<'de, K, V, const MAX: usize> serde::de::Visitor<'de> for Bounded<K, V, MAX>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        type Value = std::collections::BTreeMap<K, V>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a map of at most {MAX} entries")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let too_long = |len| {
                serde::de::Error::invalid_length(len, &format!("at most {MAX} entries").as_str())
            };
            if let Some(len) = map.size_hint().filter(|len| *len > MAX) {
                return Err(too_long(len));
            }
            let mut out = std::collections::BTreeMap::new();
            let mut read = 0usize;
            while let Some((key, value)) = map.next_entry()? {
                read += 1;
                if read > MAX {
                    return Err(too_long(read));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(Bounded::<K, V, MAX>(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use crate::api::kv::{Txn, TxnOp};
    use crate::limits::TXN_OPS_MAX;

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
}
