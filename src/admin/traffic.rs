//! The status page's traffic sections: the last hour as a chart (requests per
//! minute, stacked by cache status, and the hit ratio per minute), and the
//! breakdown by mount with a sparkline per row. Inline SVG, no script: each
//! minute carries its exact numbers in `data-*` attributes and a `<title>`
//! tooltip.

use super::page::View;
use super::text::{bytes, escape, percent};
use crate::metrics::{Minute, MountStats, MINUTES};
use std::fmt::Write;

/// The chart's drawing area, in its viewBox units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 676.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 172.0;

/// "Last hour": the whole cache's requests and hit ratio per minute.
pub(super) fn last_hour(out: &mut String, v: &View) -> std::fmt::Result {
    out.push_str("<h2>Last hour</h2>");
    chart(out, &v.snapshot.last_hour)?;
    out.push_str(
        "<p class=\"legend\"><span class=\"swatch hit\"></span>HIT <span class=\"swatch miss\"></span>MISS \
         <span class=\"swatch pass\"></span>PASS <span class=\"swatch other\"></span>other \
         <span class=\"swatch ratio\"></span>hit ratio (right axis), per minute</p>",
    );
    Ok(())
}

/// "By mount": one row per configured mount (and per other row with traffic).
pub(super) fn by_mount(out: &mut String, v: &View) -> std::fmt::Result {
    out.push_str(
        "<h2>By mount</h2><table id=\"mounts\"><thead><tr><th>mount</th>\
         <th class=\"num\">requests</th><th class=\"num\">HIT</th><th class=\"num\">MISS</th>\
         <th class=\"num\">PASS</th><th class=\"num\">other</th><th class=\"num\">hit ratio</th>\
         <th class=\"num\">from cache</th><th class=\"num\">from upstream</th>\
         <th>last hour</th></tr></thead><tbody>",
    );
    let shown = v
        .snapshot
        .by_mount
        .iter()
        .filter(|m| m.is_mount || m.requests.total() > 0);
    for m in shown {
        mount_row(out, m)?;
    }
    out.push_str("</tbody></table>");
    Ok(())
}

fn mount_row(out: &mut String, m: &MountStats) -> std::fmt::Result {
    let r = &m.requests;
    let name = match m.label.as_str() {
        "(mirrors)" => "<code>--source</code> mirrors".to_string(),
        "(none)" => "no upstream (refused)".to_string(),
        label if m.is_mount => format!("<code>/{}/</code>", escape(label)),
        label => escape(label),
    };
    let ratio = r.hit_ratio();
    write!(
        out,
        "<tr class=\"mount\" data-mount=\"{label}\"><td>{name}</td>\
         <td class=\"num requests\" data-value=\"{}\">{}</td>",
        r.total(),
        r.total(),
        label = escape(&m.label),
    )?;
    for (class, n) in [
        ("hit", r.hit),
        ("miss", r.miss),
        ("pass", r.pass),
        ("other", r.other),
    ] {
        write!(out, "<td class=\"num {class}\" data-value=\"{n}\">{n}</td>")?;
    }
    write!(
        out,
        "<td class=\"num hit-ratio\" data-value=\"{}\">{}</td>\
         <td class=\"num from-cache\" data-value=\"{}\">{}</td>\
         <td class=\"num from-upstream\" data-value=\"{}\">{}</td><td>",
        ratio.map_or(String::new(), |r| format!("{r:.6}")),
        ratio.map_or("–".into(), percent),
        m.bytes_from_cache,
        bytes(m.bytes_from_cache),
        m.bytes_from_upstream,
        bytes(m.bytes_from_upstream),
    )?;
    sparkline(out, &m.last_hour)?;
    out.push_str("</td></tr>");
    Ok(())
}

/// Requests per minute as a small line, scaled to the row's busiest minute.
fn sparkline(out: &mut String, hour: &[Minute; MINUTES]) -> std::fmt::Result {
    let (w, h) = (120.0, 24.0);
    let max = hour.iter().map(Minute::requests).max().unwrap_or(0).max(1);
    let total: u64 = hour.iter().map(Minute::requests).sum();
    write!(
        out,
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" \
         role=\"img\" aria-label=\"requests per minute, last hour\">\
         <title>{total} requests in the last hour, at most {max} in a minute</title><polyline points=\""
    )?;
    for (i, minute) in hour.iter().enumerate() {
        let x = i as f64 * w / (MINUTES - 1) as f64;
        let y = h - 1.0 - minute.requests() as f64 * (h - 2.0) / max as f64;
        write!(out, "{}{x:.1},{y:.1}", if i == 0 { "" } else { " " })?;
    }
    out.push_str("\"/></svg>");
    Ok(())
}

/// 1, 2 or 5 times a power of ten, at least `n`: a round top for the axis.
fn round_up(n: u64) -> u64 {
    let mut scale = 1;
    loop {
        for step in [1, 2, 5] {
            if step * scale >= n {
                return step * scale;
            }
        }
        scale *= 10;
    }
}

