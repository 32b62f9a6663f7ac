//! The decode stage: files to small RGB images, a bad file failing its own job; copies of
//! bytes already indexed or in flight are recognised here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::Shared;
use super::messages::{DecodeTask, Decoded, FailCause, Outcome};
use crate::catalog::Catalog;
use crate::vectors::VectorStore;

/// Reads files: DCT-scaled JPEG, PNG, WebP, EXIF orientation, bomb and size limits. A bad file
/// fails its own job.
pub(super) struct Decoder {
    pub(super) input: Receiver<DecodeTask>,
    pub(super) out: Sender<Decoded>,
    pub(super) fail: Sender<Outcome>,
    pub(super) shared: Arc<Shared>,
    pub(super) limits: crate::decode::DecodeLimits,
    pub(super) library: Option<Arc<crate::library::Library>>,
    /// Where to look for an indexed asset with the same bytes and its vector (`None`: no
    /// duplicate check).
    pub(super) twins: Option<(Catalog, VectorStore, tokio::runtime::Handle)>,
}

impl Decoder {
    /// An asset with the same bytes that is indexed or in flight, if any; otherwise this job
    /// becomes the first copy of its content.
    fn twin(&self, job: &crate::catalog::ClaimedJob, content: &str) -> Option<(i64, String)> {
        let (catalog, store, rt) = self.twins.as_ref()?;
        {
            let mut first = self.shared.first_copy.lock().unwrap();
            match first.get(content) {
                Some(&other) if other != job.asset_id => return Some((other, String::new())),
                Some(_) => return None,
                None => {}
            }
            // Claimed before the catalog is asked: a copy decoded meanwhile finds this one.
            first.insert(content.to_string(), job.asset_id);
        }
        // Indexed with this pipeline's model: its vector is in this store (during a model
        // switch the catalog's "indexed" may mean the previous model).
        let indexed = rt.block_on(async {
            match catalog.indexed_twin(content, job.asset_id).await {
                Ok(Some(t)) if matches!(store.get(t.0 as u64).await, Ok(Some(_))) => Some(t),
                _ => None,
            }
        });
        match indexed {
            Some(t) => {
                let mut first = self.shared.first_copy.lock().unwrap();
                if first.get(content) == Some(&job.asset_id) {
                    first.remove(content);
                }
                Some(t)
            }
            // Not indexed anywhere (or unavailable to ask: embedding it is always right).
            None => None,
        }
    }

    /// A transient fault reading the file (out of file descriptors…): the job goes back to
    /// pending through the writer, after a short pause so that this decoder does not spin on
    /// a process that has no descriptor to give. False when the pipeline is stopping.
    fn retry_later(&self, job: crate::catalog::ClaimedJob, reason: String) -> bool {
        tracing::warn!(path = %job.path, error = %reason, "transient fault reading the file; its job is handed back and retried");
        std::thread::sleep(Duration::from_millis(200));
        self.fail.send(Outcome::Retry { job, reason }).is_ok()
    }

