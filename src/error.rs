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

/// The process (EMFILE, 24) or the system (ENFILE, 23) is out of file descriptors: transient
/// by nature (descriptors come back as connections and files close), never the request's or
/// the file's fault.
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The same, read from an error's text (errors that only carry a message, a caught panic's
/// message): "Too many open files" (EMFILE), "… in system" (ENFILE), "os error 24/23".
pub fn mentions_fd_exhaustion(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("too many open files") || m.contains("os error 24") || m.contains("os error 23")
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
            E::Io { source, .. } if is_fd_exhaustion(source) => Cause::Transient,
            E::NotADirectory { .. } | E::NotAFile { .. } | E::Io { .. } => Cause::UserInput,
        }
    }
}

impl Classify for crate::decode::DecodeError {
    fn cause(&self) -> Cause {
        use crate::decode::DecodeError as E;
        match self {
            E::Vanished { .. } => Cause::NotFound,
            E::Unreadable { source, .. }
                if is_fd_exhaustion(source) || matches!(source.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) =>
            {
                Cause::Transient
            }
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

    /// Out of file descriptors (EMFILE 24, ENFILE 23) is transient wherever errors are
    /// classified: the job, the write or the request is retried, never failed.
    #[test]
    fn fd_exhaustion_is_transient() {
        use crate::decode::DecodeError;
        use crate::library::LibraryError;
        use std::io::Error as IoError;
        for code in [libc::EMFILE, libc::ENFILE] {
            let io = || IoError::from_raw_os_error(code);
            assert!(is_fd_exhaustion(&io()), "{code}");
            assert!(mentions_fd_exhaustion(&io().to_string()), "{}", io());
            assert_eq!(DecodeError::Unreadable { path: "/a.jpg".into(), source: io() }.cause(), Cause::Transient);
            assert_eq!(LibraryError::Io { path: "/a".into(), source: io() }.cause(), Cause::Transient);
            let v = VectorError::Io { path: "/v".into(), source: io() };
            assert!(v.is_retryable() && v.is_transient());
            assert_eq!(CatalogError::Db(sqlx::Error::Io(io())).cause(), Cause::Transient);
        }
        // qdrant-edge panics on EMFILE ("Too many open files"): the caught panic's message is
        // all that is left, and it still says "retry".
        for message in ["qdrant-edge call panicked: failed to open segment: Too many open files (os error 24)", "Too many open files in system (os error 23)"] {
            let e = VectorError::Backend { backend: Backend::Embedded, message: message.into() };
            assert!(e.is_retryable(), "{message}");
        }
        for message in ["Too many open files (os error 24)", "os error 23"] {
            assert!(VectorError::Invalid(message.into()).is_retryable(), "{message}");
            assert!(VectorError::Corrupt(message.into()).is_retryable(), "{message}");
        }
        // Other I/O errors keep their classification.
        let denied = IoError::from(std::io::ErrorKind::PermissionDenied);
        assert!(!is_fd_exhaustion(&denied));
        assert_eq!(DecodeError::Unreadable { path: "/a.jpg".into(), source: denied }.cause(), Cause::UserInput);
        assert!(!VectorError::Invalid("wrong vector dimension".into()).is_retryable());
    }
}
