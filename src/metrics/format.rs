//! The two exposition formats a scraper may ask for: OpenMetrics 1.0.0 (the
//! default, as `prometheus_client` encodes it) and the Prometheus text
//! format 0.0.4 (what older Prometheus servers, Prometheus 3 told to, and
//! many agents ask for). It knows nothing of HTTP: the admin listener picks
//! the format from `Accept`.
//!
//! `prometheus_client` only writes OpenMetrics, so the 0.0.4 text is derived
//! from its output; the two differ only in metadata: a counter's `# HELP` and
//! `# TYPE` name its `_total` sample, `info` becomes a gauge, `unknown`
//! `untyped`, and there is no `# UNIT`, `# EOF` or exemplar.

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    PrometheusText,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition (as
/// `prometheus_client` writes it: `# HELP`, `# TYPE`, `# UNIT`, then the
/// samples of each family). Sample lines are the same in both formats.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE, but the name it carries depends on the type.
    let mut help: Option<(&str, &str)> = None;
    // The current family's `_created` series, which 0.0.4 does not have.
    let mut created = String::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (sample, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {sample} {text}\n"));
            }
            out.push_str(&format!("# TYPE {sample} {kind}\n"));
            created = format!("{name}_created");
            continue;
        }
        if line.starts_with('#') {
            // `# UNIT`, `# EOF`: OpenMetrics only.
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        if line[..name_end] == created {
            continue;
        }
        // An exemplar follows ` # ` after the value; labels cannot hold it
        // unescaped, but they can hold " # ", so look past them.
        let labels_end = line[name_end..]
            .starts_with('{')
            .then(|| closing_brace(&line[name_end..]).map(|i| name_end + i))
            .flatten()
            .unwrap_or(name_end);
        let sample = match line[labels_end..].find(" # ") {
            Some(i) => &line[..labels_end + i],
            None => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The index of the `}` that closes the label set `labels` opens, skipping
/// quoted values (which may hold `}` and escaped quotes).
fn closing_brace(labels: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_the_samples_and_openmetrics_only_lines_go() {
        let om = "# HELP x_requests Requests \"quoted\".\n\
                  # TYPE x_requests counter\n\
                  x_requests_total{cache=\"HIT\"} 5\n\
                  x_requests_created{cache=\"HIT\"} 1700000000.0\n\
                  # HELP x_served_bytes Bytes.\n\
                  # TYPE x_served_bytes counter\n\
                  # UNIT x_served_bytes bytes\n\
                  x_served_bytes_total{from=\"a # }b\"} 7 # {trace=\"1\"} 1.0\n\
                  # HELP x_head_seconds Head.\n\
                  # TYPE x_head_seconds histogram\n\
                  # UNIT x_head_seconds seconds\n\
                  x_head_seconds_sum 0.5\n\
                  x_head_seconds_count 1\n\
                  x_head_seconds_bucket{le=\"+Inf\"} 1\n\
                  # HELP x_build Build.\n\
                  # TYPE x_build info\n\
                  x_build_info{version=\"1\"} 1\n\
                  # HELP x_odd Odd.\n\
                  # TYPE x_odd unknown\n\
                  x_odd 2\n\
                  # EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_requests_total Requests \"quoted\".\n\
             # TYPE x_requests_total counter\n\
             x_requests_total{cache=\"HIT\"} 5\n\
             # HELP x_served_bytes_total Bytes.\n\
             # TYPE x_served_bytes_total counter\n\
             x_served_bytes_total{from=\"a # }b\"} 7\n\
             # HELP x_head_seconds Head.\n\
             # TYPE x_head_seconds histogram\n\
             x_head_seconds_sum 0.5\n\
             x_head_seconds_count 1\n\
             x_head_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP x_build_info Build.\n\
             # TYPE x_build_info gauge\n\
             x_build_info{version=\"1\"} 1\n\
             # HELP x_odd Odd.\n\
             # TYPE x_odd untyped\n\
             x_odd 2\n"
        );
    }
}