    pub(super) fn run(self) {
        while let Ok(DecodeTask { job }) = self.input.recv() {
            if self.shared.dropped(&job) {
                continue;
            }
            let t = Instant::now();
            let path = std::path::PathBuf::from(&job.path);
            // Opened now beneath its root, the check and the open one step, not trusted from
            // the catalog: the file (or a folder above it) may have become a symlink leading
            // out of the roots since it was catalogued, or become one while it is opened.
            let file = match &self.library {
                None => None,
                Some(lib) => match lib.open_file(&path) {
                    Ok(f) => Some(f),
                    Err(crate::library::LibraryError::NotFound { .. }) => {
                        // Deleted or moved away since it was claimed: nothing to index, no error.
                        let e = crate::decode::DecodeError::Vanished { path: path.clone() };
                        let reason = format!("{e}; nothing to index (if it moved, the watcher queues it under its new path)");
                        if self.fail.send(Outcome::Skipped { job, reason }).is_err() {
                            return;
                        }
                        continue;
                    }
                    // Out of file descriptors (EMFILE/ENFILE): not the file's fault; retried.
                    Err(e) if crate::error::Classify::is_transient(&e) => {
                        if !self.retry_later(job, e.to_string()) {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.shared.decode.failures.fetch_add(1, Ordering::Relaxed);
                        let reason = format!("{e}; the file was not read");
                        if self.fail.send(Outcome::Failed { job, reason, cause: FailCause::File }).is_err() {
                            return;
                        }
                        continue;
                    }
                },
            };
            let limits = &self.limits;
            let r = std::panic::catch_unwind(move || match file {
                Some(f) => crate::decode::decode_file(f, &path, limits),
                // No library (benches, tests): the path as it is.
                None => crate::decode::decode_for_embedding(&path, limits),
            });
            self.shared.decode.busy(t, 1);
            let sent = match r {
                Ok(Ok(d)) => {
                    let original = (d.original_width, d.original_height);
                    let twin = d.content_hash.as_deref().and_then(|c| {
                        self.shared.hashes.lock().unwrap().insert(job.job_id, (c.to_string(), crate::duplicates::dhash(&d.image)));
                        self.twin(&job, c)
                    });
                    match twin {
                        Some((twin, twin_path)) => self.fail.send(Outcome::Duplicate { job, twin, twin_path, original }).is_ok(),
                        None => self.out.send(Decoded { job, image: d.image, original }).is_ok(),
                    }
                }
                Ok(Err(e @ crate::decode::DecodeError::Vanished { .. })) => {
                    // Deleted or moved away since it was claimed: nothing to index, no error.
                    let reason = format!("{e}; nothing to index (if it moved, the watcher queues it under its new path)");
                    self.fail.send(Outcome::Skipped { job, reason }).is_ok()
                }
                // Out of file descriptors (EMFILE/ENFILE) and the like: not the file's fault.
                Ok(Err(e)) if crate::error::Classify::is_transient(&e) => self.retry_later(job, e.to_string()),
                Ok(Err(e)) => {
                    self.shared.decode.failures.fetch_add(1, Ordering::Relaxed);
                    self.fail.send(Outcome::Failed { job, reason: e.to_string(), cause: FailCause::File }).is_ok()
                }
                Err(_) => {
                    self.shared.decode.failures.fetch_add(1, Ordering::Relaxed);
                    let reason = format!("{}: the decoder crashed on this file (a pixdex bug; please report it)", job.path);
                    self.fail.send(Outcome::Failed { job, reason, cause: FailCause::Crash }).is_ok()
                }
            };
            if !sent {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    /// A catalogued file that has become a symlink leading out of the roots is not read by the
    /// decoder: its job fails with the reason. An in-root file decodes as usual.
    #[test]
    fn decoder_does_not_follow_links_out_of_the_roots() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let png = |p: &std::path::Path| image::RgbImage::from_pixel(32, 32, image::Rgb([9, 9, 9])).save(p).unwrap();
        png(&root.join("ok.png"));
        png(&d.path().join("secret.png"));
        std::os::unix::fs::symlink(d.path().join("secret.png"), root.join("swapped.png")).unwrap();
        let library = crate::library::Library::new(crate::config::LibraryConfig {
            watch: crate::config::WatchMode::Off,
            poll_interval: Duration::from_secs(1),
            settle: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(60),
            roots: vec![std::fs::canonicalize(&root).unwrap()],
            extensions: vec!["png".into()],
            ignored: vec![],
        });
        let (task_tx, task_rx) = bounded(4);
        let (out_tx, out_rx) = bounded(4);
        let (fail_tx, fail_rx) = bounded(4);
        let dec = Decoder {
            input: task_rx,
            out: out_tx,
            fail: fail_tx,
            shared: Arc::new(Shared::new()),
            limits: crate::decode::DecodeLimits::default(),
            library: Some(Arc::new(library)),
            twins: None,
        };
        let canon = std::fs::canonicalize(&root).unwrap();
        for (i, name) in ["ok.png", "swapped.png"].iter().enumerate() {
            let job =
                crate::catalog::ClaimedJob { job_id: i as i64, session_id: 1, asset_id: i as i64, path: canon.join(name).display().to_string(), token: 1 };
            task_tx.send(DecodeTask { job }).unwrap();
        }
        drop(task_tx);
        dec.run();
        assert_eq!(out_rx.try_iter().count(), 1, "the in-root file decodes");
        let failed: Vec<String> = fail_rx
            .try_iter()
            .map(|o| match o {
                Outcome::Failed { reason, .. } => reason,
                _ => String::new(),
            })
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains("swapped.png") && failed[0].contains("outside the library roots"), "{failed:?}");
    }
}
