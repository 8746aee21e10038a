//! Per-source upstream health: the attempts, errors and answer latency the
//! upstream client reports (as its `upstream::Observer`), and the notes the
//! status page shows beside the counters (latest error, mean latency).

use super::{Metrics, SourceHealth};
use crate::upstream;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Every `kind` an upstream error can have (see `upstream::Error::kind`).
const ERROR_KINDS: [&str; 6] = [
    "connect",
    "timeout",
    "not_found",
    "status",
    "body",
    "redirect",
];

/// The latest error and latency per source: what the exposition's counters
/// cannot say.
#[derive(Default)]
pub(super) struct SourceNotes {
    /// The histogram's own sum and count are not readable outside tests.
    answers: u64,
    latency_sum: Duration,
    last_error: Option<(String, SystemTime)>,
    last_latency: Option<Duration>,
    last_answer_at: Option<SystemTime>,
}

/// A fresh `upstream_head` histogram, one per source.
pub(super) fn head_histogram() -> Histogram {
    // 5 ms to about 41 s: loopback mirrors to a stalled one at the idle timeout.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The upstream reports each attempt here (wired in `app`).
impl upstream::Observer for Metrics {
    fn attempted(&self, source: &str) {
        self.upstream_attempts
            .get_or_create(&[("source", source.to_string())])
            .inc();
    }

    fn answered(&self, source: &str, elapsed: Duration) {
        self.upstream_answered(source, elapsed);
    }

    fn failed(&self, source: &str, error: &upstream::Error) {
        self.upstream_failed(source, error);
    }
}

impl Metrics {
    /// An attempt on `source` (an origin, `scheme://host:port`) got its final
    /// response head after `elapsed`, whatever its status.
    pub fn upstream_answered(&self, source: &str, elapsed: Duration) {
        self.upstream_head
            .get_or_create(&[("source", source.to_string())])
            .observe(elapsed.as_secs_f64());
        let mut notes = self.notes_lock();
        let note = notes.entry(source.to_string()).or_default();
        note.answers += 1;
        note.latency_sum += elapsed;
        note.last_latency = Some(elapsed);
        note.last_answer_at = Some(SystemTime::now());
    }

    /// An attempt on `source` failed with `error`.
    pub fn upstream_failed(&self, source: &str, error: &upstream::Error) {
        self.upstream_errors
            .get_or_create(&[
                ("source", source.to_string()),
                ("kind", error.kind().into()),
            ])
            .inc();
        let mut notes = self.notes_lock();
        let note = notes.entry(source.to_string()).or_default();
        // A 404 is an answer about one file, not about the source's health.
        if !error.is_not_found() {
            note.last_error = Some((error.to_string(), SystemTime::now()));
        }
    }

    pub(super) fn health(&self, origin: &str, note: &SourceNotes) -> SourceHealth {
        let errors = |kind: &str| {
            self.upstream_errors
                .get(&[("source", origin.to_string()), ("kind", kind.to_string())])
                .map_or(0, |c| c.get())
        };
        let mean_latency = (note.answers > 0)
            .then(|| note.latency_sum / u32::try_from(note.answers).unwrap_or(u32::MAX));
        let not_found = errors("not_found");
        SourceHealth {
            origin: origin.to_string(),
            attempts: self
                .upstream_attempts
                .get(&[("source", origin.to_string())])
                .map_or(0, |c| c.get()),
            answers: note.answers,
            errors: ERROR_KINDS.iter().map(|k| errors(k)).sum::<u64>() - not_found,
            not_found,
            mean_latency,
            last_latency: note.last_latency,
            last_error: note.last_error.clone(),
            last_answer_at: note.last_answer_at,
        }
    }

    pub(super) fn notes_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SourceNotes>> {
        // The map is only ever updated by whole-field stores: a panic
        // elsewhere cannot leave it half-written.
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }
}
