//! What the stages share: `spawn` wires them with bounded channels (each capacity explained)
//! and starts their threads, `Queues` reports the depths, `crashed` words a stage's panic. Each
//! stage is a type in a file of its own (`claim`, `decode`, `resize`, `embed`, `write`,
//! `renew`, `optimize`) that owns the sender to the next stage and updates its own counters.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};

use super::claim::Claimer;
use super::decode::Decoder;
use super::embed::EmbedStage;
use super::messages::{DecodeTask, Decoded, Outcome, Prepared};
use super::optimize::Optimizer;
use super::renew::Renewer;
use super::resize::Resizer;
use super::write::Writer;
use super::{PipelineConfig, Shared};
use crate::catalog::Catalog;
use crate::embed::Embedder;
use crate::vectors::VectorStore;

/// Receivers kept for queue-depth reporting.
pub(super) struct Queues {
    decode: Receiver<DecodeTask>,
    resize: Receiver<Decoded>,
    embed: Receiver<Prepared>,
    write: Receiver<Outcome>,
    caps: [usize; 5],
}

impl Queues {
    /// (depths, capacities) of the queue in front of each stage: claim has none.
    pub(super) fn depths(&self) -> ([usize; 5], [usize; 5]) {
        ([0, self.decode.len(), self.resize.len(), self.embed.len(), self.write.len()], self.caps)
    }
}

pub(super) fn spawn(
    cfg: &PipelineConfig,
    embedder: Embedder,
    store: VectorStore,
    catalog: Catalog,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    wake: Receiver<()>,
) -> (Queues, Vec<JoinHandle<()>>) {
    let bs = embedder.batch_size();
    let gpu = embedder.is_gpu();
    let cfg_model = embedder.model_name();
    // claim → decode: holds only job ids and paths; two per decoder keeps every decoder fed
    // while bounding how many leased jobs wait unstarted.
    let decode_cap = cfg.decode_workers * 2;
    // decode → resize: decoded images (DCT-scaled, ≤ ~1 MB each); two per resizer.
    let resize_cap = cfg.resize_workers.max(1) * 2;
    // resize → embed: two batches — one being filled while the model runs the other.
    let embed_cap = bs * 2;
    // → write: a few batches of vectors (5 KB each); a slow vector store then stalls the
    // pipeline instead of filling memory.
    let write_cap = bs * 4;
    let (decode_tx, decode_rx) = bounded::<DecodeTask>(decode_cap);
    let (resize_tx, resize_rx) = bounded::<Decoded>(resize_cap);
    let (embed_tx, embed_rx) = bounded::<Prepared>(embed_cap);
    let (write_tx, write_rx) = bounded::<Outcome>(write_cap);
    let queues = Queues {
        decode: decode_rx.clone(),
        resize: resize_rx.clone(),
        embed: embed_rx.clone(),
        write: write_rx.clone(),
        caps: [0, decode_cap, resize_cap, embed_cap, write_cap],
    };
    let mut threads = Vec::new();
    let named = |name: String, f: Box<dyn FnOnce() + Send>| std::thread::Builder::new().name(name).spawn(f).expect("spawn pipeline thread");

    let claimer = Claimer { out: decode_tx, catalog: catalog.clone(), rt: rt.clone(), shared: shared.clone(), cfg: cfg.clone(), wake };
    threads.push(named("pixdex-claim".into(), Box::new(move || claimer.run())));
    for i in 0..cfg.decode_workers {
        let d = Decoder {
            input: decode_rx.clone(),
            out: resize_tx.clone(),
            fail: write_tx.clone(),
            shared: shared.clone(),
            limits: cfg.limits.clone(),
            library: cfg.library.clone(),
            twins: Some((catalog.clone(), store.clone(), rt.clone())),
        };
        threads.push(named(format!("pixdex-decode-{i}"), Box::new(move || d.run())));
    }
    drop(resize_tx);
    let resizers = if gpu { 1 } else { cfg.resize_workers.max(1) };
    for i in 0..resizers {
        let r = Resizer { input: resize_rx.clone(), out: embed_tx.clone(), fail: write_tx.clone(), shared: shared.clone(), gpu };
        threads.push(named(format!("pixdex-resize-{i}"), Box::new(move || r.run())));
    }
    drop(embed_tx);
    let e = EmbedStage { input: embed_rx, out: write_tx.clone(), shared: shared.clone(), embedder };
    threads.push(named("pixdex-embed".into(), Box::new(move || e.run())));
    drop(write_tx);
    let w = Writer {
        input: write_rx,
        catalog: catalog.clone(),
        store: store.clone(),
        rt: rt.clone(),
        shared: shared.clone(),
        owner: cfg.owner.clone(),
        model: cfg_model.clone(),
    };
    threads.push(named("pixdex-write".into(), Box::new(move || w.run())));
    let o = Optimizer { store, rt: rt.clone(), shared: shared.clone() };
    threads.push(named("pixdex-optimize".into(), Box::new(move || o.run())));
    let r = Renewer { catalog, rt, shared, owner: cfg.owner.clone(), lease: cfg.lease };
    threads.push(named("pixdex-lease".into(), Box::new(move || r.run())));
    (queues, threads)
}

// ---------------------------------------------------------------------------------------------

/// A stage crashed on this job: the reason a user reads.
pub(super) fn crashed(stage: &str, job: &crate::catalog::ClaimedJob, p: &(dyn std::any::Any + Send)) -> String {
    let msg = crate::fault::panic_message(p);
    tracing::error!(stage, job = job.job_id, path = %job.path, panic = %msg, "a pipeline stage panicked on this job; it fails, the stage goes on");
    format!("{}: the {stage} stage crashed on this image (a pixdex bug; please report it): {msg}", job.path)
}
