//! Session transitions that touch more than the status, each one catalog transaction: a crash
//! (or a lost connection) between its steps can leave nothing half-done — a start either queued
//! its jobs and runs, or did not happen.

use super::{Catalog, Result, Stamp, Stamps, add_discovered_tx, cancel_unfinished_tx, finish_if_done, set_image_counts_tx, transition_tx};
use crate::library::FileEntry;
use crate::model::{SessionStatus, now_ms};

/// How a start's discovery ended.
pub enum StartOutcome<'a> {
    /// Not admissible: back to pending with the reason (and the fix) for the user.
    Refused { reason: &'a str },
    /// Discovery failed: back to pending with the error.
    Failed { error: &'a str },
}

impl Catalog {
    /// End a start that will not run (the session is discovering): subdirectory counts and the
    /// move back to pending with the reason — one transaction. (A start that runs ends in
    /// `finish_discovery`.) Returns `None` when the session left discovering meanwhile
    /// (cancelled, recovered), in which case nothing is written.
    pub async fn finish_start(&self, id: i64, counts: &[(i64, i64)], outcome: StartOutcome<'_>) -> Result<Option<u64>> {
        let mut tx = self.begin_write().await?;
        let created = match outcome {
            StartOutcome::Refused { reason } | StartOutcome::Failed { error: reason } => {
                let failed = matches!(outcome, StartOutcome::Failed { .. });
                if !transition_tx(&mut tx, id, SessionStatus::Discovering, SessionStatus::Pending, Stamps::default()).await? {
                    return Ok(None);
                }
                set_image_counts_tx(&mut tx, counts).await?;
                let q = if failed {
                    "UPDATE training_sessions SET last_error = $2, owner = NULL, discovery = NULL WHERE id = $1"
                } else {
                    "UPDATE training_sessions SET pending_reason = $2, owner = NULL, discovery = NULL WHERE id = $1"
                };
                sqlx::query(q).bind(id).bind(reason).execute(&mut *tx).await?;
                0
            }
        };
        tx.commit().await?;
        Ok(Some(created))
    }

    /// Paused or failed → running, completing it at once when nothing is left — one
    /// transaction. `None`: the session was no longer in `from`. `Some(true)`: it completed.
    pub async fn resume_session(&self, id: i64, from: SessionStatus) -> Result<Option<bool>> {
        let mut tx = self.begin_write().await?;
        if !transition_tx(&mut tx, id, from, SessionStatus::Running, Stamps { paused: Stamp::Clear, ..Default::default() }).await? {
            return Ok(None);
        }
        let done = finish_if_done(&mut tx, id, now_ms()).await?;
        tx.commit().await?;
        Ok(Some(done))
    }

    /// → cancelled, with every unfinished job — one transaction. `None`: the session was no
    /// longer in `from`; otherwise the jobs cancelled.
    pub async fn cancel_session(&self, id: i64, from: SessionStatus) -> Result<Option<u64>> {
        let mut tx = self.begin_write().await?;
        if !transition_tx(&mut tx, id, from, SessionStatus::Cancelled, Stamps { completed: Stamp::Now, ..Default::default() }).await? {
            return Ok(None);
        }
        let n = cancel_unfinished_tx(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Some(n))
    }

    /// Jobs back to pending (all, or the failed ones), the session running again, completed at
    /// once if nothing is left — one transaction. `found` (a full restart's rediscovery) adds
    /// jobs for images that appeared since. `None`: the session was no longer in `from`.
    pub async fn restart_session(&self, id: i64, from: SessionStatus, failed_only: bool, found: &[(i64, Vec<FileEntry>)]) -> Result<Option<u64>> {
        let mut tx = self.begin_write().await?;
        if !transition_tx(&mut tx, id, from, SessionStatus::Running, Stamps { started: true, paused: Stamp::Clear, completed: Stamp::Clear }).await? {
            return Ok(None);
        }
        add_discovered_tx(&mut tx, id, found).await?;
        let n = super::reset_jobs_tx(&mut tx, id, failed_only).await?;
        finish_if_done(&mut tx, id, now_ms()).await?;
        tx.commit().await?;
        Ok(Some(n))
    }
}
