//! Shared input formats of the fuzz targets.
//!
//! The header targets take one of two input formats:
//!
//! - **text** (hand-written seeds): a first line naming the format, then one
//!   header per line, `name=value` with `\xHH`, `\n`, `\t`, `\r`, `\\`
//!   escapes in the value, or a bare `name` for a null value. A line
//!   `@position <topic> <partition> <offset>` sets the record position.
//!   libFuzzer mutates these readable seeds well, and a dictionary is not
//!   needed to find header names.
//! - **arbitrary**: anything else is decoded with `arbitrary`, whose derived
//!   types below build names from the contract's own constants (with random
//!   ASCII case) and values that are valid UUIDs, traceparents or big-endian
//!   integers as often as raw bytes, so the structured paths are reached
//!   without guessing.
//!
//! Both formats feed the same checks.

use arbitrary::{Arbitrary, Unstructured};
use kausal_core::headers::RawHeader;

/// One header as owned data (a Kafka header: a name and an optional value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedHeader {
    pub name: String,
    pub value: Option<Vec<u8>>,
}

impl OwnedHeader {
    pub fn new(name: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// Borrows owned headers as the `RawHeader`s kausal-core reads.
pub fn borrow(headers: &[OwnedHeader]) -> Vec<RawHeader<'_>> {
    headers
        .iter()
        .map(|h| RawHeader {
            name: &h.name,
            value: h.value.as_deref(),
        })
        .collect()
}

/// A record position read from a text input (`@position` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Default for Position {
    fn default() -> Self {
        Self {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
        }
    }
}

/// A text input: headers in order and an optional position.
#[derive(Debug, Clone, Default)]
pub struct TextInput {
    pub headers: Vec<OwnedHeader>,
    pub position: Option<Position>,
}

/// Parses the text format when `data` starts with `magic` and a newline.
/// Returns `None` for anything else (the caller then uses `arbitrary`).
pub fn parse_text(data: &[u8], magic: &str) -> Option<TextInput> {
    let rest = data.strip_prefix(magic.as_bytes())?.strip_prefix(b"\n")?;
    let mut input = TextInput::default();
    for line in rest.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if let Some(pos) = line.strip_prefix(b"@position ") {
            input.position = parse_position(pos);
            continue;
        }
        // Names are text in Kafka; a non-UTF-8 name is replaced, not dropped.
        match line.iter().position(|b| *b == b'=') {
            Some(eq) => input.headers.push(OwnedHeader::new(
                String::from_utf8_lossy(&line[..eq]),
                Some(unescape(&line[eq + 1..])),
            )),
            None => input
                .headers
                .push(OwnedHeader::new(String::from_utf8_lossy(line), None)),
        }
    }
    Some(input)
}

fn parse_position(line: &[u8]) -> Option<Position> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let topic = parts.next()?.to_owned();
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Position {
        topic,
        partition,
        offset,
    })
}

fn unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] != b'\\' || i + 1 == value.len() {
            out.push(value[i]);
            i += 1;
            continue;
        }
        match value[i + 1] {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' => out.push(b'\\'),
            b'x' if i + 3 < value.len() => match hex_pair(value[i + 2], value[i + 3]) {
                Some(byte) => {
                    out.push(byte);
                    i += 4;
                    continue;
                }
                None => {
                    out.push(b'\\');
                    out.push(b'x');
                }
            },
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
        i += 2;
    }
    out
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let n = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    Some((n(hi)? << 4) | n(lo)?)
}

/// A header name: one of a target's interesting names in random ASCII case,
/// or any string.
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbName {
    Known { index: u8, case_flips: u32 },
    Other(String),
}

impl ArbName {
    pub fn resolve(&self, known: &[&str]) -> String {
        match self {
            Self::Known { index, case_flips } if !known.is_empty() => {
                let name = known[usize::from(*index) % known.len()];
                name.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i < 32 && case_flips & (1 << i) != 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect()
            }
            Self::Known { .. } => String::new(),
            Self::Other(s) => s.clone(),
        }
    }
}

