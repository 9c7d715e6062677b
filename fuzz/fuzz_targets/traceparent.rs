//! `traceparent` parsing (W3C Trace Context) and `tracestate` handling.
//!
//! Input: `<traceparent bytes>[\n<tracestate bytes>]`.
//!
//! Checks, beyond "never panics":
//! - `parse_bytes` agrees with `parse` on UTF-8 input;
//! - acceptance and the parsed value agree with an independent reference
//!   parser written from the W3C text (split on dashes, not on positions);
//! - a parsed value re-encodes to a 55-character version-00 string that
//!   parses to the same value, and that equals the input (trimmed) for
//!   version 00 and its first 55 characters after the version otherwise;
//! - surrounding spaces and tabs do not change the result;
//! - ids built from bytes round-trip through their text form;
//! - through `headers::decode`, `tracestate` is kept only with a valid
//!   `traceparent` and only when it is non-empty UTF-8.
#![no_main]

use kausal_core::headers::{self, RawHeader, RecordPosition};
use kausal_core::trace::{SpanId, TraceId, TraceParent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (tp_bytes, tracestate) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };

    let parsed = TraceParent::parse_bytes(tp_bytes);
    if let Err(e) = &parsed {
        assert!(!e.kind().is_empty());
        assert!(!e.to_string().is_empty());
    }

    if let Ok(text) = std::str::from_utf8(tp_bytes) {
        assert_eq!(TraceParent::parse(text), parsed, "parse vs parse_bytes");
        assert_eq!(
            parsed.as_ref().ok().map(|tp| (
                tp.trace_id.to_bytes(),
                tp.parent_id.to_bytes(),
                tp.flags
            )),
            reference(text),
            "disagrees with the reference parser on {text:?}"
        );
        let padded = format!(" \t{text}\t ");
        assert_eq!(
            TraceParent::parse(&padded),
            parsed,
            "padding changed the result"
        );
    } else {
        assert_eq!(parsed, Err(kausal_core::TraceParentError::NotUtf8));
    }

    if let Ok(tp) = parsed {
        round_trip(tp);
        let text = std::str::from_utf8(tp_bytes).expect("parsed input is UTF-8");
        let trimmed = text.trim_matches([' ', '\t']);
        let encoded = tp.to_string();
        if trimmed.starts_with("00") {
            assert_eq!(encoded, trimmed);
        } else {
            assert_eq!(encoded[2..], trimmed[2..55]);
        }
        assert_eq!(tp.sampled(), tp.flags & 1 == 1);
    }

    // Ids from raw bytes (the path of freshly generated ids).
    if data.len() >= 25 {
        let trace: [u8; 16] = data[..16].try_into().expect("16 bytes");
        let span: [u8; 8] = data[16..24].try_into().expect("8 bytes");
        match (TraceId::from_bytes(trace), SpanId::from_bytes(span)) {
            (Some(t), Some(s)) => {
                assert_eq!(t.to_bytes(), trace);
                assert_eq!(s.to_bytes(), span);
                let tp = TraceParent {
                    trace_id: t,
                    parent_id: s,
                    flags: data[24],
                };
                round_trip(tp);
                let child_span = SpanId::from_bytes([data[24] | 1; 8]).expect("non-zero");
                let child = tp.child(child_span);
                assert_eq!(
                    (child.trace_id, child.flags, child.parent_id),
                    (t, tp.flags, child_span)
                );
                round_trip(child);
            }
            (t, s) => {
                assert_eq!(t.is_none(), trace == [0; 16]);
                assert_eq!(s.is_none(), span == [0; 8]);
            }
        }
    }

    // The header contract: tracestate only travels with a valid traceparent.
    let mut raw = vec![RawHeader {
        name: headers::TRACEPARENT,
        value: Some(tp_bytes),
    }];
    if let Some(ts) = tracestate {
        raw.push(RawHeader {
            name: headers::TRACESTATE,
            value: Some(ts),
        });
    }
    let position = RecordPosition {
        topic: "t",
        partition: 0,
        offset: 0,
    };
    let decoded = headers::decode(&raw, position);
    assert_eq!(decoded.headers.traceparent, parsed.clone().ok());
    let expected_state = tracestate
        .and_then(|ts| std::str::from_utf8(ts).ok())
        .filter(|ts| !ts.is_empty() && parsed.is_ok())
        .map(str::to_owned);
    assert_eq!(decoded.headers.tracestate, expected_state);
    if parsed.is_err() {
        assert!(
            decoded
                .issues
                .iter()
                .any(|i| i.kind() == "traceparent_invalid"),
            "{:?}",
            decoded.issues
        );
    }
    let again = headers::decode(
        &kausal_fuzz::borrow(&owned(&decoded.headers.encode())),
        position,
    );
    assert_eq!(again.headers.traceparent, decoded.headers.traceparent);
    assert_eq!(again.headers.tracestate, decoded.headers.tracestate);
});

fn owned(encoded: &[(&'static str, String)]) -> Vec<kausal_fuzz::OwnedHeader> {
    encoded
        .iter()
        .map(|(n, v)| kausal_fuzz::OwnedHeader::new(*n, Some(v.clone().into_bytes())))
        .collect()
}

/// The encoded form parses back to the same value and has the v00 shape.
fn round_trip(tp: TraceParent) {
    let encoded = tp.to_string();
    assert_eq!(encoded.len(), 55, "{encoded}");
    assert!(encoded.starts_with("00-"), "{encoded}");
    assert!(
        encoded
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{encoded}"
    );
    assert_eq!(TraceParent::parse(&encoded), Ok(tp));
    assert_eq!(TraceParent::parse_bytes(encoded.as_bytes()), Ok(tp));
}

/// W3C Trace Context, level 1, written independently of kausal-core:
/// `version "-" trace-id "-" parent-id "-" trace-flags`, lowercase hex of 2,
/// 32, 16 and 2 digits; version `ff` invalid; all-zero ids invalid; version
/// 00 has exactly these four fields, a higher version may append `-` and
/// anything. Leading and trailing spaces and tabs (HTTP's OWS) are ignored.
fn reference(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let fields: Vec<&str> = value.splitn(5, '-').collect();
    let [version, trace, parent, flags] = fields[..4.min(fields.len())] else {
        return None;
    };
    let lower_hex = |s: &str, digits: usize| {
        s.len() == digits && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !(lower_hex(version, 2)
        && lower_hex(trace, 32)
        && lower_hex(parent, 16)
        && lower_hex(flags, 2))
    {
        return None;
    }
    if version == "ff" || (version == "00" && fields.len() == 5) {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok()?;
    let parent = u64::from_str_radix(parent, 16).ok()?;
    if trace == 0 || parent == 0 {
        return None;
    }
    Some((
        trace.to_be_bytes(),
        parent.to_be_bytes(),
        u8::from_str_radix(flags, 16).ok()?,
    ))
}
