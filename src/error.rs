//! Errors by cause, not by HTTP status: every module's error says which of these it is, the API
//! maps a cause to a status in one place (`api::error`), and the pipeline's retry decisions read
//! the same answer (`is_transient`). A leaf: it imports nothing of pixdex; each module implements
//! `Classify` for its own error beside it.

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

/// An error that knows its cause.
pub trait Classify {
    fn cause(&self) -> Cause;

    fn is_transient(&self) -> bool {
        self.cause().is_transient()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_is_transient() {
        for c in [Cause::UserInput, Cause::Forbidden, Cause::NotFound, Cause::Conflict, Cause::Bug] {
            assert!(!c.is_transient(), "{c:?}");
        }
        assert!(Cause::Transient.is_transient());
    }
}
