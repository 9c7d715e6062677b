//! The only `unsafe` code of Kausal: librdkafka's DescribeConsumerGroups
//! Admin API, which rdkafka 0.39 does not wrap.
//!
//! Every librdkafka object made here (admin options, result queue, result
//! event) is owned by a guard that frees it on every path, and every string
//! is copied into Rust before the event that owns it is destroyed. What the
//! answer means is decided in [`super`], not here.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::RDKafkaErrorCode;

use super::GroupMember;

/// What librdkafka answered, copied out of its result event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// No result event within the wait.
    Nothing,
    /// The request as a whole failed (bad options, client shutting down).
    Failed {
        code: RDKafkaErrorCode,
        message: String,
    },
    /// One entry per group asked; each with its own error or description.
    Groups(Vec<Described>),
}

/// One group of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Described {
    pub group: String,
    /// The group's own error: broker error codes (GROUP_ID_NOT_FOUND,
    /// GROUP_AUTHORIZATION_FAILED) and client ones (timed out, transport).
    pub error: Option<(RDKafkaErrorCode, String)>,
    /// librdkafka's name of the state: `Stable`, `Empty`, `Dead`, …
    pub state: String,
    /// Described by ConsumerGroupDescribe (a KIP-848 `consumer` group, or
    /// a broker that answers it for classic groups too, as tansu does)
    /// rather than by DescribeGroups.
    pub consumer_protocol: bool,
    pub members: Vec<GroupMember>,
}

/// Asks `client`'s cluster to describe `group`: librdkafka finds the
/// coordinator and sends ConsumerGroupDescribe, falling back to
/// DescribeGroups for classic groups and brokers without it, over the
/// client's own connections (so its TLS/SASL settings apply). Waits at most
/// `wait` for the result.
pub(super) fn describe<C: ClientContext>(
    client: &Client<C>,
    group: &CStr,
    request_timeout: Duration,
    wait: Duration,
) -> Answer {
    let rk = client.native_ptr();
    let request_ms = c_int::try_from(request_timeout.as_millis())
        .unwrap_or(c_int::MAX)
        .min(3_600_000); // librdkafka's upper bound for request timeouts

    // SAFETY: `rk` is the live handle of `client`, borrowed for this whole
    // call. The options are owned by the guard and destroyed on return.
    let options = match NonNull::new(unsafe {
        rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        )
    }) {
        Some(p) => Options(p),
        None => return failed(RDKafkaErrorCode::InvalidArgument, "no admin options"),
    };
    let mut errstr = [0 as c_char; 256];
    // SAFETY: `options` is valid; `errstr` is writable for its full length,
    // and librdkafka NUL-terminates what it writes there.
    let err = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0.as_ptr(),
            request_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: `errstr` is a NUL-terminated buffer we own (zeroed, and
        // librdkafka writes at most `len - 1` bytes plus NUL).
        let message = unsafe { CStr::from_ptr(errstr.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        return Answer::Failed {
            code: err.into(),
            message,
        };
    }

    // SAFETY: `rk` is live (see above); the queue is owned by the guard and
    // destroyed on return, before `client` can be dropped.
    let queue = match NonNull::new(unsafe { rd::rd_kafka_queue_new(rk) }) {
        Some(p) => Queue(p),
        None => return failed(RDKafkaErrorCode::Fail, "no result queue"),
    };
    let mut groups = [group.as_ptr()];
    // SAFETY: all handles are live; librdkafka copies the group names and the
    // options before returning, so `groups`, `group` and `options` need only
    // live for this call. The result goes to `queue` only.
    unsafe {
        rd::rd_kafka_DescribeConsumerGroups(
            rk,
            groups.as_mut_ptr(),
            groups.len(),
            options.0.as_ptr(),
            queue.0.as_ptr(),
        );
    }

    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Answer::Nothing;
        }
        let left_ms = c_int::try_from(left.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: `queue` is live; a returned event is ours to destroy,
        // which its guard does.
        let Some(event) =
            NonNull::new(unsafe { rd::rd_kafka_queue_poll(queue.0.as_ptr(), left_ms) }).map(Event)
        else {
            continue;
        };
        // SAFETY: `event` is live; it is a DescribeConsumerGroups result or
        // this returns null and the event is skipped (and freed).
        let result = unsafe { rd::rd_kafka_event_DescribeConsumerGroups_result(event.0.as_ptr()) };
        if result.is_null() {
            continue;
        }
        // SAFETY: `event` is live and everything read from it is copied
        // before its guard destroys it at the end of this block.
        return unsafe { read_result(&event, result) };
    }
}

