//! The record the status page shows: the latest refused downloads (each is
//! also logged where it happens, and counted in `/metrics`), and the
//! releases documents currently hold back, per document. Bounded.

use super::{Hold, Rule};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Refusals kept for the status page.
const LATEST: usize = 50;
/// Held-back rows kept, over every document.
const HELD_ROWS: usize = 2_000;

/// One refused download.
#[derive(Clone, Debug)]
pub struct Refused {
    /// When (Unix seconds, policy clock).
    pub at: i64,
    /// The client's address.
    pub client: String,
    /// The mount.
    pub mount: String,
    /// The project.
    pub project: String,
    /// The version.
    pub version: String,
    /// Why.
    pub hold: Hold,
}

/// One release a document holds back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRow {
    /// The mount.
    pub mount: String,
    /// The project.
    pub project: String,
    /// The version.
    pub version: String,
    /// Why, and until when.
    pub hold: Hold,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Record {
    refused: Mutex<VecDeque<Refused>>,
    /// By document key: what its current view holds back.
    held: Mutex<BTreeMap<String, Vec<HeldRow>>>,
}

impl Record {
    /// Notes a refused download.
    pub fn refused(&self, refused: Refused) {
        let mut list = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() == LATEST {
            list.pop_front();
        }
        list.push_back(refused);
    }

    /// The latest refusals, newest first.
    pub fn latest_refusals(&self) -> Vec<Refused> {
        let list = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().rev().cloned().collect()
    }

    /// What the view of document `doc` holds back now (replacing what it held).
    pub fn holding(&self, doc: &str, rows: Vec<HeldRow>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if rows.is_empty() {
            held.remove(doc);
            return;
        }
        let total: usize = held.values().map(Vec::len).sum();
        if total + rows.len() > HELD_ROWS {
            // Rare (thousands of held releases): start over rather than grow.
            held.clear();
        }
        held.insert(doc.to_string(), rows);
    }

    /// Every release held back, once each, ordered by mount, project and version;
    /// those whose hold has run out by `now` left out.
    pub fn held_back(&self, now: i64) -> Vec<HeldRow> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: BTreeMap<(String, String, String), HeldRow> = BTreeMap::new();
        for row in held.values().flatten() {
            if row.hold.until.is_some_and(|u| u <= now) {
                continue;
            }
            rows.entry((row.mount.clone(), row.project.clone(), row.version.clone()))
                .or_insert_with(|| row.clone());
        }
        rows.into_values().collect()
    }

    /// Held-back releases by (mount, rule), for the gauges.
    pub fn held_counts(&self, now: i64) -> BTreeMap<(String, Rule), u64> {
        let mut counts = BTreeMap::new();
        for row in self.held_back(now) {
            *counts.entry((row.mount, row.hold.rule)).or_default() += 1;
        }
        counts
    }
}
