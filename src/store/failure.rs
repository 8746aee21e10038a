//! `Failure`: why a piece of shared work (a fill, a document revalidation)
//! ended before it had a result, as the request that did the work saw it.
//! The store only carries it from the leader to the requests that follow it
//! (see `flight`); it never looks inside, so it knows nothing of what the
//! failure means to a client (a status, say).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The leader's own error, type-erased and shared. Followers downcast it back
/// to the type the leader put in ([`Failure::downcast_ref`]) and so answer
/// exactly as the leader did. Cheap to clone; equal only to its own clones.
#[derive(Clone)]
pub struct Failure(Arc<dyn StdError + Send + Sync + 'static>);

impl Failure {
    /// Wraps the leader's error.
    pub fn new(error: impl StdError + Send + Sync + 'static) -> Failure {
        Failure(Arc::new(error))
    }

    /// The error the leader put in, if it is an `E`.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl PartialEq for Failure {
    fn eq(&self, other: &Failure) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the leader's error")]
    struct Leaders;

    #[test]
    fn followers_get_the_leaders_error_back() {
        let failure = Failure::new(Leaders);
        let seen = failure.clone();
        assert!(seen.downcast_ref::<Leaders>().is_some());
        assert!(seen.downcast_ref::<std::io::Error>().is_none());
        assert_eq!(seen, failure);
        assert_ne!(Failure::new(Leaders), failure);
        assert_eq!(seen.to_string(), "the leader's error");
    }
}
