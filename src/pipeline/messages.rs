//! The messages that flow between pipeline stages, all in one place.

use crate::catalog::ClaimedJob;
use crate::decode::RgbImage;
use crate::embed::Embedding;

/// claim → decode: a leased job whose file is to be read.
pub struct DecodeTask {
    pub job: ClaimedJob,
}

/// decode → resize: the image, already DCT-scaled near the model's input size.
pub struct Decoded {
    pub job: ClaimedJob,
    pub image: RgbImage,
    pub original: (u32, u32),
}

/// What the embed stage consumes: on the CPU the resize stage has produced the normalized
/// input; on a GPU the resize runs on the device, inside the embed stage's batch.
pub enum Prepared {
    Cpu { job: ClaimedJob, nchw: Vec<f32>, original: (u32, u32) },
    Gpu { job: ClaimedJob, image: RgbImage, original: (u32, u32) },
}

impl Prepared {
    pub fn job(&self) -> &ClaimedJob {
        match self {
            Prepared::Cpu { job, .. } | Prepared::Gpu { job, .. } => job,
        }
    }
}

impl Outcome {
    pub fn job(&self) -> &ClaimedJob {
        match self {
            Outcome::Embedded { job, .. }
            | Outcome::Failed { job, .. }
            | Outcome::Skipped { job, .. }
            | Outcome::Retry { job, .. }
            | Outcome::Duplicate { job, .. } => job,
        }
    }
}

/// Why a job failed, for operators (`pixdex_jobs_failed_total{cause}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailCause {
    /// The file itself: unreadable, undecodable, too large, a decompression bomb, outside the roots.
    File,
    /// The model failed at run time or gave a non-finite embedding.
    Model,
    /// The vector store refused the point (not an outage: outages are waited out).
    VectorStore,
    /// A stage panicked on this job: a pixdex bug.
    Crash,
}

impl FailCause {
    pub const ALL: [FailCause; 4] = [FailCause::File, FailCause::Model, FailCause::VectorStore, FailCause::Crash];

    pub fn label(self) -> &'static str {
        match self {
            FailCause::File => "file",
            FailCause::Model => "model",
            FailCause::VectorStore => "vector_store",
            FailCause::Crash => "crash",
        }
    }
}

/// → write: what became of a job.
pub enum Outcome {
    Embedded {
        job: ClaimedJob,
        embedding: Embedding,
        original: (u32, u32),
    },
    /// The job fails (a bad file, or a fault that hit only this job), the session goes on.
    Failed {
        job: ClaimedJob,
        reason: String,
        cause: FailCause,
    },
    /// Not the file's fault and not for now (the process is out of file descriptors): the job
    /// is handed back (pending again, not counted as an attempt) and claimed again later.
    Retry {
        job: ClaimedJob,
        reason: String,
    },
    /// Nothing to do: the file vanished (deleted or moved away) before it could be read.
    Skipped {
        job: ClaimedJob,
        reason: String,
    },
    /// The file's bytes are identical to another asset's (`twin`) that is indexed or in
    /// flight: not embedded again; the writer stores the twin's vector under this asset's id.
    Duplicate {
        job: ClaimedJob,
        twin: i64,
        twin_path: String,
        original: (u32, u32),
    },
}
