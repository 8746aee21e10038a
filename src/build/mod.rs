//! The build queue: clients ask for a package built for a runtime; jobs wait
//! in a bounded queue, identical requests join one job, workers fetch the
//! source through the proxy, build it in a sandbox and commit a deterministic
//! archive. Owns the job records and the artifacts; never imports `proxy`.
//!
//! Flow: `api` → `BuildQueue::submit` → `worker` (fetch → `sandbox` build →
//! `archive`) → `artifacts::commit`. `spec` validates what a client asked for,
//! `job` holds the states, `journal` keeps records across restarts, `inbox`
//! takes in local sources from untrusted clients, `kind` knows each package type.

pub mod archive;
pub mod artifacts;
pub mod fetch;
pub mod inbox;
pub mod job;
pub mod journal;
pub mod kind;
pub mod privhelper;
pub mod queue;
pub mod runtime;
pub mod sandbox;
pub mod spec;
pub mod step;
