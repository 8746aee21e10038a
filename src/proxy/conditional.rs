//! Pure evaluation of `Range`, `If-Range`, `If-None-Match` and
//! `If-Modified-Since` against a stored representation (RFC 9110 §13, §14).

use std::time::SystemTime;

/// What a `Range` header asks of a body of a given length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Serve the whole body (no Range, several ranges, or one we ignore).
    Full,
    /// Serve `[start, end)` with 206.
    Partial {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The range starts at or past the end: 416.
    Unsatisfiable,
}

/// Evaluates a `Range` header value against a body of `len` bytes.
/// Only single byte ranges are served; anything else falls back to the full body.
pub fn range(value: &str, len: u64) -> RangeAnswer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if len == 0 {
        // An empty representation has no byte to satisfy any range (RFC 9110 §14.1.2).
        return if first.is_empty() && last.parse::<u64>().is_err() {
            RangeAnswer::Full
        } else {
            RangeAnswer::Unsatisfiable
        };
    }
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return RangeAnswer::Full;
        };
        if n == 0 {
            return RangeAnswer::Unsatisfiable;
        }
        return RangeAnswer::Partial {
            start: len.saturating_sub(n),
            end: len,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeAnswer::Full;
    };
    let end = if last.is_empty() {
        len
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(len),
            _ => return RangeAnswer::Full,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial { start, end }
}

/// Whether an `If-Range` value still matches the representation: a strong
/// ETag equal to ours, or an HTTP-date equal to our Last-Modified.
pub fn if_range_matches(value: &str, etag: Option<&str>, last_modified: Option<&str>) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return !value.starts_with("W/")
            && etag.is_some_and(|e| !e.starts_with("W/") && e == value);
    }
    match (
        httpdate::parse_http_date(value),
        last_modified.map(httpdate::parse_http_date),
    ) {
        (Ok(a), Some(Ok(b))) => a == b,
        _ => false,
    }
}

/// Whether `If-None-Match` matches our ETag (weak comparison, `*` matches).
pub fn none_match(value: &str, etag: Option<&str>) -> bool {
    let Some(etag) = etag else {
        return value.trim() == "*";
    };
    let ours = etag.trim_start_matches("W/");
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

/// Whether the representation is unmodified since an `If-Modified-Since` date.
pub fn not_modified_since(value: &str, last_modified: Option<&str>) -> bool {
    let since: SystemTime = match httpdate::parse_http_date(value.trim()) {
        Ok(t) => t,
        Err(_) => return false,
    };
    match last_modified.map(httpdate::parse_http_date) {
        Some(Ok(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAnswer::*;

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-99", 1000), Partial { start: 0, end: 100 });
        assert_eq!(
            range("bytes=500-", 1000),
            Partial {
                start: 500,
                end: 1000
            }
        );
        assert_eq!(
            range("bytes=-100", 1000),
            Partial {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            range("bytes=-5000", 1000),
            Partial {
                start: 0,
                end: 1000
            }
        );
        assert_eq!(
            range("bytes=990-2000", 1000),
            Partial {
                start: 990,
                end: 1000
            }
        );
        assert_eq!(range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(range("bytes=5000-6000", 1000), Unsatisfiable);
        assert_eq!(range("bytes=0-1,5-6", 1000), Full);
        assert_eq!(range("items=0-1", 1000), Full);
        assert_eq!(range("bytes=9-3", 1000), Full);
        assert_eq!(range("bytes=x-", 1000), Full);
        assert_eq!(range("bytes=-5", 0), Unsatisfiable);
        assert_eq!(range("bytes=0-", 0), Unsatisfiable);
        let big = 5 * 1024 * 1024 * 1024u64;
        assert_eq!(
            range("bytes=4294967296-", big),
            Partial {
                start: 1 << 32,
                end: big
            }
        );
    }

    #[test]
    fn validators() {
        assert!(if_range_matches("\"abc\"", Some("\"abc\""), None));
        assert!(!if_range_matches("\"abc\"", Some("\"abd\""), None));
        assert!(!if_range_matches("W/\"abc\"", Some("W/\"abc\""), None));
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(if_range_matches(lm, None, Some(lm)));
        assert!(!if_range_matches(
            "Sun, 06 Nov 1994 08:49:38 GMT",
            None,
            Some(lm)
        ));
        assert!(none_match("\"a\", \"b\"", Some("\"b\"")));
        assert!(none_match("W/\"b\"", Some("\"b\"")));
        assert!(none_match("*", Some("\"b\"")));
        assert!(!none_match("\"c\"", Some("\"b\"")));
        assert!(!none_match("\"c\"", None));
        assert!(not_modified_since(lm, Some(lm)));
        assert!(not_modified_since(
            "Mon, 07 Nov 1994 08:49:37 GMT",
            Some(lm)
        ));
        assert!(!not_modified_since(
            "Sat, 05 Nov 1994 08:49:37 GMT",
            Some(lm)
        ));
        assert!(!not_modified_since("garbage", Some(lm)));
    }
}
