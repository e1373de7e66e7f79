//! FoundationDB-compatible tuple encoding: typed, order-preserving keys. The bytes of two packed
//! tuples compare exactly as the tuples do (type first, in FoundationDB's type order, then value),
//! so ranges over a tuple prefix are key ranges.
//!
//! Supported element types and their type codes: null (0x00), bytes (0x01), string (0x02), nested
//! tuple (0x05), integers of any sign up to 128 bits (0x0b..=0x1d), float (0x20), double (0x21),
//! false (0x26), true (0x27). This module is pure: no I/O.
//!
//! ```
//! use aspen::storage::tuple::{Tuple, strinc};
//!
//! let key = Tuple::new().push("users").push(42i64).pack();
//! assert_eq!(key, b"\x02users\x00\x15\x2a");
//! assert_eq!(Tuple::unpack(&key).unwrap(), Tuple::new().push("users").push(42i64));
//! // Every key of user 42 sorts inside the tuple's range.
//! let (start, end) = Tuple::new().push("users").push(42i64).range();
//! let name = Tuple::new().push("users").push(42i64).push("name").pack();
//! assert!(start <= name && name < end);
//! assert_eq!(strinc(b"users/"), Some(b"users0".to_vec()));
//! ```
//!
//! Long because the tuple encoding is one format whose encoder and decoder must mirror each other
//! (about 115 of its lines are tests).

use std::cmp::Ordering;

const NULL: u8 = 0x00;
const BYTES: u8 = 0x01;
const STRING: u8 = 0x02;
const NESTED: u8 = 0x05;
const NEG_INT_ARBITRARY: u8 = 0x0b;
const INT_ZERO: u8 = 0x14;
const POS_INT_ARBITRARY: u8 = 0x1d;
const FLOAT: u8 = 0x20;
const DOUBLE: u8 = 0x21;
const FALSE: u8 = 0x26;
const TRUE: u8 = 0x27;
/// Follows a 0x00 inside bytes, strings and nested tuples: "this zero is data".
const ESCAPE: u8 = 0xff;

/// One element of a tuple.
#[derive(Debug, Clone)]
pub enum Element {
    Null,
    Bytes(Vec<u8>),
    String(String),
    Tuple(Tuple),
    Int(i128),
    Float(f32),
    Double(f64),
    Bool(bool),
}

/// An ordered list of elements; packs to bytes that sort as the tuple does.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tuple(pub Vec<Element>);

/// Bytes that are not a packed tuple.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: tuple: {reason} at byte {offset}")]
pub struct TupleError {
    pub offset: usize,
    pub reason: &'static str,
}

impl Element {
    /// FoundationDB's type order: the rank every value of a type shares.
    fn type_rank(&self) -> u8 {
        match self {
            Element::Null => 0,
            Element::Bytes(_) => 1,
            Element::String(_) => 2,
            Element::Tuple(_) => 3,
            Element::Int(_) => 4,
            Element::Float(_) => 5,
            Element::Double(_) => 6,
            Element::Bool(_) => 7,
        }
    }
}

impl Ord for Element {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Element::Bytes(a), Element::Bytes(b)) => a.cmp(b),
            (Element::String(a), Element::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Element::Tuple(a), Element::Tuple(b)) => a.cmp(b),
            (Element::Int(a), Element::Int(b)) => a.cmp(b),
            (Element::Float(a), Element::Float(b)) => a.total_cmp(b),
            (Element::Double(a), Element::Double(b)) => a.total_cmp(b),
            (Element::Bool(a), Element::Bool(b)) => a.cmp(b),
            _ => self.type_rank().cmp(&other.type_rank()),
        }
    }
}

impl PartialOrd for Element {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equality follows the encoding: two NaNs with the same bits are equal, 0.0 and -0.0 are not.
impl PartialEq for Element {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Element {}

impl Tuple {
    pub fn new() -> Self {
        Tuple(Vec::new())
    }

    /// Appends an element (builder style).
    pub fn push(mut self, element: impl Into<Element>) -> Self {
        self.0.push(element.into());
        self
    }

    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.pack_into(&mut out);
        out
    }

