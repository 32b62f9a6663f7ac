//! The resize stage: decoded images to the model's normalized input (CPU SIMD), or handed on
//! as they are for the GPU kernel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::{Receiver, Sender};

use super::Shared;
use super::messages::{Decoded, FailCause, Outcome, Prepared};
use crate::embed::IMAGE_FLOATS;

use super::stages::crashed;

/// CPU: SIMD resize + crop + normalize into the model's input. GPU: passes the image on; the
/// WGSL kernel resizes on the device inside the embed stage's batch.
pub(super) struct Resizer {
    pub(super) input: Receiver<Decoded>,
    pub(super) out: Sender<Prepared>,
    /// A panic while resizing fails that job alone (a pixdex bug, reported as such).
    pub(super) fail: Sender<Outcome>,
    pub(super) shared: Arc<Shared>,
    pub(super) gpu: bool,
}

impl Resizer {
    pub(super) fn run(self) {
        while let Ok(Decoded { job, image, original }) = self.input.recv() {
            if self.shared.dropped(&job) {
                continue;
            }
            let msg = if self.gpu {
                Prepared::Gpu { job, image, original }
            } else {
                let t = Instant::now();
                let resized = catch_unwind(AssertUnwindSafe(|| {
                    crate::failpoint::check("resize", &job.path);
                    let mut nchw = vec![0f32; IMAGE_FLOATS];
                    crate::embed::preprocess::cpu_resize_normalize(&image, &mut nchw);
                    nchw
                }));
                self.shared.resize.busy(t, 1);
                match resized {
                    Ok(nchw) => Prepared::Cpu { job, nchw, original },
                    Err(p) => {
                        self.shared.resize.failures.fetch_add(1, Ordering::Relaxed);
                        let reason = crashed("resize", &job, p.as_ref());
                        if self.fail.send(Outcome::Failed { job, reason, cause: FailCause::Crash }).is_err() {
                            return;
                        }
                        continue;
                    }
                }
            };
            if self.out.send(msg).is_err() {
                return;
            }
        }
    }
}
