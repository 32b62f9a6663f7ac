//! Keeps vectors in step with the catalog when the watcher removes or moves assets.

use crate::switch::StoresInUse;
use crate::watcher::AssetObserver;

/// Keeps vectors in step with the catalog when the watcher removes or moves assets — off the
/// watcher's thread: the watcher hands each batch to one task (in order, so a move then a
/// delete of the same asset stays in that order) and goes on with the next events.
pub(super) struct VectorSync {
    tx: tokio::sync::mpsc::Sender<VectorChange>,
}

enum VectorChange {
    Removed(Vec<u64>),
    Moved(Vec<(u64, String)>),
}

impl VectorSync {
    /// Up to 256 batches wait (a batch is a whole apply: a folder of 10k renames is one);
    /// beyond that the watcher waits, so a store that is down cannot fill memory.
    /// `stores`: every model's vectors in use (during a model switch, the serving and the
    /// building one), replaced when a reload opens another model's.
    pub(super) fn start(stores: StoresInUse, rt: &tokio::runtime::Handle) -> VectorSync {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<VectorChange>(256);
        rt.spawn(async move {
            while let Some(change) = rx.recv().await {
                // The stores in use now (a reload may have opened another model's).
                let stores = stores.read().unwrap_or_else(|e| e.into_inner()).clone();
                for store in &stores {
                    let mut backoff = std::time::Duration::from_millis(200);
                    // A store that is down is waited out; any other error is logged and dropped
                    // (search re-paths through the catalog and skips removed assets anyway).
                    for attempt in 0..8 {
                        let r = match &change {
                            VectorChange::Removed(ids) => store.delete(ids).await,
                            VectorChange::Moved(moves) => store.set_paths(moves).await,
                        };
                        match r {
                            Ok(()) => break,
                            Err(e) if e.is_retryable() && attempt < 7 => {
                                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "vector store unavailable for a watcher change; retrying");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "updating vectors after a filesystem change failed; search follows the catalog anyway");
                                break;
                            }
                        }
                    }
                }
            }
        });
        VectorSync { tx }
    }
}

impl AssetObserver for VectorSync {
    fn removed(&self, ids: &[i64]) {
        let _ = self.tx.blocking_send(VectorChange::Removed(ids.iter().map(|&i| i as u64).collect()));
    }

    fn moved(&self, moves: &[(i64, String)]) {
        let _ = self.tx.blocking_send(VectorChange::Moved(moves.iter().map(|(i, p)| (*i as u64, p.clone())).collect()));
    }
}
