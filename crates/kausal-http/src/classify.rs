//! Which HTTP answers are worth another attempt.

use kausal_core::failure::ErrorClass;

/// An answer's class: a request timeout (408), too early (425), too many
/// requests (429) and the server errors that say "not now" (500, 502, 503,
/// 504) are retried; every other 4xx and 5xx says the request itself is
/// wrong or unsupported, and sending it again cannot help.
pub fn status_class(status: u16) -> ErrorClass {
    match status {
        408 | 425 | 429 | 500 | 502 | 503 | 504 => ErrorClass::Retryable,
        _ => ErrorClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_statuses() {
        use ErrorClass::*;
        for (status, class) in [
            (408, Retryable),
            (425, Retryable),
            (429, Retryable),
            (500, Retryable),
            (502, Retryable),
            (503, Retryable),
            (504, Retryable),
            (400, Fatal),
            (401, Fatal),
            (404, Fatal),
            (409, Fatal),
            (413, Fatal),
            (422, Fatal),
            (501, Fatal),
            (505, Fatal),
        ] {
            assert_eq!(status_class(status), class, "{status}");
        }
    }
}
