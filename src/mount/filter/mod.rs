//! Policy filters: what an index document becomes when some of the releases
//! it lists are not to be shown. Each ecosystem's filter reads its format,
//! asks the caller's `keep` about every release (project, version and the
//! publication date the document gives) and writes the document without the
//! releases it refused, still valid for its clients. Pure: the judgement is
//! the caller's (`supply`), and nothing here logs or fetches. A filter that
//! removes nothing says so (`None`), so the stored bytes are served as they are.

pub mod cargo;
pub mod gem_specs;
pub mod go;
pub mod marshal;
pub mod npm;
pub mod pypi;
pub mod rubygems;

/// One release a document lists, as a filter asks about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed<'a> {
    /// The project, as the document spells it.
    pub project: &'a str,
    /// The version.
    pub version: &'a str,
    /// When the document says it was published (Unix seconds).
    pub published: Option<i64>,
}

/// The caller's decision for one release: `true` shows it.
pub type Keep<'k> = dyn FnMut(&Listed<'_>) -> bool + 'k;

/// Why a document could not be filtered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON (a PyPI JSON page, an npm packument, a Go `.info`).
    #[error("document is not valid json")]
    Json(#[source] serde_json::Error),
    /// Not UTF-8 text (a PyPI HTML page, a RubyGems index file).
    #[error("document is not valid utf-8")]
    NotUtf8,
    /// A legacy RubyGems index that is not gzip.
    #[error("document is not valid gzip")]
    Gzip(#[source] std::io::Error),
    /// A legacy RubyGems index that unpacks past the bound.
    #[error("document unpacks to more than 1 GiB")]
    TooLarge,
    /// A legacy RubyGems index that is not the Marshal this cache reads.
    #[error("document is not a legacy gem index")]
    Marshal(#[source] marshal::Error),
    /// The HTML rewriter gave up.
    #[error("rewriting the html page failed")]
    Html(#[source] lol_html::errors::RewritingError),
}
