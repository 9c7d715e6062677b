//! Group membership: is anyone consuming as this group right now?
//!
//! Asks through librdkafka's DescribeConsumerGroups Admin API, which finds
//! the group's coordinator and describes the group over the client's own
//! connections, so `security.protocol`, `sasl.*` and `ssl.*` from
//! [`KafkaConfig::extra`] apply. rdkafka 0.39 does not wrap that API: the
//! calls are in [`ffi`], the only `unsafe` code of Kausal; what the answer
//! means is decided here. Blocking; call from a blocking task.

mod ffi;

use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;
use ffi::{Answer, Described};

/// One group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`,
    /// `Dead`, or `Unknown` (librdkafka's names of the group states).
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

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "cannot create a Kafka client to describe group {group}: {source}; \
         check bootstrap.servers and the security.protocol/sasl.*/ssl.* properties"
    )]
    Client { group: String, source: KafkaError },
    #[error("group name {0:?} contains a NUL byte, which Kafka group names cannot")]
    InvalidName(String),
    #[error(
        "no description of group {group} within {timeout:?} ({detail}); check that \
         the brokers are reachable with these security settings and that the \
         group's coordinator is up, then retry"
    )]
    TimedOut {
        group: String,
        timeout: Duration,
        detail: String,
    },
    #[error(
        "not allowed to describe group {group} ({code:?}: {message}); grant this \
         principal DESCRIBE on the group, or check the SASL/SSL credentials"
    )]
    Unauthorized {
        group: String,
        code: RDKafkaErrorCode,
        message: String,
    },
    #[error(
        "describing group {group} failed: {code:?}: {message}; see the broker's \
         log for why it refused or dropped the request"
    )]
    Broker {
        group: String,
        code: RDKafkaErrorCode,
        message: String,
    },
    #[error(
        "the broker describes group {group} as {state} but lists no members, so \
         whether anyone consumes is unknown (tansu 0.6 answers ConsumerGroupDescribe \
         so for every group); stop the group's consumers yourself before acting on it"
    )]
    MembersNotListed { group: String, state: String },
    #[error("librdkafka answered without group {group}; report this as a Kausal bug")]
    Missing { group: String },
}

/// Describes `group` through a client made from `kafka` (its TLS/SASL
/// properties included). A group the broker does not know comes back as
/// `Dead` with no members.
pub fn describe_group(
    kafka: &KafkaConfig,
    group: &str,
    timeout: Duration,
) -> Result<GroupDescription, GroupError> {
    let client: AdminClient<DefaultClientContext> =
        kafka
            .client_config()
            .create()
            .map_err(|source| GroupError::Client {
                group: group.to_owned(),
                source,
            })?;
    describe_group_with(client.inner(), group, timeout)
}

/// [`describe_group`] over an existing client (any kind: admin, producer,
/// consumer), reusing its connections.
pub fn describe_group_with<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    timeout: Duration,
) -> Result<GroupDescription, GroupError> {
    let name = ffi::group_name(group).ok_or_else(|| GroupError::InvalidName(group.to_owned()))?;
    // librdkafka restarts the request timeout when it falls back from
    // ConsumerGroupDescribe to DescribeGroups, so its answer can take two
    // timeouts; a little more so its own timeout error wins over ours.
    let wait = timeout * 2 + Duration::from_secs(1);
    interpret(group, timeout, ffi::describe(client, &name, timeout, wait))
}

/// What librdkafka's answer means for `group`.
fn interpret(
    group: &str,
    timeout: Duration,
    answer: Answer,
) -> Result<GroupDescription, GroupError> {
    let described = match answer {
        Answer::Nothing => {
            return Err(GroupError::TimedOut {
                group: group.to_owned(),
                timeout,
                detail: "librdkafka never answered".to_owned(),
            });
        }
        Answer::Failed { code, message } => return Err(refused(group, timeout, code, message)),
        Answer::Groups(groups) => groups.into_iter().find(|d| d.group == group),
    };
    let Some(Described {
        error,
        state,
        consumer_protocol,
        members,
        ..
    }) = described
    else {
        return Err(GroupError::Missing {
            group: group.to_owned(),
        });
    };
    match error {
        // A KIP-848 group without members is Empty; anything else without
        // members is a broker that does not list them (tansu), and "no
        // members" would wrongly say nobody consumes.
        None if consumer_protocol
            && members.is_empty()
            && !["Empty", "Dead"].contains(&state.as_str()) =>
        {
            Err(GroupError::MembersNotListed {
                group: group.to_owned(),
                state,
            })
        }
        None => Ok(GroupDescription {
            group: group.to_owned(),
            state,
            members,
        }),
        // Kafka 4 and tansu for a group they never stored (older Kafka
        // answers state Dead without an error).
        Some((RDKafkaErrorCode::GroupIdNotFound, _)) => Ok(absent(group)),
        Some((code, message)) => Err(refused(group, timeout, code, message)),
    }
}

fn refused(group: &str, timeout: Duration, code: RDKafkaErrorCode, message: String) -> GroupError {
    let group = group.to_owned();
    match code {
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut => {
            GroupError::TimedOut {
                group,
                timeout,
                detail: if message.is_empty() {
                    format!("{code:?}")
                } else {
                    message
                },
            }
        }
        RDKafkaErrorCode::GroupAuthorizationFailed
        | RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed => GroupError::Unauthorized {
            group,
            code,
            message,
        },
        _ => GroupError::Broker {
            group,
            code,
            message,
        },
    }
}

