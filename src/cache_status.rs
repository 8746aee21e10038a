//! `CacheStatus`: what the cache did for one response — served it from a
//! committed entry, from a download in progress, or passed it through
//! uncached. The proxy decides it and carries it with the response; the
//! `X-Cache` header, the access log and the metrics are written from it. It
//! sits below all three so that none of them imports another for it.

/// What the cache did for a response. Only answers with a body from the
/// cache or the upstream have one; errors, redirects and refusals have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Served from a committed entry.
    Hit,
    /// Served from a fill in progress (started by this or another request).
    Miss,
    /// Fetched and streamed without storing.
    Pass,
}

impl CacheStatus {
    /// The `X-Cache` value, also the access log's and the metrics' label.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Pass => "PASS",
        }
    }
}