/// The chart: per minute, a bar of requests stacked HIT, MISS, PASS, other
/// (left axis), and a point of hit ratio where the minute had downloads
/// (right axis, joined by lines across consecutive minutes).
fn chart(out: &mut String, hour: &[Minute; MINUTES]) -> std::fmt::Result {
    let top = round_up(hour.iter().map(Minute::requests).max().unwrap_or(0).max(1));
    let slot = (RIGHT - LEFT) / MINUTES as f64;
    let y_of = |n: f64| BOTTOM - n * (BOTTOM - TOP) / top as f64;
    let ratio_y = |r: f64| BOTTOM - r * (BOTTOM - TOP);
    write!(
        out,
        "<svg id=\"chart\" class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"Requests and hit ratio per minute over the last hour\">\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{RIGHT}\" y2=\"{BOTTOM}\"/>\
         <line class=\"grid\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{RIGHT}\" y2=\"{TOP}\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{top}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\
         <text x=\"{}\" y=\"{}\">100 %</text><text x=\"{}\" y=\"{}\">0 %</text>\
         <text x=\"{LEFT}\" y=\"{}\">60 min ago</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">30 min ago</text>\
         <text x=\"{RIGHT}\" y=\"{}\" text-anchor=\"end\">now</text>",
        LEFT - 6.0,
        TOP + 4.0,
        LEFT - 6.0,
        BOTTOM + 4.0,
        RIGHT + 6.0,
        TOP + 4.0,
        RIGHT + 6.0,
        BOTTOM + 4.0,
        BOTTOM + 20.0,
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 20.0,
        BOTTOM + 20.0,
    )?;
    for (i, m) in hour.iter().enumerate() {
        let ago = MINUTES - 1 - i;
        let x = LEFT + i as f64 * slot + slot * 0.125;
        let when = if ago == 0 {
            "this minute".to_string()
        } else {
            format!("{ago} min ago")
        };
        write!(
            out,
            "<g class=\"minute\" data-ago=\"{ago}\" data-requests=\"{}\" data-hit=\"{}\" \
             data-miss=\"{}\" data-pass=\"{}\" data-other=\"{}\"><title>{when}: {} requests \
             ({} HIT, {} MISS, {} PASS, {} other), hit ratio {}; {} from the cache, {} from upstream</title>",
            m.requests(),
            m.hit,
            m.miss,
            m.pass,
            m.other,
            m.requests(),
            m.hit,
            m.miss,
            m.pass,
            m.other,
            m.hit_ratio().map_or("–".into(), percent),
            bytes(m.bytes_from_cache),
            bytes(m.bytes_from_upstream),
        )?;
        let mut below = 0;
        for (class, n) in [
            ("hit", m.hit),
            ("miss", m.miss),
            ("pass", m.pass),
            ("other", m.other),
        ] {
            if n == 0 {
                continue;
            }
            let (y0, y1) = (y_of(below as f64), y_of((below + n) as f64));
            write!(
                out,
                "<rect class=\"bar {class}\" x=\"{x:.2}\" y=\"{y1:.2}\" width=\"{:.2}\" height=\"{:.2}\"/>",
                slot * 0.75,
                y0 - y1
            )?;
            below += n;
        }
        out.push_str("</g>");
    }
    // The ratio line, broken where a minute had no downloads.
    let points: Vec<Option<(f64, f64, f64)>> = hour
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.hit_ratio()
                .map(|r| (LEFT + (i as f64 + 0.5) * slot, ratio_y(r), r))
        })
        .collect();
    for run in points.split(Option::is_none).filter(|run| run.len() > 1) {
        out.push_str("<polyline class=\"ratio\" points=\"");
        for (j, (x, y, _)) in run.iter().flatten().enumerate() {
            write!(out, "{}{x:.2},{y:.2}", if j == 0 { "" } else { " " })?;
        }
        out.push_str("\"/>");
    }
    for (x, y, r) in points.iter().flatten() {
        write!(
            out,
            "<circle class=\"ratio-point\" cx=\"{x:.2}\" cy=\"{y:.2}\" r=\"2.5\" data-ratio=\"{r:.6}\"/>"
        )?;
    }
    out.push_str("</svg>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_sixty_minutes_and_a_point_per_minute_with_downloads() {
        let mut hour = [Minute::default(); MINUTES];
        hour[10] = Minute {
            hit: 3,
            miss: 1,
            ..Minute::default()
        };
        hour[11] = Minute {
            other: 2,
            ..Minute::default()
        };
        hour[59] = Minute {
            pass: 1,
            hit: 1,
            ..Minute::default()
        };
        let mut svg = String::new();
        chart(&mut svg, &hour).unwrap();
        assert_eq!(svg.matches("<g class=\"minute\"").count(), MINUTES);
        assert_eq!(svg.matches("<circle class=\"ratio-point\"").count(), 2);
        assert!(svg.contains("data-ratio=\"0.750000\""));
        assert!(svg.contains("data-ratio=\"0.500000\""));
        assert_eq!(svg.matches("<rect").count(), 2 + 1 + 2);
        assert_eq!(
            svg.matches("<polyline").count(),
            0,
            "no two consecutive minutes with downloads"
        );
        assert!(!svg.contains("<script") && !svg.contains("href"));
        assert_eq!(round_up(0), 1);
        assert_eq!(round_up(3), 5);
        assert_eq!(round_up(11), 20);
        assert_eq!(round_up(500), 500);
        let mut spark = String::new();
        sparkline(&mut spark, &hour).unwrap();
        let points = spark.split("points=\"").nth(1).unwrap();
        let points = &points[..points.find('"').unwrap()];
        assert_eq!(points.split(' ').count(), MINUTES);
    }
}
