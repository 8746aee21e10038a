//! The status page: one self-contained HTML document (inline CSS, no script,
//! no external assets) rendered from a metrics snapshot and the fills in
//! progress. Key numbers sit in elements with stable ids and carry their
//! exact value in a `data-value` attribute, for tests and for scraping by eye.
//! It only formats; it never reads the store or the clock itself.

use crate::metrics::{Sampled, Snapshot, SourceHealth};
use crate::store::ActiveFill;
use std::fmt::Write;
use std::time::{Duration, SystemTime};

/// Seconds between the page's own refreshes.
const REFRESH_S: u32 = 5;

/// Everything one rendering shows, read by the caller at one moment.
pub struct View {
    /// The counters.
    pub snapshot: Snapshot,
    /// Fills in progress and cache size.
    pub sampled: Sampled,
    /// The fills in progress, with readers and progress.
    pub fills: Vec<ActiveFill>,
    /// "Now", for the ages of errors.
    pub now: SystemTime,
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1d232a; --muted: #5f6b76; --bg: #f4f6f8;
  --card: #fff; --line: #e3e7eb; --good: #2f7d4f; --bad: #b3261e; --bar: #2f6fb3; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ec; --muted: #9aa5b1; --bg: #14181c;
  --card: #1d2329; --line: #2c343c; --good: #5cc48a; --bad: #ff8a80; --bar: #6aa8f0; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { padding: 1.1rem 1.5rem .6rem; max-width: 1150px; margin: 0 auto; }
header h1 { margin: 0; font-size: 1.45rem; }
header p { margin: .2rem 0 0; color: var(--muted); }
main { max-width: 1150px; margin: 0 auto; padding: 0 1.5rem 3rem; }
h2 { font-size: 1.05rem; margin: 1.8rem 0 .6rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: .8rem; }
.card { background: var(--card); border-radius: 10px; padding: .85rem 1rem;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .label { color: var(--muted); font-size: .78rem; text-transform: uppercase; letter-spacing: .05em; }
.card .value { display: block; font-size: 1.8rem; font-weight: 650; margin: .15rem 0; }
.card .note { color: var(--muted); font-size: .85rem; }
.num, .value { font-variant-numeric: tabular-nums; }
table { width: 100%; border-collapse: collapse; background: var(--card); border-radius: 10px;
  overflow: hidden; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
th, td { text-align: left; padding: .5rem .8rem; border-bottom: 1px solid var(--line); vertical-align: middle; }
th { color: var(--muted); font-weight: 600; font-size: .82rem; text-transform: uppercase; letter-spacing: .04em; }
tr:last-child td { border-bottom: 0; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.key { font-family: ui-monospace, monospace; font-size: .88rem; word-break: break-all; }
td.origin { white-space: nowrap; word-break: normal; }
.share { display: inline-block; width: 9rem; height: .55rem; background: var(--line);
  border-radius: 4px; overflow: hidden; vertical-align: middle; }
.share > span { display: block; height: 100%; background: var(--bar); }
progress { width: 100%; min-width: 8rem; height: .8rem; accent-color: var(--bar); }
.good { color: var(--good); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.empty { background: var(--card); border-radius: 10px; padding: .8rem 1rem; color: var(--muted); }
.error { color: var(--bad); font-size: .88rem; word-break: break-word; }
"#;

/// The whole document.
pub fn render(view: &View) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let _ = write_page(&mut out, view);
    out
}

fn write_page(out: &mut String, v: &View) -> std::fmt::Result {
    let s = &v.snapshot;
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>package-cache status</title><style>{STYLE}</style></head><body>\
         <header><h1>package-cache</h1><p>version {} · up {} · this page refreshes every {REFRESH_S} s · \
         <a href=\"/metrics\">/metrics</a></p></header><main>",
        env!("CARGO_PKG_VERSION"),
        duration(s.uptime),
    )?;
    cards(out, v)?;
    requests(out, s)?;
    fills(out, v)?;
    upstreams(out, v)?;
    cache(out, v)?;
    shared(out, v)?;
    build_queue(out, v)?;
    out.push_str("</main></body></html>\n");
    Ok(())
}

fn build_queue(out: &mut String, v: &View) -> std::fmt::Result {
    let depth = v.sampled.build_queue_depth;
    write!(
        out,
        "<h2>Build queue</h2><table id=\"build-queue\"><tbody>\
         <tr><td>waiting for a worker</td><td class=\"num\" id=\"build-queue-depth\" data-value=\"{depth}\">{depth}</td></tr>"
    )?;
    for (state, count) in &v.sampled.build_jobs {
        write!(
            out,
            "<tr><td>{state}</td><td class=\"num\" id=\"build-jobs-{state}\" data-value=\"{count}\">{count}</td></tr>"
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn cards(out: &mut String, v: &View) -> std::fmt::Result {
    let s = &v.snapshot;
    let ratio = s.hit_ratio();
    let answered = s.requests.hit + s.requests.miss + s.requests.pass;
    out.push_str("<section class=\"cards\">");
    card(
        out,
        "Hit ratio",
        "hit-ratio",
        &ratio.map_or(String::new(), |r| format!("{r:.6}")),
        &ratio.map_or("–".into(), percent),
        &format!("{} of {answered} downloads from the cache", s.requests.hit),
    )?;
    card(
        out,
        "Bytes saved",
        "bytes-from-cache",
        &s.bytes_from_cache.to_string(),
        &bytes(s.bytes_from_cache),
        "served from the cache, not fetched again",
    )?;
    card(
        out,
        "From upstream",
        "bytes-from-upstream",
        &s.bytes_from_upstream.to_string(),
        &bytes(s.bytes_from_upstream),
        "served as it was downloaded (MISS, PASS)",
    )?;
    card(
        out,
        "Downloads now",
        "fills-in-progress",
        &v.sampled.fills_in_progress.to_string(),
        &v.sampled.fills_in_progress.to_string(),
        &format!(
            "{} started, {} requests joined one",
            s.fills_started, s.fill_joins
        ),
    )?;
    out.push_str("</section>");
    Ok(())
}

fn card(
    out: &mut String,
    label: &str,
    id: &str,
    exact: &str,
    shown: &str,
    note: &str,
) -> std::fmt::Result {
    write!(
        out,
        "<div class=\"card\"><div class=\"label\">{label}</div>\
         <span class=\"value\" id=\"{id}\" data-value=\"{exact}\">{shown}</span>\
         <div class=\"note\">{}</div></div>",
        escape(note)
    )
}

fn requests(out: &mut String, s: &Snapshot) -> std::fmt::Result {
    let r = &s.requests;
    let total = r.hit + r.miss + r.pass + r.other;
    write!(
        out,
        "<h2>Requests <span class=\"num\" id=\"requests-total\" data-value=\"{total}\">({total})</span></h2>\
         <table><thead><tr><th>X-Cache</th><th>meaning</th><th class=\"num\">requests</th>\
         <th>share</th></tr></thead><tbody>"
    )?;
    let rows = [
        ("HIT", "hit", "from a stored file", r.hit),
        ("MISS", "miss", "streamed while downloading", r.miss),
        ("PASS", "pass", "fetched, not stored", r.pass),
        (
            "other",
            "other",
            "errors, redirects, refusals, clients gone",
            r.other,
        ),
    ];
    for (name, id, meaning, n) in rows {
        let share = if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        };
        write!(
            out,
            "<tr><td>{name}</td><td>{meaning}</td>\
             <td class=\"num\" id=\"requests-{id}\" data-value=\"{n}\">{n}</td>\
             <td><span class=\"share\" title=\"{}\"><span style=\"width:{:.1}%\"></span></span></td></tr>",
            percent(share),
            share * 100.0
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn fills(out: &mut String, v: &View) -> std::fmt::Result {
    out.push_str("<h2>Downloads in progress</h2>");
    if v.fills.is_empty() {
        out.push_str("<p class=\"empty\" id=\"fills\">No downloads in progress.</p>");
        return Ok(());
    }
    out.push_str(
        "<table id=\"fills\"><thead><tr><th>file</th><th>progress</th><th class=\"num\">received</th>\
         <th class=\"num\">readers</th></tr></thead><tbody>",
    );
    for f in &v.fills {
        let (bar, received) = match f.content_length {
            Some(len) if len > 0 => (
                format!(
                    "<progress value=\"{}\" max=\"{len}\"></progress>",
                    f.written
                ),
                format!(
                    "{} of {} ({})",
                    bytes(f.written),
                    bytes(len),
                    percent(f.written as f64 / len as f64)
                ),
            ),
            // No length: an indeterminate bar says "still going".
            _ => (
                "<progress></progress>".to_string(),
                format!("{} so far", bytes(f.written)),
            ),
        };
        write!(
            out,
            "<tr class=\"fill\" data-key=\"{key}\" data-written=\"{}\" data-readers=\"{}\">\
             <td class=\"key\">{key}</td><td>{bar}</td><td class=\"num\">{received}</td>\
             <td class=\"num readers\">{}</td></tr>",
            f.written,
            f.readers,
            f.readers,
            key = escape(&f.key),
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn upstreams(out: &mut String, v: &View) -> std::fmt::Result {
    out.push_str("<h2>Upstreams</h2>");
    if v.snapshot.sources.is_empty() {
        out.push_str("<p class=\"empty\" id=\"upstreams\">No upstream contacted yet.</p>");
        return Ok(());
    }
    out.push_str(
        "<table id=\"upstreams\"><thead><tr><th>source</th><th>health</th>\
         <th class=\"num\">answers</th><th class=\"num\">errors</th><th class=\"num\">404/410</th>\
         <th class=\"num\">mean latency</th><th class=\"num\">last latency</th><th>last error</th>\
         </tr></thead><tbody>",
    );
    for h in &v.snapshot.sources {
        source_row(out, h, v.now)?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn source_row(out: &mut String, h: &SourceHealth, now: SystemTime) -> std::fmt::Result {
    let health = if h.failing() {
        "<span class=\"bad\">failing</span>"
    } else {
        "<span class=\"good\">ok</span>"
    };
    let last_error = match &h.last_error {
        Some((message, at)) => format!(
            "<span class=\"error\">{}</span> <span class=\"note\">({} ago)</span>",
            escape(message),
            duration(now.duration_since(*at).unwrap_or_default())
        ),
        None => "–".into(),
    };
    write!(
        out,
        "<tr class=\"source\" data-source=\"{origin}\"><td class=\"key origin\">{origin}</td><td>{health}</td>\
         <td class=\"num\">{}</td><td class=\"num errors\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{last_error}</td></tr>",
        h.answers,
        h.errors,
        h.not_found,
        h.mean_latency.map_or("–".into(), millis),
        h.last_latency.map_or("–".into(), millis),
        origin = escape(&h.origin),
    )
}

fn cache(out: &mut String, v: &View) -> std::fmt::Result {
    let (size, entries) = (v.sampled.cache_bytes, v.sampled.cache_entries);
    let s = &v.snapshot;
    write!(
        out,
        "<h2>Cache</h2><table><tbody>\
         <tr><td>size</td><td class=\"num\" id=\"cache-size\" data-value=\"{size}\">{}</td></tr>\
         <tr><td>entries</td><td class=\"num\" id=\"cache-entries\" data-value=\"{entries}\">{entries}</td></tr>\
         <tr><td>evicted</td><td class=\"num\" id=\"evictions\" data-value=\"{}\">{} entries, {}</td></tr>\
         </tbody></table>",
        bytes(size),
        s.evictions,
        s.evictions,
        bytes(s.evicted_bytes),
    )
}

/// The shared store tier: whether it is used, what waits to be published,
/// and its counters.
fn shared(out: &mut String, v: &View) -> std::fmt::Result {
    let Some(sh) = &v.sampled.shared else {
        return Ok(());
    };
    let class = match sh.breaker {
        "closed" => "good",
        _ => "bad",
    };
    let state = match sh.breaker {
        "closed" => "in use",
        "open" => "skipped (failing; requests go to disk and upstream)",
        _ => "probing",
    };
    write!(
        out,
        "<h2>Shared store</h2><table id=\"shared\"><tbody>\
         <tr><td>store</td><td class=\"key\">{}</td></tr>\
         <tr><td>state</td><td class=\"num {class}\" id=\"shared-breaker\" data-value=\"{}\">{state}</td></tr>\
         <tr><td>waiting to be published</td><td class=\"num\" id=\"shared-backlog\" data-value=\"{}\">{}</td></tr>",
        escape(&sh.url),
        sh.breaker,
        sh.backlog,
        sh.backlog,
    )?;
    for (event, count) in &sh.events {
        let shown = match event.starts_with("bytes") {
            true => bytes(*count),
            false => count.to_string(),
        };
        write!(
            out,
            "<tr><td>{}</td><td class=\"num\" id=\"shared-{event}\" data-value=\"{count}\">{shown}</td></tr>",
            event.replace('_', " ")
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

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

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
fn duration(d: Duration) -> String {
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
fn escape(raw: &str) -> String {
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