/// A header value: null, raw bytes, or a value of the shape a header of the
/// contract expects (so that parsers get past their first check).
#[derive(Debug, Clone, Arbitrary)]
pub enum ArbValue {
    Null,
    Bytes(Vec<u8>),
    Text(String),
    /// A UUID in one of the forms `uuid` parses (hyphenated, simple, braced,
    /// URN, uppercase), optionally padded with whitespace.
    Uuid {
        bytes: [u8; 16],
        form: u8,
        pad: bool,
    },
    /// `<version>-<trace>-<parent>-<flags>[<suffix>]`.
    TraceParent {
        version: u8,
        trace: [u8; 16],
        parent: [u8; 8],
        flags: u8,
        suffix: Option<String>,
    },
    /// An integer as decimal text, optionally padded.
    Decimal {
        value: i64,
        pad: bool,
    },
    /// Spring's binary integers.
    BeI32(i32),
    BeI64(i64),
}

impl ArbValue {
    pub fn resolve(&self) -> Option<Vec<u8>> {
        Some(match self {
            Self::Null => return None,
            Self::Bytes(b) => b.clone(),
            Self::Text(s) => s.clone().into_bytes(),
            Self::Uuid { bytes, form, pad } => {
                let u = uuid_text(*bytes, *form);
                if *pad { format!(" {u}\t") } else { u }.into_bytes()
            }
            Self::TraceParent {
                version,
                trace,
                parent,
                flags,
                suffix,
            } => {
                let mut s = format!("{version:02x}-{}-{}-{flags:02x}", hex(trace), hex(parent));
                if let Some(suffix) = suffix {
                    s.push_str(suffix);
                }
                s.into_bytes()
            }
            Self::Decimal { value, pad } => if *pad {
                format!(" {value} ")
            } else {
                value.to_string()
            }
            .into_bytes(),
            Self::BeI32(v) => v.to_be_bytes().to_vec(),
            Self::BeI64(v) => v.to_be_bytes().to_vec(),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid_text(bytes: [u8; 16], form: u8) -> String {
    let h = hex(&bytes);
    let hyphenated = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    match form % 5 {
        0 => hyphenated,
        1 => h,
        2 => format!("{{{hyphenated}}}"),
        3 => format!("urn:uuid:{hyphenated}"),
        _ => hyphenated.to_ascii_uppercase(),
    }
}

/// A list of headers built by `arbitrary`.
#[derive(Debug, Clone, Arbitrary)]
pub struct ArbHeaders(pub Vec<(ArbName, ArbValue)>);

impl ArbHeaders {
    pub fn resolve(&self, known: &[&str]) -> Vec<OwnedHeader> {
        self.0
            .iter()
            .map(|(n, v)| OwnedHeader::new(n.resolve(known), v.resolve()))
            .collect()
    }
}

/// Decodes `T` from the whole input with `arbitrary`.
pub fn from_arbitrary<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// The bytes of the last header called `name` (ASCII case-insensitive), as
/// Kafka's `Headers.lastHeader` would return it: `None` when absent,
/// `Some(None)` when its value is null.
pub fn last<'h>(headers: &'h [OwnedHeader], name: &str) -> Option<Option<&'h [u8]>> {
    headers
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_deref())
}

/// How many headers are called `name` (ASCII case-insensitive).
pub fn count(headers: &[OwnedHeader], name: &str) -> usize {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let input = parse_text(
            b"#m\n@position pay 3 9\na=b\\x00\\n\nnull\nc=x=y\\q\\",
            "#m",
        )
        .expect("text");
        assert_eq!(
            input.position,
            Some(Position {
                topic: "pay".into(),
                partition: 3,
                offset: 9
            })
        );
        assert_eq!(
            input.headers,
            vec![
                OwnedHeader::new("a", Some(b"b\x00\n".to_vec())),
                OwnedHeader::new("null", None),
                OwnedHeader::new("c", Some(b"x=y\\q\\".to_vec())),
            ]
        );
        assert!(parse_text(b"#mx\na=b", "#m").is_none());
    }
}
