//! How numbers and client-chosen text read on the status page: binary
//! units, percentages, ages, and HTML escaping. Pure functions.

use std::time::Duration;

/// `512 B`, `1.5 KiB`, `12.3 MiB`: binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `62.5 %`.
pub fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

pub fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// Escapes text for HTML content and double-quoted attributes: keys and
/// error messages carry request paths, which a client chooses.
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200_000), "195.3 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(percent(0.625), "62.5 %");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 300)), "3 h 5 min");
    }

    #[test]
    fn client_chosen_text_is_escaped() {
        assert_eq!(
            escape("/a<script>\"x\"&'"),
            "/a&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