fn absent(group: &str) -> GroupDescription {
    GroupDescription {
        group: group.to_owned(),
        state: "Dead".to_owned(),
        members: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(3);

    fn described(group: &str, error: Option<RDKafkaErrorCode>, members: usize) -> Described {
        Described {
            group: group.to_owned(),
            error: error.map(|c| (c, format!("{c:?} happened"))),
            state: if members > 0 { "Stable" } else { "Empty" }.to_owned(),
            consumer_protocol: false,
            members: (0..members)
                .map(|i| GroupMember {
                    member_id: format!("m{i}"),
                    client_id: format!("c{i}"),
                    client_host: "/127.0.0.1".to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn members_are_kept_and_make_the_group_live() {
        let d = interpret("g", T, Answer::Groups(vec![described("g", None, 2)])).expect("ok");
        assert_eq!(d.group, "g");
        assert_eq!(d.state, "Stable");
        assert_eq!(d.members.len(), 2);
        assert_eq!(d.members[1].client_id, "c1");
        assert!(d.has_live_members());
    }

    #[test]
    fn an_empty_or_dead_group_has_no_live_members() {
        let d = interpret("g", T, Answer::Groups(vec![described("g", None, 0)])).expect("ok");
        assert_eq!(d.state, "Empty");
        assert!(!d.has_live_members());
        let mut dead = described("g", None, 1);
        dead.state = "Dead".to_owned();
        let d = interpret("g", T, Answer::Groups(vec![dead])).expect("ok");
        assert!(!d.has_live_members(), "a Dead group's members do not count");
    }

    #[test]
    fn an_unknown_group_is_dead_without_members() {
        let d = interpret(
            "g",
            T,
            Answer::Groups(vec![described(
                "g",
                Some(RDKafkaErrorCode::GroupIdNotFound),
                0,
            )]),
        )
        .expect("absent");
        assert_eq!(d, absent("g"));
    }

    #[test]
    fn a_consumer_group_described_without_its_members_is_not_taken_as_stopped() {
        let of = |state: &str, members| {
            let mut d = described("g", None, members);
            d.state = state.to_owned();
            d.consumer_protocol = true;
            interpret("g", T, Answer::Groups(vec![d]))
        };
        for state in ["Stable", "Unknown", "PreparingRebalance"] {
            let e = of(state, 0).expect_err(state);
            assert!(matches!(e, GroupError::MembersNotListed { .. }), "{e:?}");
        }
        assert!(!of("Empty", 0).expect("empty").has_live_members());
        assert!(of("Stable", 1).expect("listed").has_live_members());
    }

    #[test]
    fn only_the_asked_group_counts() {
        let answer = Answer::Groups(vec![described("other", None, 1)]);
        assert!(matches!(
            interpret("g", T, answer),
            Err(GroupError::Missing { .. })
        ));
    }

    #[test]
    fn errors_say_what_to_do() {
        let of = |code| {
            interpret("g", T, Answer::Groups(vec![described("g", Some(code), 0)]))
                .expect_err("error")
        };
        let e = of(RDKafkaErrorCode::OperationTimedOut);
        assert!(matches!(e, GroupError::TimedOut { .. }), "{e:?}");
        assert!(e.to_string().contains("reachable"), "{e}");
        let e = of(RDKafkaErrorCode::GroupAuthorizationFailed);
        assert!(matches!(e, GroupError::Unauthorized { .. }), "{e:?}");
        assert!(e.to_string().contains("DESCRIBE"), "{e}");
        let e = of(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(
            matches!(
                e,
                GroupError::Broker {
                    code: RDKafkaErrorCode::BrokerTransportFailure,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("broker's log"), "{e}");
    }

    #[test]
    fn a_failed_request_or_no_answer_is_an_error() {
        let e = interpret(
            "g",
            T,
            Answer::Failed {
                code: RDKafkaErrorCode::InvalidArgument,
                message: "bad".to_owned(),
            },
        )
        .expect_err("failed");
        assert!(matches!(e, GroupError::Broker { .. }), "{e:?}");
        let e = interpret("g", T, Answer::Nothing).expect_err("nothing");
        assert!(matches!(e, GroupError::TimedOut { .. }), "{e:?}");
    }

    #[test]
    fn a_nul_in_the_name_is_refused_before_asking() {
        let client: AdminClient<DefaultClientContext> = KafkaConfig::new("127.0.0.1:1")
            .client_config()
            .create()
            .expect("client");
        let e = describe_group_with(client.inner(), "a\0b", T).expect_err("nul");
        assert!(matches!(e, GroupError::InvalidName(_)), "{e:?}");
    }

    #[test]
    fn an_unreachable_cluster_times_out() {
        let config = KafkaConfig::new("127.0.0.1:1");
        let e = describe_group(&config, "g", Duration::from_millis(300)).expect_err("no broker");
        assert!(matches!(e, GroupError::TimedOut { .. }), "{e:?}");
    }
}
