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

thread_local! {
    /// How deep the decoder is in [`nested`] values on this thread.
    static NESTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Decodes a value that may hold itself (a transaction inside a transaction), refusing one
/// nested deeper than [`crate::limits::TXN_NESTING_MAX`] transactions and a range compare
/// below them: each level is a few bytes on the wire, so a frame could otherwise nest deep
/// enough to overflow the decoder's stack.
pub(crate) fn nested<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            NESTING.with(|depth| depth.set(depth.get() - 1));
        }
    }
    let depth = NESTING.with(|depth| {
        depth.set(depth.get() + 1);
        depth.get()
    });
    let _leave = Leave;
    let max = crate::limits::TXN_NESTING_MAX + 1;
    if depth > max {
        return Err(serde::de::Error::custom(format_args!(
            "transactions or range compares nested more than {max} deep"
        )));
    }
    T::deserialize(deserializer)
}
