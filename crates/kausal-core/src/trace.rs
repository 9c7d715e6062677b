//! W3C Trace Context: the `traceparent` header.
//!
//! `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`. Parsing follows
//! the W3C recommendation exactly: lowercase hex only, version `ff` is
//! invalid, all-zero ids are invalid, a future version may append fields.

use std::fmt;

/// A 16-byte trace id that is not all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id that is not all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// `None` for the all-zero id, which W3C reserves as invalid.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// `None` for the all-zero id, which W3C reserves as invalid.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(Self(bytes))
    }
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// Why a `traceparent` value was rejected. A rejected value never fails a
/// message: the consumer starts a new trace and counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("traceparent is not UTF-8")]
    NotUtf8,
    #[error("traceparent has the wrong length ({0} characters)")]
    WrongLength(usize),
    #[error("traceparent is not four dash-separated fields")]
    WrongShape,
    #[error("traceparent field {field} is not lowercase hex")]
    NotHex { field: &'static str },
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    #[error("traceparent trace id is all zeros")]
    ZeroTraceId,
    #[error("traceparent parent id is all zeros")]
    ZeroParentId,
}

impl TraceParentError {
    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotUtf8 => "not_utf8",
            Self::WrongLength(_) => "wrong_length",
            Self::WrongShape => "wrong_shape",
            Self::NotHex { .. } => "not_hex",
            Self::ForbiddenVersion => "forbidden_version",
            Self::ZeroTraceId => "zero_trace_id",
            Self::ZeroParentId => "zero_parent_id",
        }
    }
}

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

const V00_LEN: usize = 55;

fn hex_field<const N: usize>(s: &str, field: &'static str) -> Result<[u8; N], TraceParentError> {
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return Err(TraceParentError::WrongShape);
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(TraceParentError::NotHex { field })?;
        let lo = nibble(pair[1]).ok_or(TraceParentError::NotHex { field })?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl TraceParent {
    pub fn new(trace_id: TraceId, parent_id: SpanId, sampled: bool) -> Self {
        Self {
            trace_id,
            parent_id,
            flags: u8::from(sampled),
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The same trace continued by a new span.
    pub fn child(&self, span_id: SpanId) -> Self {
        Self {
            parent_id: span_id,
            ..*self
        }
    }

    /// Parses raw header bytes (Kafka header values are bytes).
    pub fn parse_bytes(value: &[u8]) -> Result<Self, TraceParentError> {
        std::str::from_utf8(value)
            .map_err(|_| TraceParentError::NotUtf8)
            .and_then(Self::parse)
    }

    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let value = value.trim_matches([' ', '\t']);
        // Only the version-00 fields must be ASCII: what a later version
        // appends after them is ignored, whatever it holds.
        if !value.as_bytes()[..value.len().min(V00_LEN)].is_ascii() {
            return Err(TraceParentError::NotHex { field: "version" });
        }
        if value.len() < V00_LEN {
            return Err(TraceParentError::WrongLength(value.len()));
        }
        let version: [u8; 1] = hex_field(&value[..2], "version")?;
        if version[0] == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        // Version 00 is exactly 55 characters; later versions may append
        // `-<more>` which we must ignore.
        if version[0] == 0 && value.len() != V00_LEN {
            return Err(TraceParentError::WrongLength(value.len()));
        }
        if value.len() > V00_LEN && value.as_bytes()[V00_LEN] != b'-' {
            return Err(TraceParentError::WrongShape);
        }
        let head = &value[..V00_LEN];
        let b = head.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceParentError::WrongShape);
        }
        let trace: [u8; 16] = hex_field(&head[3..35], "trace-id")?;
        let parent: [u8; 8] = hex_field(&head[36..52], "parent-id")?;
        let flags: [u8; 1] = hex_field(&head[53..55], "trace-flags")?;
        Ok(Self {
            trace_id: TraceId::from_bytes(trace).ok_or(TraceParentError::ZeroTraceId)?,
            parent_id: SpanId::from_bytes(parent).ok_or(TraceParentError::ZeroParentId)?,
            flags: flags[0],
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips() {
        let tp = TraceParent::parse(GOOD).expect("valid");
        assert_eq!(tp.to_string(), GOOD);
        assert!(tp.sampled());
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn table_of_inputs() {
        use TraceParentError::*;
        let cases: &[(&str, Result<(), TraceParentError>)] = &[
            (GOOD, Ok(())),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                Ok(()),
            ),
            // A future version may carry more fields after a dash.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                Ok(()),
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xextra",
                Err(WrongShape),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Err(WrongLength(56)),
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Err(ForbiddenVersion),
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                Err(ZeroTraceId),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                Err(ZeroParentId),
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Err(NotHex { field: "trace-id" }),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                Err(NotHex { field: "parent-id" }),
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Err(NotHex { field: "version" }),
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                Err(WrongShape),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                Err(WrongLength(52)),
            ),
            ("", Err(WrongLength(0))),
            ("garbage", Err(WrongLength(7))),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
                Err(NotHex { field: "version" }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &TraceParent::parse(input).map(|_| ()),
                expected,
                "{input:?}"
            );
        }
    }

    /// Found by the `traceparent` fuzz target: a later version's extra
    /// fields were rejected when they held non-ASCII text.
    #[test]
    fn later_versions_ignore_what_they_append() {
        let tp = TraceParent::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\u{413}\0x",
        )
        .expect("valid");
        assert_eq!(tp.to_string(), GOOD);
        assert_eq!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\u{413}"),
            Err(TraceParentError::WrongLength(58))
        );
    }

    #[test]
    fn non_utf8_bytes_are_rejected() {
        assert_eq!(
            TraceParent::parse_bytes(&[0xff, 0xfe, 0x00]),
            Err(TraceParentError::NotUtf8)
        );
    }

    #[test]
    fn child_keeps_trace_and_flags() {
        let tp = TraceParent::parse(GOOD).expect("valid");
        let span = SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]).expect("non-zero");
        let child = tp.child(span);
        assert_eq!(child.trace_id, tp.trace_id);
        assert_eq!(child.flags, tp.flags);
        assert_eq!(child.parent_id, span);
    }
}
