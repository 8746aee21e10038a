//! Per-run samples, their summary (median, ratio, spread, floor verdict) and the final table.

/// Which system a sample belongs to; runs alternate `Ours`, `Nginx`, `Ours`, ...
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Ours,
    Nginx,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Ours, Side::Nginx];

    pub fn label(self) -> &'static str {
        match self {
            Side::Ours => "package-cache",
            Side::Nginx => "nginx",
        }
    }
}

/// One value per run for each side, in run order, so `ours[i] / nginx[i]` pairs a run.
#[derive(Default)]
pub struct Samples {
    pub ours: Vec<f64>,
    pub nginx: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, side: Side, value: f64) {
        match side {
            Side::Ours => self.ours.push(value),
            Side::Nginx => self.nginx.push(value),
        }
    }

    fn ratios(&self) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.nginx)
            .filter(|(_, n)| **n > 0.0)
            .map(|(o, n)| o / n)
            .collect()
    }
}

/// What a row is judged against.
pub enum Floor {
    /// Median of the per-run ours/nginx ratios must be at least this.
    RatioAtLeast(f64),
    /// Median of our values must be at most this (in the row's unit).
    OursAtMost(f64),
    /// Reported only.
    None,
}

/// One line of the final table.
pub struct Row {
    scenario: &'static str,
    metric: String,
    ours: String,
    nginx: String,
    ratio: String,
    spread: String,
    floor: String,
    verdict: &'static str,
}

impl Row {
    /// A measured metric: medians, median ratio, and the spread (ratio min..max, or for an
    /// `OursAtMost` floor our own min..max).
    pub fn measured(
        scenario: &'static str,
        metric: &str,
        s: &Samples,
        decimals: usize,
        floor: Floor,
    ) -> Row {
        let ratios = s.ratios();
        let fmt = |v: f64| format!("{v:.decimals$}");
        let (ratio, ratio_spread) = if ratios.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2}", median(&ratios)),
                format!("{:.2}..{:.2}", min(&ratios), max(&ratios)),
            )
        };
        let (spread, floor_text, pass) = match floor {
            Floor::RatioAtLeast(x) => (
                ratio_spread,
                format!("ratio >= {x}"),
                Some(!ratios.is_empty() && median(&ratios) >= x),
            ),
            Floor::OursAtMost(x) => (
                format!("ours {}..{}", fmt(min(&s.ours)), fmt(max(&s.ours))),
                format!("ours <= {}", fmt(x)),
                Some(!s.ours.is_empty() && median(&s.ours) <= x),
            ),
            Floor::None => (ratio_spread, "-".to_string(), None),
        };
        Row {
            scenario,
            metric: metric.to_string(),
            ours: if s.ours.is_empty() {
                "-".to_string()
            } else {
                fmt(median(&s.ours))
            },
            nginx: if s.nginx.is_empty() {
                "-".to_string()
            } else {
                fmt(median(&s.nginx))
            },
            ratio,
            spread,
            floor: floor_text,
            verdict: verdict(pass),
        }
    }

    /// A correctness check with free-form values (x-cache, upstream request count, bodies).
    pub fn check(
        scenario: &'static str,
        metric: &str,
        ours: String,
        nginx: String,
        floor: &str,
        pass: bool,
    ) -> Row {
        Row {
            scenario,
            metric: metric.to_string(),
            ours,
            nginx,
            ratio: "-".to_string(),
            spread: "-".to_string(),
            floor: floor.to_string(),
            verdict: verdict(Some(pass)),
        }
    }

    /// A scenario that could not be measured.
    pub fn error(scenario: &'static str, err: &anyhow::Error) -> Row {
        let first_line = format!("{err:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        Row::check(
            scenario,
            "ERROR (see log above)",
            first_line,
            "-".to_string(),
            "-",
            false,
        )
    }

    pub fn failed(&self) -> bool {
        self.verdict == "FAIL"
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "-",
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len().is_multiple_of(2) {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    }
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Prints the rows as an aligned text table.
pub fn print_table(rows: &[Row]) {
    let header = [
        "scenario",
        "metric",
        "ours",
        "nginx",
        "ratio median",
        "spread",
        "floor",
        "verdict",
    ];
    let cells: Vec<[&str; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario, &r.metric, &r.ours, &r.nginx, &r.ratio, &r.spread, &r.floor, r.verdict,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |c: &[&str; 8]| {
        let parts: Vec<String> = c
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in &cells {
        line(row);
    }
}