/// Copies the result out of `event`.
///
/// # Safety
/// `result` must be the DescribeConsumerGroups result of the live `event`.
unsafe fn read_result(event: &Event, result: *const rd::rd_kafka_event_t) -> Answer {
    // SAFETY: `event` is live (caller).
    let err = unsafe { rd::rd_kafka_event_error(event.0.as_ptr()) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Answer::Failed {
            code: err.into(),
            // SAFETY: as above; the string lives as long as the event.
            message: unsafe { copy(rd::rd_kafka_event_error_string(event.0.as_ptr())) },
        };
    }
    let mut count = 0usize;
    // SAFETY: `result` belongs to the live event (caller); the array and the
    // descriptions in it live as long as the event.
    let array = unsafe { rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count) };
    if array.is_null() || count == 0 {
        return Answer::Groups(Vec::new());
    }
    // SAFETY: librdkafka returns `count` valid pointers at `array`.
    let descriptions = unsafe { std::slice::from_raw_parts(array, count) };
    let groups = descriptions
        .iter()
        .filter(|d| !d.is_null())
        // SAFETY: each non-null entry is a description owned by the event.
        .map(|d| unsafe { read_group(*d) })
        .collect();
    Answer::Groups(groups)
}

/// # Safety
/// `d` must be a live group description.
unsafe fn read_group(d: *const rd::rd_kafka_ConsumerGroupDescription_t) -> Described {
    // SAFETY: `d` is live (caller) for all the accessor calls below; the
    // strings and the error they return are owned by it and copied here.
    unsafe {
        let error = rd::rd_kafka_ConsumerGroupDescription_error(d);
        let error = (!error.is_null()).then(|| {
            (
                RDKafkaErrorCode::from(rd::rd_kafka_error_code(error)),
                copy(rd::rd_kafka_error_string(error)),
            )
        });
        let state = copy(rd::rd_kafka_consumer_group_state_name(
            rd::rd_kafka_ConsumerGroupDescription_state(d),
        ));
        let consumer_protocol = rd::rd_kafka_ConsumerGroupDescription_type(d)
            == rd::rd_kafka_consumer_group_type_t::RD_KAFKA_CONSUMER_GROUP_TYPE_CONSUMER;
        let members = (0..rd::rd_kafka_ConsumerGroupDescription_member_count(d))
            .map(|i| rd::rd_kafka_ConsumerGroupDescription_member(d, i))
            .filter(|m| !m.is_null())
            .map(|m| GroupMember {
                member_id: copy(rd::rd_kafka_MemberDescription_consumer_id(m)),
                client_id: copy(rd::rd_kafka_MemberDescription_client_id(m)),
                client_host: copy(rd::rd_kafka_MemberDescription_host(m)),
            })
            .collect();
        Described {
            group: copy(rd::rd_kafka_ConsumerGroupDescription_group_id(d)),
            error,
            state,
            consumer_protocol,
            members,
        }
    }
}

/// An owned copy of a C string; empty for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string live for this call.
unsafe fn copy(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated (caller).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn failed(code: RDKafkaErrorCode, message: &str) -> Answer {
    Answer::Failed {
        code,
        message: message.to_owned(),
    }
}

/// A group name librdkafka can take: no NUL inside.
pub(super) fn group_name(group: &str) -> Option<CString> {
    CString::new(group).ok()
}

struct Options(NonNull<rd::rd_kafka_AdminOptions_t>);

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: made by rd_kafka_AdminOptions_new, destroyed once here.
        unsafe { rd::rd_kafka_AdminOptions_destroy(self.0.as_ptr()) }
    }
}

struct Queue(NonNull<rd::rd_kafka_queue_t>);

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: made by rd_kafka_queue_new, destroyed once here. A result
        // that arrives later is discarded by librdkafka.
        unsafe { rd::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

struct Event(NonNull<rd::rd_kafka_event_t>);

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: returned by rd_kafka_queue_poll, destroyed once here.
        unsafe { rd::rd_kafka_event_destroy(self.0.as_ptr()) }
    }
}
