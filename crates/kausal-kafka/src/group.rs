//! Group membership: is anyone consuming as this group right now?
//!
//! Asks the group's coordinator with FindCoordinator + DescribeGroups over a
//! plain socket ([`crate::wire`]), because librdkafka only describes groups
//! it first found through ListGroups. Blocking; call from a blocking task.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use crate::wire::{self, GroupDescription};

const CLIENT_ID: &str = "kausal-admin";
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

static CORRELATION: AtomicI32 = AtomicI32::new(1);

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("request to {addr} failed: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("broker answered error code {code} for group {group} ({what})")]
    Broker {
        group: String,
        code: i16,
        what: &'static str,
    },
    #[error("no bootstrap server in {0:?}")]
    NoBootstrap(String),
}

/// Describes `group` through its coordinator. A group the broker has never
/// seen comes back with no members (Kafka answers state `Dead`).
pub fn describe_group(
    bootstrap_servers: &str,
    group: &str,
    timeout: Duration,
) -> Result<GroupDescription, GroupError> {
    let mut last = None;
    for server in bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match describe_via(server, group, timeout) {
            Ok(d) => return Ok(d),
            Err(e @ (GroupError::Connect { .. } | GroupError::Io { .. })) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| GroupError::NoBootstrap(bootstrap_servers.to_owned())))
}

fn describe_via(
    server: &str,
    group: &str,
    timeout: Duration,
) -> Result<GroupDescription, GroupError> {
    let id = next_id();
    let answer = round_trip(
        server,
        &wire::find_coordinator_request(id, CLIENT_ID, group),
        timeout,
    )?;
    let coordinator = wire::find_coordinator_response(&answer, id)?;
    // 15 = COORDINATOR_NOT_AVAILABLE: no coordinator yet, so nobody is in the
    // group either.
    if coordinator.error_code == 15 {
        return Ok(absent(group));
    }
    if coordinator.error_code != 0 {
        return Err(GroupError::Broker {
            group: group.to_owned(),
            code: coordinator.error_code,
            what: "FindCoordinator",
        });
    }
    let addr = format!("{}:{}", coordinator.host, coordinator.port);
    let id = next_id();
    let answer = round_trip(
        &addr,
        &wire::describe_groups_request(id, CLIENT_ID, &[group]),
        timeout,
    )?;
    let described = wire::describe_groups_response(&answer, id)?;
    let Some(found) = described.into_iter().find(|d| d.group == group) else {
        return Ok(absent(group));
    };
    match found.error_code {
        0 => Ok(found),
        // 69 = GROUP_ID_NOT_FOUND (tansu for a group it never stored).
        69 => Ok(absent(group)),
        code => Err(GroupError::Broker {
            group: group.to_owned(),
            code,
            what: "DescribeGroups",
        }),
    }
}

fn absent(group: &str) -> GroupDescription {
    GroupDescription {
        error_code: 0,
        group: group.to_owned(),
        state: "Dead".to_owned(),
        members: Vec::new(),
    }
}

fn next_id() -> i32 {
    CORRELATION.fetch_add(1, Ordering::Relaxed) & i32::MAX
}

fn round_trip(addr: &str, request: &[u8], timeout: Duration) -> Result<Vec<u8>, GroupError> {
    let connect = |source| GroupError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let io = |source| GroupError::Io {
        addr: addr.to_owned(),
        source,
    };
    let target = addr
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(std::io::Error::other("no address")))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(connect)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream.write_all(request).map_err(io)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).map_err(io)?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_RESPONSE)
        .ok_or_else(|| io(std::io::Error::other(format!("response size {size}"))))?;
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body).map_err(io)?;
    Ok(body)
}
