//! Which exposition format a scraper asked for, from its `Accept` header
//! (RFC 9110 §12.5.1): each format gets the quality of the most specific
//! media range that matches it, the higher quality wins, and OpenMetrics
//! wins ties and answers requests that name neither (no `Accept`, `*/*`,
//! a browser's list). Prometheus 2 sends
//! `application/openmetrics-text;version=1.0.0,…,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`;
//! Prometheus 3 told `scrape_protocols: [PrometheusText0.0.4]` sends
//! `text/plain;version=0.0.4;q=0.6,*/*;q=0.5`.

use crate::metrics::Format;

/// The media types each format answers, with the versions it may be asked
/// for. A `text/plain` 1.0.0 reader reads 0.0.4 (our names need no quoting).
const TYPES: [(Format, &str, &str, &[&str]); 2] = [
    (
        Format::OpenMetrics,
        "application",
        "openmetrics-text",
        &["1.0.0", "0.0.1"],
    ),
    (Format::PrometheusText, "text", "plain", &["0.0.4", "1.0.0"]),
];

/// The format to answer a request whose `Accept` is `accept`.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::OpenMetrics;
    };
    // (specificity, quality) of the best-matching range, per format.
    let mut best: [Option<(u8, f32)>; 2] = [None, None];
    for range in mime::MimeIter::new(accept).flatten() {
        let quality = range
            .get_param("q")
            .and_then(|q| q.as_str().parse::<f32>().ok())
            .map_or(1.0, |q| q.clamp(0.0, 1.0));
        for (i, (_, type_, subtype, versions)) in TYPES.iter().enumerate() {
            let Some(specificity) = matches(&range, type_, subtype, versions) else {
                continue;
            };
            if best[i].is_none_or(|(s, _)| specificity > s) {
                best[i] = Some((specificity, quality));
            }
        }
    }
    let quality = |i: usize| best[i].map_or(0.0, |(_, q)| q);
    if quality(1) > quality(0) {
        Format::PrometheusText
    } else {
        Format::OpenMetrics
    }
}

/// How specifically `range` names `type_/subtype` (0 for `*/*`, 1 for
/// `type/*`, 2 for the type, 3 with a version we write), or `None`.
fn matches(range: &mime::Mime, type_: &str, subtype: &str, versions: &[&str]) -> Option<u8> {
    if range.type_() == mime::STAR {
        return (range.subtype() == mime::STAR).then_some(0);
    }
    if range.type_() != type_ {
        return None;
    }
    if range.subtype() == mime::STAR {
        return Some(1);
    }
    if range.subtype() != subtype {
        return None;
    }
    match range.get_param("version") {
        None => Some(2),
        Some(v) => versions.contains(&v.as_str()).then_some(3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapers_get_what_they_prefer() {
        let cases = [
            (None, Format::OpenMetrics),
            (Some("*/*"), Format::OpenMetrics),
            (Some("text/plain;version=0.0.4"), Format::PrometheusText),
            (Some("text/plain"), Format::PrometheusText),
            (Some("text/*"), Format::PrometheusText),
            (Some("text/plain; version=0.0.4; q=0.6, */*; q=0.5"), Format::PrometheusText),
            // Prometheus 2.x.
            (
                Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                Format::OpenMetrics,
            ),
            // Prometheus 3 with scrape_protocols: [PrometheusText0.0.4].
            (Some("text/plain;version=0.0.4;q=0.6,*/*;q=0.5"), Format::PrometheusText),
            // Prometheus 3's default list.
            (
                Some("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"),
                Format::OpenMetrics,
            ),
            // Older Prometheus (2.0–2.4).
            (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), Format::PrometheusText),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            // Protobuf first: we have no protobuf, the next choice is text.
            (
                Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"),
                Format::PrometheusText,
            ),
            // A version we do not write is not a match.
            (Some("text/plain;version=9.9.9, */*;q=0.1"), Format::OpenMetrics),
            // q=0 refuses.
            (Some("text/plain;q=0, */*"), Format::OpenMetrics),
            // A browser.
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                Format::OpenMetrics,
            ),
            (Some("application/json"), Format::OpenMetrics),
            (Some("garbage;;;,,"), Format::OpenMetrics),
        ];
        for (accept, format) in cases {
            assert_eq!(negotiate(accept), format, "{accept:?}");
        }
    }
}
