//! Errors by cause, not by HTTP status: every module's error says which of these it is, the API
//! maps a cause to a status in one place (`api::error`), and the pipeline's retry decisions read
//! the same answer (`is_transient`).

/// Whose fault, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The request is wrong; the message says how to fix it (400/413/415/422).
    UserInput,
    /// The request names something outside what pixdex may touch (403).
    Forbidden,
    /// What the request names does not exist (404).
    NotFound,
    /// The current state does not allow it (409).
    Conflict,
    /// A dependency is unavailable for now (vector store, catalog, a busy worker): wait and
    /// retry; nothing is lost (503 + Retry-After).
    Transient,
    /// A bug or an unexpected failure: pixdex's fault (500).
    Bug,
}

impl Cause {
    pub fn is_transient(self) -> bool {
        self == Cause::Transient
    }
}

/// The message of a caught panic (`catch_unwind`'s payload).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

/// An error that knows its cause.
pub trait Classify {
    fn cause(&self) -> Cause;

    fn is_transient(&self) -> bool {
        self.cause().is_transient()
    }
}

impl Classify for crate::catalog::CatalogError {
    fn cause(&self) -> Cause {
        use crate::catalog::CatalogError as E;
        match self {
            E::Conflict(_) => Cause::Conflict,
            E::NotFound(_) => Cause::NotFound,
            e if e.is_transient() => Cause::Transient,
            _ => Cause::Bug,
        }
    }
}

impl Classify for crate::vectors::VectorError {
    fn cause(&self) -> Cause {
        use crate::vectors::VectorError as E;
        match self {
            e if e.is_retryable() => Cause::Transient,
            E::Invalid(_) => Cause::UserInput,
            _ => Cause::Bug,
        }
    }
}

impl Classify for crate::library::LibraryError {
    fn cause(&self) -> Cause {
        use crate::library::LibraryError as E;
        match self {
            E::OutsideRoots { .. } => Cause::Forbidden,
            E::NotFound { .. } => Cause::NotFound,
            E::NotADirectory { .. } | E::NotAFile { .. } | E::Io { .. } => Cause::UserInput,
        }
    }
}

impl Classify for crate::decode::DecodeError {
    fn cause(&self) -> Cause {
        use crate::decode::DecodeError as E;
        match self {
            E::Vanished { .. } => Cause::NotFound,
            E::Unreadable { source, .. } if matches!(source.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => Cause::Transient,
            _ => Cause::UserInput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogError;
    use crate::vectors::{Backend, VectorError};

    #[test]
    fn causes() {
        assert_eq!(CatalogError::Db(sqlx::Error::PoolTimedOut).cause(), Cause::Transient);
        assert_eq!(CatalogError::Db(sqlx::Error::RowNotFound).cause(), Cause::Bug);
        assert_eq!(CatalogError::NotFound("x".into()).cause(), Cause::NotFound);
        assert_eq!(VectorError::Unavailable { backend: Backend::Qdrant, reason: "down".into() }.cause(), Cause::Transient);
        let full = VectorError::Io { path: "/v".into(), source: std::io::Error::from(std::io::ErrorKind::StorageFull) };
        assert!(full.is_transient());
        assert_eq!(VectorError::Invalid("dim".into()).cause(), Cause::UserInput);
        assert_eq!(crate::watcher::WatcherError::Busy.cause(), Cause::Transient);
    }
}
