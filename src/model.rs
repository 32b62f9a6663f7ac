//! Domain types shared by the catalog, the session service and the API: persisted status enums
//! and the session state machine. No I/O here.

use serde::{Deserialize, Serialize};

/// A session's persisted status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Pending,
    Discovering,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

/// What a client can ask of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Start,
    Pause,
    Cancel,
    Restart,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Cancel => "cancel",
            Action::Restart => "restart",
            Action::Delete => "delete",
        }
    }
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 7] = [
        SessionStatus::Pending,
        SessionStatus::Discovering,
        SessionStatus::Running,
        SessionStatus::Paused,
        SessionStatus::Completed,
        SessionStatus::Failed,
        SessionStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Discovering => "discovering",
            SessionStatus::Running => "running",
            SessionStatus::Paused => "paused",
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<SessionStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The state machine, as the actions each status allows:
    /// pending → (start) discovering → running → completed | failed | cancelled;
    /// running ⇄ paused (pause / start); paused or failed → running (start, unfinished jobs only);
    /// completed, cancelled (and failed, paused) → running only through restart.
    pub fn allowed_actions(self) -> &'static [Action] {
        use Action::*;
        match self {
            SessionStatus::Pending => &[Start, Cancel, Delete],
            SessionStatus::Discovering => &[Cancel],
            SessionStatus::Running => &[Pause, Cancel],
            SessionStatus::Paused => &[Start, Cancel, Restart, Delete],
            SessionStatus::Completed => &[Restart, Delete],
            SessionStatus::Failed => &[Start, Restart, Cancel, Delete],
            SessionStatus::Cancelled => &[Restart, Delete],
        }
    }

    pub fn allows(self, a: Action) -> bool {
        self.allowed_actions().contains(&a)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, SessionStatus::Completed | SessionStatus::Failed | SessionStatus::Cancelled)
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's persisted status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Skipped,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [JobStatus::Pending, JobStatus::Running, JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled, JobStatus::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Current time in Unix milliseconds (the catalog's time unit).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for s in SessionStatus::ALL {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SessionStatus::parse("RUNNING"), None);
    }

    #[test]
    fn machine_edges() {
        use Action::*;
        use SessionStatus::*;
        assert!(Pending.allows(Start));
        assert!(!Running.allows(Start));
        assert!(Running.allows(Pause) && Paused.allows(Start));
        assert!(!Completed.allows(Start) && Completed.allows(Restart));
        assert!(!Cancelled.allows(Start) && Cancelled.allows(Restart));
        assert!(Failed.allows(Start));
        assert!(!Running.allows(Delete));
        assert!(!Pending.allows(Pause) && !Pending.allows(Restart));
    }
}
