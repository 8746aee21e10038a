//! Document revalidations as single flights: one request asks the upstream
//! about a stale index document, and every request for the same document
//! that arrives meanwhile gets that revalidation's outcome — the current copy
//! (new, or confirmed by a 304), or its failure. A request that arrives
//! after it ended starts a new one. The asking itself is the proxy's; the
//! store only pairs each document key with the revalidation in progress.

use super::flight::{Claim, Lead};
use super::{Doc, Failure, Store};
use std::sync::Arc;
use tokio::sync::watch;

/// How a revalidation ended, as its followers see it.
#[derive(Clone, Debug)]
pub enum Revalidated {
    /// The current copy: just fetched, or the stored one confirmed. The
    /// leader stores it before publishing it.
    Current(Arc<Doc>),
    /// The upstream could not say: the leader's own error, as it is.
    Failed(Failure),
    /// The upstream's answer was not a document (a 403, say), passed on to
    /// the leader's client alone: followers ask for themselves.
    Uncacheable,
    /// The leader gave up before it knew (its client went away): followers
    /// look again.
    Vacated,
}

/// One revalidation in progress: its outcome, once known.
pub(crate) struct DocFlight {
    outcome: watch::Sender<Option<Revalidated>>,
}

/// What [`Store::revalidation`] found.
pub enum Revalidation {
    /// Nobody is revalidating the document: the caller asks the upstream.
    Lead(RevalidationPermit),
    /// A revalidation is in progress: wait for its outcome.
    Follow(RevalidationWatch),
}

/// The right to revalidate one document. Its followers get what
/// [`RevalidationPermit::finish`] publishes; dropped unfinished, they are told
/// `Vacated`.
pub struct RevalidationPermit {
    lead: Lead<String, DocFlight>,
    finished: bool,
}

/// A follower's handle on a revalidation in progress.
pub struct RevalidationWatch {
    rx: watch::Receiver<Option<Revalidated>>,
}

impl Store {
    /// Follows the revalidation of `doc_key` in progress, or, when there is
    /// none, gives the caller the right to do it.
    pub fn revalidation(&self, doc_key: &str) -> Revalidation {
        let flight = || DocFlight {
            outcome: watch::channel(None).0,
        };
        match self
            .inner
            .docs_in_flight
            .claim(&doc_key.to_string(), flight)
        {
            Claim::Lead(lead) => Revalidation::Lead(RevalidationPermit {
                lead,
                finished: false,
            }),
            Claim::Follow(flight) => Revalidation::Follow(RevalidationWatch {
                rx: flight.outcome.subscribe(),
            }),
        }
    }
}

impl RevalidationPermit {
    /// Ends the revalidation with `outcome`: it leaves the registry (a
    /// request that comes after starts a new one), then every follower gets
    /// `outcome`.
    pub fn finish(mut self, outcome: Revalidated) {
        self.end(outcome);
    }

    fn end(&mut self, outcome: Revalidated) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.lead.leave();
        self.lead.flight().outcome.send_replace(Some(outcome));
    }
}

impl Drop for RevalidationPermit {
    fn drop(&mut self) {
        self.end(Revalidated::Vacated);
    }
}

impl RevalidationWatch {
    /// Waits for the revalidation's outcome.
    pub async fn outcome(mut self) -> Revalidated {
        match self.rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Revalidated::Vacated),
            Err(_) => Revalidated::Vacated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DocMeta;

    fn doc(body: &'static str) -> Arc<Doc> {
        Arc::new(Doc {
            meta: DocMeta {
                key: "d".into(),
                ..DocMeta::default()
            },
            body: bytes::Bytes::from_static(body.as_bytes()),
        })
    }

    #[tokio::test]
    async fn followers_get_the_outcome_and_latecomers_start_anew() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let Revalidation::Lead(permit) = store.revalidation("d") else {
            panic!("the first request leads");
        };
        let followers: Vec<_> = (0..3)
            .map(|_| match store.revalidation("d") {
                Revalidation::Follow(watch) => tokio::spawn(watch.outcome()),
                Revalidation::Lead(_) => panic!("one leader at a time"),
            })
            .collect();
        permit.finish(Revalidated::Current(doc("new")));
        for follower in followers {
            match follower.await.unwrap() {
                Revalidated::Current(got) => assert_eq!(got.body, "new"),
                other => panic!("{other:?}"),
            }
        }
        let Revalidation::Lead(again) = store.revalidation("d") else {
            panic!("a request after the end starts a new revalidation");
        };
        let Revalidation::Follow(watch) = store.revalidation("d") else {
            panic!("which the next one follows");
        };
        drop(again);
        assert!(matches!(watch.outcome().await, Revalidated::Vacated));
        assert!(matches!(store.revalidation("d"), Revalidation::Lead(_)));
    }
}