    pub fn pack_into(&self, out: &mut Vec<u8>) {
        for element in &self.0 {
            encode(element, out, false);
        }
    }

    pub fn unpack(bytes: &[u8]) -> Result<Tuple, TupleError> {
        let mut decoder = Decoder { bytes, offset: 0 };
        let mut elements = Vec::new();
        while decoder.offset < bytes.len() {
            elements.push(decoder.element(false)?);
        }
        Ok(Tuple(elements))
    }

    /// The key range of every tuple that extends this one: `[pack + 0x00, pack + 0xff)`.
    pub fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let packed = self.pack();
        let mut start = packed.clone();
        start.push(0x00);
        let mut end = packed;
        end.push(0xff);
        (start, end)
    }
}

macro_rules! element_from {
    ($($ty:ty => $variant:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$ty> for Element {
            fn from(value: $ty) -> Self {
                Element::$variant((value $(as $cast)?).into())
            }
        }
    )*};
}
element_from!(
    &str => String, String => String, &[u8] => Bytes, Vec<u8> => Bytes, Tuple => Tuple,
    i64 => Int as i128, u64 => Int as i128, i32 => Int as i128, u32 => Int as i128,
    i128 => Int, f32 => Float, f64 => Double, bool => Bool,
);

pub use crate::api::strinc;

fn encode(element: &Element, out: &mut Vec<u8>, nested: bool) {
    match element {
        Element::Null if nested => out.extend_from_slice(&[NULL, ESCAPE]),
        Element::Null => out.push(NULL),
        Element::Bytes(bytes) => encode_escaped(BYTES, bytes, out),
        Element::String(string) => encode_escaped(STRING, string.as_bytes(), out),
        Element::Tuple(tuple) => {
            out.push(NESTED);
            for inner in &tuple.0 {
                encode(inner, out, true);
            }
            out.push(NULL);
        }
        Element::Int(value) => encode_int(*value, out),
        Element::Float(value) => {
            out.push(FLOAT);
            out.extend_from_slice(&order_float_bits(value.to_bits() as u64, 32).to_be_bytes()[4..]);
        }
        Element::Double(value) => {
            out.push(DOUBLE);
            out.extend_from_slice(&order_float_bits(value.to_bits(), 64).to_be_bytes());
        }
        Element::Bool(false) => out.push(FALSE),
        Element::Bool(true) => out.push(TRUE),
    }
}

fn encode_escaped(code: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(code);
    for &byte in bytes {
        out.push(byte);
        if byte == 0x00 {
            out.push(ESCAPE);
        }
    }
    out.push(NULL);
}

fn encode_int(value: i128, out: &mut Vec<u8>) {
    if value == 0 {
        out.push(INT_ZERO);
        return;
    }
    let magnitude = value.unsigned_abs();
    let len = 16 - (magnitude.leading_zeros() / 8) as usize;
    let be = magnitude.to_be_bytes();
    let digits = &be[16 - len..];
    match (value > 0, len <= 8) {
        (true, true) => {
            out.push(INT_ZERO + len as u8);
            out.extend_from_slice(digits);
        }
        (false, true) => {
            out.push(INT_ZERO - len as u8);
            out.extend(digits.iter().map(|b| !b));
        }
        (true, false) => {
            out.push(POS_INT_ARBITRARY);
            out.push(len as u8);
            out.extend_from_slice(digits);
        }
        (false, false) => {
            out.push(NEG_INT_ARBITRARY);
            out.push(!(len as u8));
            out.extend(digits.iter().map(|b| !b));
        }
    }
}

/// Maps IEEE bits to bits that sort as the numbers do: negative numbers get every bit flipped,
/// others only the sign bit.
fn order_float_bits(bits: u64, width: u32) -> u64 {
    let sign = 1u64 << (width - 1);
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    if bits & sign != 0 {
        !bits & mask
    } else {
        bits | sign
    }
}

