//! Points in time given on the command line: RFC 3339
//! (`2026-11-22T05:00:00Z`, `2026-11-22T06:00:00+01:00`), a UTC date-time
//! without offset (`2026-11-22 05:00:00`, `2026-11-22T05:00`), milliseconds
//! since the epoch, or an age (`10m`, `2h`, `90s`, `1d` ago).

use chrono::{DateTime, NaiveDateTime, Utc};

/// Parses `input` as a point in time, `now_ms` being "now" for ages.
pub fn parse_time_ms(input: &str, now_ms: i64) -> Result<i64, String> {
    let s = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Some((digits, unit)) = s
        .char_indices()
        .last()
        .filter(|(_, c)| c.is_ascii_alphabetic())
        .map(|(i, c)| (&s[..i], c))
        && let Ok(n) = digits.parse::<i64>()
    {
        let unit_ms = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => 0,
        };
        if unit_ms > 0 && n >= 0 {
            return Ok(now_ms - n.saturating_mul(unit_ms));
        }
    }
    if let Ok(ms) = s.parse::<i64>()
        && ms > 0
    {
        return Ok(ms);
    }
    Err(format!(
        "cannot read {input:?} as a time: use RFC 3339 (2026-11-22T05:00:00Z), a UTC date-time (2026-11-22 05:00:00), epoch milliseconds, or an age such as 10m, 2h, 1d"
    ))
}

/// `ms` as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_times() {
        let now = 1_800_000_000_000;
        let cases: &[(&str, Result<i64, ()>)] = &[
            ("2026-11-22T05:00:00Z", Ok(1_795_323_600_000)),
            ("2026-11-22T06:00:00+01:00", Ok(1_795_323_600_000)),
            ("2026-11-22T05:00:00.250Z", Ok(1_795_323_600_250)),
            ("2026-11-22 05:00:00", Ok(1_795_323_600_000)),
            ("2026-11-22T05:00", Ok(1_795_323_600_000)),
            ("1795323600000", Ok(1_795_323_600_000)),
            ("10m", Ok(now - 600_000)),
            ("2h", Ok(now - 7_200_000)),
            ("90s", Ok(now - 90_000)),
            ("1d", Ok(now - 86_400_000)),
            ("yesterday", Err(())),
            ("10x", Err(())),
            ("-5", Err(())),
            ("", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_time_ms(input, now).map_err(|_| ());
            assert_eq!(&got, want, "{input}");
        }
        assert!(
            parse_time_ms("soon", now)
                .expect_err("invalid")
                .contains("RFC 3339")
        );
        assert_eq!(format_ms(1_795_323_600_250), "2026-11-22T05:00:00.250Z");
    }
}
