//! package-cache: a streaming caching proxy for package downloads.
//!
//! A request flows one way through the crate:
//! `server` (accept, timeouts, connection limit) → `proxy::Proxy::handle`
//! → `proxy::target` (where the request points) → `proxy::route` (cache, pass,
//! a mount's index document, or refuse) → `store::Store::lookup` (hit, join a
//! fill in progress, or a permit to fill) → `upstream::Upstream::fetch`
//! (ordered failover over the sources) → a tracked fill task writes
//! `store::Fill` and commits it → `proxy::respond` builds the response from a
//! `store::BodyReader`, and picks the status of every error (`proxy::Error`).
//!
//! Index documents take a side path: `proxy::document` serves the stored copy
//! (`store::Doc`) within the TTL, else revalidates it once for all the clients
//! that ask meanwhile (`store::Revalidation`, a single flight like the fills),
//! keeping what `mount::rewrite_document` makes of it: PyPI pages, npm
//! packuments and Cargo's `config.json` rewritten so that every file goes
//! through the cache, and the digests indexes list (`digest::Digest`: PyPI and
//! RubyGems sha256, npm integrity, Cargo `cksum`, Go `h1:`; found by
//! `proxy::indexed`) enforced on the fills.
//!
//! Beside the proxy port, `admin` serves `/metrics`, `/healthz` and a status
//! page from the counters in `metrics`, which the proxy feeds with values
//! (`cache_status::CacheStatus`) and the upstream through its observer.
//!
//! The fill task, never a client's response body, drives the download, so one
//! upstream fetch serves any number of readers at their own pace and a client
//! that goes away never cancels or corrupts the entry.
//!
//! The maintenance subcommands (`maintain`: stats, verify, gc, purge) work on
//! the cache directory through the store's maintenance API (`store::maintenance`,
//! with `store::Layout` for the paths) alone, with blocking calls.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod api;
pub mod app;
pub mod body;
pub mod builds;
pub mod cache_status;
pub mod cli;
pub mod client;
pub mod config;
pub mod digest;
pub mod evict;
pub mod hangup;
pub mod maintain;
pub mod metrics;
pub mod mount;
pub mod privileges;
pub mod proxy;
pub mod scrub;
pub mod server;
pub mod store;
pub mod supply;
pub mod telemetry;
pub mod tls;
pub mod upstream;