fn unorder_float_bits(bits: u64, width: u32) -> u64 {
    let sign = 1u64 << (width - 1);
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    if bits & sign != 0 {
        bits & !sign
    } else {
        !bits & mask
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Decoder<'_> {
    fn error(&self, reason: &'static str) -> TupleError {
        TupleError {
            offset: self.offset,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, TupleError> {
        let byte = *self
            .bytes
            .get(self.offset)
            .ok_or_else(|| self.error("unexpected end"))?;
        self.offset += 1;
        Ok(byte)
    }

    fn take(&mut self, len: usize) -> Result<&[u8], TupleError> {
        let end = self.offset + len;
        let slice = self
            .bytes
            .get(self.offset..end)
            .ok_or_else(|| self.error("unexpected end"))?;
        self.offset = end;
        Ok(slice)
    }

    fn escaped(&mut self) -> Result<Vec<u8>, TupleError> {
        let mut out = Vec::new();
        loop {
            match self.byte()? {
                0x00 if self.bytes.get(self.offset) == Some(&ESCAPE) => {
                    self.offset += 1;
                    out.push(0x00);
                }
                0x00 => return Ok(out),
                byte => out.push(byte),
            }
        }
    }

    fn element(&mut self, nested: bool) -> Result<Element, TupleError> {
        let code = self.byte()?;
        Ok(match code {
            NULL if nested => {
                if self.byte()? != ESCAPE {
                    return Err(self.error("nested null without escape"));
                }
                Element::Null
            }
            NULL => Element::Null,
            BYTES => Element::Bytes(self.escaped()?),
            STRING => {
                let bytes = self.escaped()?;
                Element::String(String::from_utf8(bytes).map_err(|_| self.error("invalid UTF-8"))?)
            }
            NESTED => {
                let mut inner = Vec::new();
                loop {
                    match self.bytes.get(self.offset) {
                        Some(&NULL) if self.bytes.get(self.offset + 1) != Some(&ESCAPE) => {
                            self.offset += 1;
                            break;
                        }
                        Some(_) => inner.push(self.element(true)?),
                        None => return Err(self.error("unterminated nested tuple")),
                    }
                }
                Element::Tuple(Tuple(inner))
            }
            INT_ZERO => Element::Int(0),
            NEG_INT_ARBITRARY | POS_INT_ARBITRARY => {
                let negative = code == NEG_INT_ARBITRARY;
                let len_byte = self.byte()?;
                let len = if negative { !len_byte } else { len_byte } as usize;
                if len <= 8 {
                    return Err(self.error("integer not in canonical form"));
                }
                let magnitude = self.magnitude(len, negative)?;
                Element::Int(if negative {
                    (magnitude as i128).wrapping_neg()
                } else {
                    magnitude as i128
                })
            }
            0x0c..=0x1c => {
                let len = (code as i16 - INT_ZERO as i16).unsigned_abs() as usize;
                let negative = code < INT_ZERO;
                let magnitude = self.magnitude(len, negative)?;
                Element::Int(if negative {
                    (magnitude as i128).wrapping_neg()
                } else {
                    magnitude as i128
                })
            }
            FLOAT => {
                let bytes: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
                let bits = unorder_float_bits(u32::from_be_bytes(bytes) as u64, 32);
                Element::Float(f32::from_bits(bits as u32))
            }
            DOUBLE => {
                let bytes: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                Element::Double(f64::from_bits(unorder_float_bits(
                    u64::from_be_bytes(bytes),
                    64,
                )))
            }
            FALSE => Element::Bool(false),
            TRUE => Element::Bool(true),
            _ => {
                self.offset -= 1;
                return Err(self.error("unknown type code"));
            }
        })
    }

    /// A big-endian magnitude of `len` bytes (ones' complement when `negative`), which must fit
    /// an `i128` and use no leading zero byte (so each number has one encoding).
    fn magnitude(&mut self, len: usize, negative: bool) -> Result<u128, TupleError> {
        if len > 16 {
            return Err(self.error("integer wider than 128 bits"));
        }
        let digits = self.take(len)?;
        let mut magnitude = 0u128;
        for &byte in digits {
            magnitude = magnitude << 8 | u128::from(if negative { !byte } else { byte });
        }
        let minimal = len > 0 && magnitude >> ((len - 1) * 8) != 0;
        let limit = if negative {
            1u128 << 127
        } else {
            i128::MAX as u128
        };
        if !minimal || magnitude > limit {
            return Err(self.error("integer not in canonical form"));
        }
        Ok(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn element() -> impl Strategy<Value = Element> {
        let leaf = prop_oneof![
            Just(Element::Null),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Element::Bytes),
            ".{0,6}".prop_map(Element::String),
            any::<i64>().prop_map(|v| Element::Int(v.into())),
            any::<i128>().prop_map(Element::Int),
            (-300i128..300).prop_map(Element::Int),
            any::<f32>().prop_map(Element::Float),
            any::<f64>().prop_map(Element::Double),
            any::<bool>().prop_map(Element::Bool),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(|v| Element::Tuple(Tuple(v)))
        })
    }

    fn tuple() -> impl Strategy<Value = Tuple> {
        proptest::collection::vec(element(), 0..5).prop_map(Tuple)
    }

    proptest! {
        // Proves pack/unpack is lossless for every supported element type, nested included.
        #[test]
        fn pack_unpack_round_trips(t in tuple()) {
            prop_assert_eq!(Tuple::unpack(&t.pack()).unwrap(), t);
        }

        // Proves the encoding is order-preserving: byte order of packed tuples equals tuple order.
        #[test]
        fn byte_order_equals_tuple_order(a in tuple(), b in tuple()) {
            prop_assert_eq!(a.pack().cmp(&b.pack()), a.cmp(&b));
        }

        // Proves every extension of a tuple packs inside its range, and the tuple itself does not.
        #[test]
        fn range_holds_every_extension(t in tuple(), tail in element()) {
            let (start, end) = t.range();
            let extended = t.clone().push(tail).pack();
            prop_assert!(start <= extended && extended < end);
            prop_assert!(t.pack() < start);
        }

        // Proves unpack never panics on arbitrary bytes: it returns a tuple or an error.
        #[test]
        fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = Tuple::unpack(&bytes);
        }
    }

    // Proves the bytes match FoundationDB's reference encodings for a few known values.
    #[test]
    fn matches_foundationdb_reference_bytes() {
        let cases: Vec<(Element, &[u8])> = vec![
            (Element::Null, &[0x00]),
            (
                Element::Bytes(b"foo\x00bar".to_vec()),
                b"\x01foo\x00\xffbar\x00",
            ),
            (
                Element::String("F\u{d4}O\x00bar".into()),
                b"\x02F\xc3\x94O\x00\xffbar\x00",
            ),
            (Element::Int(0), &[0x14]),
            (Element::Int(-5551212), &[0x11, 0xab, 0x4b, 0x93]),
            (Element::Int(1), &[0x15, 0x01]),
            (Element::Int(-1), &[0x13, 0xfe]),
            (Element::Float(-42.0), &[0x20, 0x3d, 0xd7, 0xff, 0xff]),
            (
                Element::Double(std::f64::consts::PI),
                &[0x21, 0xc0, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18],
            ),
            (Element::Bool(true), &[0x27]),
            (
                Element::Tuple(Tuple(vec![
                    Element::Bytes(b"foo\x00bar".to_vec()),
                    Element::Null,
                    Element::Tuple(Tuple::new()),
                ])),
                b"\x05\x01foo\x00\xffbar\x00\x00\xff\x05\x00\x00",
            ),
        ];
        for (element, bytes) in cases {
            assert_eq!(Tuple(vec![element.clone()]).pack(), bytes, "{element:?}");
        }
    }

    // Proves strinc gives the first key past a prefix and refuses prefixes with no successor.
    #[test]
    fn strinc_skips_trailing_ff() {
        assert_eq!(strinc(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(strinc(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(strinc(b"\xff"), None);
        assert_eq!(strinc(b""), None);
    }

    // Proves malformed input is refused with the offset of the problem.
    #[test]
    fn unpack_names_the_offset() {
        assert_eq!(Tuple::unpack(&[0x01, b'a']).unwrap_err().offset, 2);
        assert_eq!(
            Tuple::unpack(&[0x14, 0x99]).unwrap_err().reason,
            "unknown type code"
        );
        assert_eq!(
            Tuple::unpack(&[0x15, 0x00]).unwrap_err().reason,
            "integer not in canonical form"
        );
    }
}
