//! Retry policy: exponential backoff with jitter and an attempt limit.

use std::time::Duration;

use crate::failure::ErrorClass;

/// How a consumer retries a failed handler before dead-lettering.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry) that
    /// [`ErrorClass::Retryable`] failures may take; the waits of an outage
    /// ([`ErrorClass::Unavailable`]) do not count.
    pub max_attempts: u32,
    /// Backoff before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound of any single backoff.
    pub max_backoff: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Spread of the jitter as a fraction of the backoff, in `[0, 1]`:
    /// 0.2 spreads a 1 s backoff over 0.8–1.2 s.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// The seed's policy: three attempts, 100 ms then 200 ms, ±20 %.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

/// What to do after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAfter(Duration),
    /// Dead-letter now.
    GiveUp(GiveUpReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The error cannot be helped by retrying.
    Fatal,
    /// Every attempt allowed by the policy has been used.
    Exhausted,
}

impl RetryPolicy {
    /// Never retry: for tests and for consumers that must not delay.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff after failed attempt number `attempt` (1-based), before
    /// jitter.
    pub fn base_backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(63) as i32;
        let secs = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        Duration::from_secs_f64(secs.min(self.max_backoff.as_secs_f64()))
    }

    /// Decides after a failed attempt of `class`. `attempt` (1-based) counts
    /// the failures of that kind so far: for [`ErrorClass::Retryable`] the
    /// ones that spend the budget, for [`ErrorClass::Unavailable`] the
    /// waits of the outage, which only grow the backoff up to
    /// `max_backoff` and never give up. `jitter_sample` is a uniform random
    /// number in `[0, 1)` supplied by the caller.
    pub fn decide(&self, attempt: u32, class: ErrorClass, jitter_sample: f64) -> RetryDecision {
        match class {
            ErrorClass::Fatal => return RetryDecision::GiveUp(GiveUpReason::Fatal),
            ErrorClass::Retryable if attempt >= self.max_attempts => {
                return RetryDecision::GiveUp(GiveUpReason::Exhausted);
            }
            ErrorClass::Retryable | ErrorClass::Unavailable => {}
        }
        let base = self.base_backoff(attempt).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        let sample = if jitter_sample.is_finite() {
            jitter_sample.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 - jitter + 2.0 * jitter * sample;
        let secs = (base * factor).min(self.max_backoff.as_secs_f64()).max(0.0);
        RetryDecision::RetryAfter(Duration::from_secs_f64(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn table_of_decisions() {
        let policy = RetryPolicy {
            max_attempts: 4,
            initial_backoff: ms(100),
            max_backoff: ms(350),
            multiplier: 2.0,
            jitter: 0.5,
        };
        use ErrorClass::*;
        use RetryDecision::*;
        let cases = [
            (1, Retryable, 0.5, RetryAfter(ms(100))),
            (1, Retryable, 0.0, RetryAfter(ms(50))),
            (1, Retryable, 1.0, RetryAfter(ms(150))),
            (2, Retryable, 0.5, RetryAfter(ms(200))),
            // Capped by max_backoff before and after jitter.
            (3, Retryable, 0.5, RetryAfter(ms(350))),
            (3, Retryable, 1.0, RetryAfter(ms(350))),
            (4, Retryable, 0.5, GiveUp(GiveUpReason::Exhausted)),
            (9, Retryable, 0.5, GiveUp(GiveUpReason::Exhausted)),
            (1, Fatal, 0.5, GiveUp(GiveUpReason::Fatal)),
            // An outage waits past the attempt limit, its backoff capped.
            (1, Unavailable, 0.5, RetryAfter(ms(100))),
            (4, Unavailable, 0.5, RetryAfter(ms(350))),
            (1_000, Unavailable, 1.0, RetryAfter(ms(350))),
            // A broken random source cannot produce a nonsense delay.
            (1, Retryable, f64::NAN, RetryAfter(ms(100))),
        ];
        for (attempt, class, sample, expected) in cases {
            let got = policy.decide(attempt, class, sample);
            let close = match (got, expected) {
                (RetryAfter(a), RetryAfter(b)) => a.abs_diff(b) < Duration::from_micros(1),
                (a, b) => a == b,
            };
            assert!(
                close,
                "attempt {attempt} {class:?} {sample}: {got:?} != {expected:?}"
            );
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(
            policy.decide(u32::MAX - 1, ErrorClass::Retryable, 0.5),
            RetryDecision::RetryAfter(policy.max_backoff)
        );
    }

    #[test]
    fn no_retry_gives_up_after_first_attempt() {
        assert_eq!(
            RetryPolicy::no_retry().decide(1, ErrorClass::Retryable, 0.1),
            RetryDecision::GiveUp(GiveUpReason::Exhausted)
        );
    }

    #[test]
    fn no_retry_still_waits_out_an_outage() {
        let policy = RetryPolicy::no_retry();
        assert_eq!(
            policy.decide(u32::MAX, ErrorClass::Unavailable, 0.5),
            RetryDecision::RetryAfter(policy.max_backoff)
        );
    }
}
