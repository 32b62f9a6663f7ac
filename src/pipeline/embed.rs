//! The embed stage: the model on batches of `batch_size`; a crashed batch is redone image by
//! image.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::Shared;
use super::messages::{FailCause, Outcome, Prepared};
use crate::embed::{Embedder, IMAGE_FLOATS};

use super::stages::crashed;

/// Runs the model on batches of `batch_size` (the last one padded by the embedder).
pub(super) struct EmbedStage {
    pub(super) input: Receiver<Prepared>,
    pub(super) out: Sender<Outcome>,
    pub(super) shared: Arc<Shared>,
    pub(super) embedder: Embedder,
}

impl EmbedStage {
    pub(super) fn run(self) {
        let bs = self.embedder.batch_size();
        while let Ok(first) = self.input.recv() {
            let mut batch = vec![first];
            // Fill the batch, but do not hold a partial one long when the queue is dry.
            let deadline = Instant::now() + Duration::from_millis(25);
            while batch.len() < bs {
                match self.input.recv_deadline(deadline) {
                    Ok(p) => batch.push(p),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Batch boundary: drop what a cancel made moot.
            batch.retain(|p| !self.shared.dropped(p.job()));
            if batch.is_empty() {
                continue;
            }
            let t = Instant::now();
            let result = match catch_unwind(AssertUnwindSafe(|| self.embed(&batch))) {
                Ok(r) => r,
                Err(p) => {
                    // The model crashed on this batch: find the image(s) responsible by
                    // embedding each alone; only those fail, the others go on.
                    tracing::error!(panic = %crate::fault::panic_message(p.as_ref()), images = batch.len(), "the embed stage panicked; retrying the batch image by image");
                    let outcomes = self.embed_one_by_one(batch);
                    self.shared.embed.busy(t, outcomes.len() as u64);
                    for o in outcomes {
                        if self.out.send(o).is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            self.shared.embed.busy(t, batch.len() as u64);
            let outcomes: Vec<Outcome> = match result {
                Ok(embs) => batch
                    .into_iter()
                    .zip(embs)
                    .map(|(p, embedding)| match p {
                        Prepared::Cpu { job, original, .. } | Prepared::Gpu { job, original, .. } => Outcome::Embedded { job, embedding, original },
                    })
                    .collect(),
                Err(e) => {
                    tracing::error!(error = %e, "embedding a batch failed");
                    self.shared.embed.failures.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch
                        .into_iter()
                        .map(|p| {
                            let job = match p {
                                Prepared::Cpu { job, .. } | Prepared::Gpu { job, .. } => job,
                            };
                            Outcome::Failed {
                                job,
                                reason: format!("the model failed on this batch (runtime error, not the file's): {e}"),
                                cause: FailCause::Model,
                            }
                        })
                        .collect()
                }
            };
            for o in outcomes {
                if self.out.send(o).is_err() {
                    return;
                }
            }
        }
    }

    /// After a panic: each image alone, so a crash fails only its own job.
    fn embed_one_by_one(&self, batch: Vec<Prepared>) -> Vec<Outcome> {
        batch
            .into_iter()
            .map(|p| {
                let r = catch_unwind(AssertUnwindSafe(|| self.embed(std::slice::from_ref(&p))));
                let (job, original) = match &p {
                    Prepared::Cpu { job, original, .. } | Prepared::Gpu { job, original, .. } => (job.clone(), *original),
                };
                match r {
                    Ok(Ok(mut e)) if e.len() == 1 => Outcome::Embedded { job, embedding: e.remove(0), original },
                    Ok(Ok(_)) => Outcome::Failed {
                        job,
                        reason: "the model returned no embedding for this image (a pixdex bug; please report it)".into(),
                        cause: FailCause::Crash,
                    },
                    Ok(Err(e)) => {
                        Outcome::Failed { job, reason: format!("the model failed on this image (runtime error, not the file's): {e}"), cause: FailCause::Model }
                    }
                    Err(panic) => {
                        self.shared.embed.failures.fetch_add(1, Ordering::Relaxed);
                        let reason = crashed("embed", &job, panic.as_ref());
                        Outcome::Failed { job, reason, cause: FailCause::Crash }
                    }
                }
            })
            .collect()
    }

    fn embed(&self, batch: &[Prepared]) -> Result<Vec<crate::embed::Embedding>, crate::embed::EmbedError> {
        for p in batch {
            crate::failpoint::check("embed", &p.job().path);
        }
        if batch.iter().all(|p| matches!(p, Prepared::Cpu { .. })) {
            let mut data = Vec::with_capacity(batch.len() * IMAGE_FLOATS);
            for p in batch {
                if let Prepared::Cpu { nchw, .. } = p {
                    data.extend_from_slice(nchw);
                }
            }
            self.embedder.embed_normalized(&data, batch.len())
        } else {
            let images: Vec<&crate::decode::RgbImage> = batch
                .iter()
                .filter_map(|p| match p {
                    Prepared::Gpu { image, .. } => Some(image),
                    Prepared::Cpu { .. } => None,
                })
                .collect();
            self.embedder.embed_images(&images)
        }
    }
}
