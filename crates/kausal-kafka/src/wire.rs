//! The two Kafka protocol requests librdkafka's Rust binding does not expose
//! without `unsafe`: FindCoordinator v1 and DescribeGroups v1.
//!
//! librdkafka describes a group only after ListGroups, which the embedded
//! broker does not answer (docs/broker.md), and the on-call tools need to
//! know whether a group has live members (offset reset must refuse then; a
//! partition whose consumer is gone is STOP, not STALL). These versions are
//! served by Kafka 2.x to 4.x and by tansu. Pure encode/decode here; the
//! socket lives in [`crate::group`].

use std::fmt;

/// API keys and the versions spoken.
const FIND_COORDINATOR: i16 = 10;
const DESCRIBE_GROUPS: i16 = 15;
const VERSION: i16 = 1;

/// A malformed or truncated response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed Kafka response: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// Where a group's coordinator lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub error_code: i16,
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// One group as DescribeGroups answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub error_code: i16,
    pub group: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`,
    /// `Dead`, or what the broker calls it.
    pub state: String,
    pub members: Vec<GroupMember>,
}

impl GroupDescription {
    /// True when some consumer is a member right now.
    pub fn has_live_members(&self) -> bool {
        !self.members.is_empty() && !self.state.eq_ignore_ascii_case("dead")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
}

/// A size-prefixed FindCoordinator v1 request for a consumer group.
pub fn find_coordinator_request(correlation_id: i32, client_id: &str, group: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, group);
    body.push(0); // key type: group
    frame(FIND_COORDINATOR, correlation_id, client_id, &body)
}

/// A size-prefixed DescribeGroups v1 request.
pub fn describe_groups_request(correlation_id: i32, client_id: &str, groups: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    put_i32(&mut body, groups.len() as i32);
    for g in groups {
        put_string(&mut body, g);
    }
    frame(DESCRIBE_GROUPS, correlation_id, client_id, &body)
}

/// Decodes a FindCoordinator v1 response body (after the size prefix).
pub fn find_coordinator_response(
    bytes: &[u8],
    correlation_id: i32,
) -> Result<Coordinator, WireError> {
    let mut r = Reader::new(bytes);
    r.correlation(correlation_id)?;
    let _throttle = r.i32()?;
    let error_code = r.i16()?;
    let _message = r.nullable_string()?;
    Ok(Coordinator {
        error_code,
        node_id: r.i32()?,
        host: r.string()?,
        port: r.i32()?,
    })
}

/// Decodes a DescribeGroups v1 response body (after the size prefix).
pub fn describe_groups_response(
    bytes: &[u8],
    correlation_id: i32,
) -> Result<Vec<GroupDescription>, WireError> {
    let mut r = Reader::new(bytes);
    r.correlation(correlation_id)?;
    let _throttle = r.i32()?;
    let count = r.count()?;
    let mut groups = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let error_code = r.i16()?;
        let group = r.string()?;
        let state = r.string()?;
        let _protocol_type = r.string()?;
        let _protocol = r.string()?;
        let n = r.count()?;
        let mut members = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let member_id = r.string()?;
            let client_id = r.string()?;
            let client_host = r.string()?;
            r.bytes()?; // metadata
            r.bytes()?; // assignment
            members.push(GroupMember {
                member_id,
                client_id,
                client_host,
            });
        }
        groups.push(GroupDescription {
            error_code,
            group,
            state,
            members,
        });
    }
    Ok(groups)
}

fn frame(api_key: i16, correlation_id: i32, client_id: &str, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(body.len() + 32);
    put_i16(&mut msg, api_key);
    put_i16(&mut msg, VERSION);
    put_i32(&mut msg, correlation_id);
    put_string(&mut msg, client_id);
    msg.extend_from_slice(body);
    let mut framed = Vec::with_capacity(msg.len() + 4);
    put_i32(&mut framed, msg.len() as i32);
    framed.extend_from_slice(&msg);
    framed
}

fn put_i16(buf: &mut Vec<u8>, v: i16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(buf: &mut Vec<u8>, v: i32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    put_i16(buf, len as i16);
    buf.extend_from_slice(&s.as_bytes()[..len]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                WireError(format!(
                    "needed {n} bytes at {}, have {}",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn correlation(&mut self, expected: i32) -> Result<(), WireError> {
        let got = self.i32()?;
        if got == expected {
            Ok(())
        } else {
            Err(WireError(format!(
                "correlation id {got}, expected {expected}"
            )))
        }
    }

    fn count(&mut self) -> Result<usize, WireError> {
        let n = self.i32()?;
        usize::try_from(n.max(0)).map_err(|_| WireError(format!("bad array length {n}")))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, WireError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        Ok(Some(String::from_utf8_lossy(b).into_owned()))
    }

    fn string(&mut self) -> Result<String, WireError> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }

    fn bytes(&mut self) -> Result<(), WireError> {
        let len = self.i32()?;
        if len > 0 {
            self.take(len as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(buf: &mut Vec<u8>, s: &str) {
        put_string(buf, s);
    }

    #[test]
    fn requests_have_the_v1_layout() {
        let req = find_coordinator_request(7, "k", "g1");
        // size, api key 10, version 1, correlation 7, client "k", key "g1", type 0
        assert_eq!(
            req,
            vec![
                0, 0, 0, 16, 0, 10, 0, 1, 0, 0, 0, 7, 0, 1, b'k', 0, 2, b'g', b'1', 0
            ]
        );
        let req = describe_groups_request(9, "", &["a", "bc"]);
        assert_eq!(
            req,
            vec![
                0, 0, 0, 21, 0, 15, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b',
                b'c'
            ]
        );
    }

    #[test]
    fn decodes_a_coordinator() {
        let mut b = Vec::new();
        put_i32(&mut b, 3); // correlation
        put_i32(&mut b, 0); // throttle
        put_i16(&mut b, 0);
        put_i16(&mut b, -1); // null message
        put_i32(&mut b, 111);
        string(&mut b, "localhost");
        put_i32(&mut b, 9092);
        assert_eq!(
            find_coordinator_response(&b, 3),
            Ok(Coordinator {
                error_code: 0,
                node_id: 111,
                host: "localhost".into(),
                port: 9092
            })
        );
        assert!(
            find_coordinator_response(&b, 4).is_err(),
            "wrong correlation"
        );
        assert!(find_coordinator_response(&b[..b.len() - 1], 3).is_err());
    }

    fn described(members: &[&str], state: &str) -> Vec<u8> {
        let mut b = Vec::new();
        put_i32(&mut b, 5);
        put_i32(&mut b, 0);
        put_i32(&mut b, 1);
        put_i16(&mut b, 0);
        string(&mut b, "payments");
        string(&mut b, state);
        string(&mut b, "consumer");
        string(&mut b, "range");
        put_i32(&mut b, members.len() as i32);
        for m in members {
            string(&mut b, m);
            string(&mut b, "rdkafka");
            string(&mut b, "/127.0.0.1");
            put_i32(&mut b, 3);
            b.extend_from_slice(&[1, 2, 3]);
            put_i32(&mut b, -1);
        }
        b
    }

    #[test]
    fn decodes_groups_and_liveness() {
        let groups = describe_groups_response(&described(&["m-1", "m-2"], "Stable"), 5)
            .expect("well-formed");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].group, "payments");
        assert_eq!(groups[0].members.len(), 2);
        assert_eq!(groups[0].members[1].member_id, "m-2");
        assert!(groups[0].has_live_members());

        let empty = describe_groups_response(&described(&[], "Empty"), 5).expect("ok");
        assert!(!empty[0].has_live_members());
        let dead = describe_groups_response(&described(&["m"], "Dead"), 5).expect("ok");
        assert!(!dead[0].has_live_members());
    }

    #[test]
    fn truncated_or_hostile_lengths_are_errors_not_panics() {
        let full = described(&["m-1"], "Stable");
        for cut in 0..full.len() {
            assert!(
                describe_groups_response(&full[..cut], 5).is_err(),
                "cut {cut}"
            );
        }
        let mut huge = Vec::new();
        put_i32(&mut huge, 5);
        put_i32(&mut huge, 0);
        put_i32(&mut huge, i32::MAX);
        assert!(describe_groups_response(&huge, 5).is_err());
    }
}
