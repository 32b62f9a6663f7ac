//! The daemon's model and vectors: the configured model loaded off the runtime, the vector
//! store paired with this catalog, vectors the catalog never knew forgotten, and the pipeline
//! started with the model (or disabled, saying why).

use std::sync::Arc;

use anyhow::Context;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::library::Library;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::vectors::VectorStore;

/// A catalog restored from an older backup gives ids it never knew to new files: vectors
/// stored under those ids (images catalogued after the backup) would answer for other images.
/// They are deleted before the watcher catalogues anything (SQLite catalogs; see
/// `Catalog::asset_id_high_water`). A store that cannot be reached now is left for later.
pub(super) async fn forget_unknown_vectors(catalog: &Catalog, stores: &[VectorStore]) -> anyhow::Result<()> {
    let Some(high) = catalog.asset_id_high_water().await.context("reading the catalog's highest asset id")? else { return Ok(()) };
    for s in stores {
        match s.delete_above(high.max(0) as u64).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                store = %s.describe(),
                deleted = n,
                catalog_high_water = high,
                "deleted vectors of assets this catalog never knew (a catalog restored from an older backup?); their files are catalogued anew and embedded by the sessions that select them"
            ),
            Err(e) if e.is_retryable() => tracing::warn!(store = %s.describe(), error = %e, "cannot check for vectors unknown to the catalog now"),
            Err(e) => return Err(e).context("deleting vectors unknown to the catalog"),
        }
    }
    Ok(())
}

/// Start the pipeline with a loaded model, writing to `store`.
pub(super) fn start_pipeline(
    cfg: &Config,
    catalog: &Catalog,
    embedder: crate::embed::Embedder,
    store: &VectorStore,
    owner: &str,
    budget: &Arc<crate::decode::MemoryBudget>,
) -> Pipeline {
    let pcfg = PipelineConfig {
        decode_workers: cfg.pipeline.decode_workers,
        resize_workers: cfg.pipeline.resize_workers,
        claim_batch: cfg.pipeline.batch_size * 2,
        lease: cfg.pipeline.lease,
        max_attempts: cfg.pipeline.max_attempts as i64,
        limits: decode_limits(cfg, budget),
        library: Some(Arc::new(Library::new(cfg.library.clone()))),
        owner: owner.to_string(),
    };
    Pipeline::start(pcfg, embedder, store.clone(), catalog.clone(), tokio::runtime::Handle::current())
}

/// The decode limits from the config, sharing the daemon's one memory budget.
pub(super) fn decode_limits(cfg: &Config, budget: &Arc<crate::decode::MemoryBudget>) -> crate::decode::DecodeLimits {
    crate::decode::DecodeLimits {
        max_megapixels: cfg.pipeline.max_megapixels,
        max_file_bytes: cfg.pipeline.max_file_bytes,
        target: 224,
        memory: crate::decode::Budget(Some(budget.clone())),
    }
}
