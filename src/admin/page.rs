//! The status page: one self-contained HTML document (inline CSS, no script,
//! no external assets) rendered from a metrics snapshot and the fills in
//! progress. Key numbers sit in elements with stable ids and carry their
//! exact value in a `data-value` attribute, for tests and for scraping by eye.
//! It only formats; it never reads the store or the clock itself.

use super::text::{bytes, duration, escape, millis, percent};
use super::traffic;
use crate::metrics::{Sampled, Snapshot, SourceHealth};
use crate::store::ActiveFill;
use std::fmt::Write;
use std::time::SystemTime;

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
    /// The supply-chain policy's section, when a policy is configured.
    pub policy: Option<super::policy::PolicyView>,
}

/// The page's only styling, inline in its `<style>`.
const STYLE: &str = include_str!("style.css");

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
         <link rel=\"icon\" href=\"data:,\">\
         <title>package-cache status</title><style>{STYLE}</style></head><body>\
         <header><h1>package-cache</h1><p>version {} · up {} · this page refreshes every {REFRESH_S} s · \
         <a href=\"/metrics\">/metrics</a></p></header><main>",
        env!("CARGO_PKG_VERSION"),
        duration(s.uptime),
    )?;
    for section in SECTIONS {
        section(out, v)?;
    }
    if let Some(policy) = &v.policy {
        super::policy::section(out, policy)?;
    }
    out.push_str("</main></body></html>\n");
    Ok(())
}

/// One part of the page: writes its heading and content from the view and
/// nothing else.
type Section = fn(&mut String, &View) -> std::fmt::Result;

/// The page, top to bottom. A new concern adds its own section here.
const SECTIONS: &[Section] = &[
    cards,
    traffic::last_hour,
    traffic::by_mount,
    requests,
    fills,
    downloads,
    documents,
    upstreams,
    cache,
    shared,
    build_queue,
];

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
            s.fills.started, s.fills.joins
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

fn requests(out: &mut String, v: &View) -> std::fmt::Result {
    let s = &v.snapshot;
    let r = &s.requests;
    let total = r.total();
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
    let (gone, broken) = (s.client_gone, s.broken);
    write!(
        out,
        "<p class=\"note\">Of these, the client left before the end of \
         <span class=\"num\" id=\"requests-client-gone\" data-value=\"{gone}\">{gone}</span>, \
         and <span class=\"num\" id=\"requests-aborted\" data-value=\"{broken}\">{broken}</span> \
         broke off on this side.</p>"
    )
}

/// Rows of `(label, id, value)` as a two-column table with exact values.
fn counts_table(out: &mut String, id: &str, rows: &[(&str, &str, u64)]) -> std::fmt::Result {
    write!(out, "<table id=\"{id}\"><tbody>")?;
    for (label, id, n) in rows {
        write!(
            out,
            "<tr><td>{label}</td><td class=\"num\" id=\"{id}\" data-value=\"{n}\">{n}</td></tr>"
        )?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn downloads(out: &mut String, v: &View) -> std::fmt::Result {
    let f = &v.snapshot.fills;
    out.push_str("<h2>Downloads into the cache</h2>");
    counts_table(
        out,
        "downloads",
        &[
            (
                "started (the upstream answered 200)",
                "fills-started",
                f.started,
            ),
            ("committed", "fills-committed", f.committed),
            ("complete, not stored", "fills-not-stored", f.not_stored),
            ("failed, nothing stored", "fills-failed", f.failed),
            ("abandoned at shutdown", "fills-abandoned", f.abandoned),
            ("requests that joined one", "fill-joins", f.joins),
        ],
    )
}

fn documents(out: &mut String, v: &View) -> std::fmt::Result {
    let r = &v.snapshot.revalidations;
    out.push_str("<h2>Index documents asked upstream</h2>");
    counts_table(
        out,
        "revalidations",
        &[
            ("new version stored", "revalidations-updated", r.updated),
            ("not modified", "revalidations-not-modified", r.not_modified),
            (
                "failed (stale copy served if any)",
                "revalidations-failed",
                r.failed,
            ),
            (
                "passed on (not a document)",
                "revalidations-passed",
                r.passed,
            ),
        ],
    )
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
         <th class=\"num\">attempts</th><th class=\"num\">answers</th><th class=\"num\">errors</th><th class=\"num\">404/410</th>\
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
         <td class=\"num attempts\">{}</td><td class=\"num\">{}</td><td class=\"num errors\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{last_error}</td></tr>",
        h.attempts,
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
