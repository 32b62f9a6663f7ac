//! Domain types shared by the catalog, the session service and the API: persisted status enums
//! and the session state machine; which embedding model the configuration chooses (`ModelSpec`).
//! No I/O here, and nothing of pixdex imported (a leaf).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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

// --- Which embedding model --------------------------------------------------------------------
// The names and files the configuration chooses; the model code that reads them lives in `embed`.

/// Default EfficientNet-Lite0 weights location, relative to the working directory
/// (`scripts/fetch-model`).
pub const DEFAULT_EFFICIENTNET_WEIGHTS: &str = "models/efficientnet-lite0.pth";

/// Default CLIP checkpoint location (`scripts/fetch-clip`).
pub const DEFAULT_CLIP_WEIGHTS: &str = "models/clip-vit-b-32.safetensors";
/// Default CLIP tokenizer merges location (`scripts/fetch-clip-vocab`).
pub const DEFAULT_CLIP_VOCAB: &str = "models/clip-bpe-vocab.txt.gz";

/// Which CLIP: open_clip's model names. The checkpoint gives the sizes; the name gives the
/// activation (OpenAI's weights were trained with QuickGELU, open_clip's LAION ones with GELU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClipVariant {
    /// `ViT-B-32` (e.g. `laion2b_s34b_b79k`).
    VitB32,
    /// `ViT-B-32-quickgelu` (e.g. `openai`).
    VitB32QuickGelu,
}

impl ClipVariant {
    pub fn as_str(self) -> &'static str {
        match self {
            ClipVariant::VitB32 => "ViT-B-32",
            ClipVariant::VitB32QuickGelu => "ViT-B-32-quickgelu",
        }
    }
}

impl FromStr for ClipVariant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vit-b-32" | "clip-vit-b-32" => Ok(ClipVariant::VitB32),
            "vit-b-32-quickgelu" | "clip-vit-b-32-quickgelu" => Ok(ClipVariant::VitB32QuickGelu),
            other => Err(format!("unknown CLIP model {other:?}: expected \"ViT-B-32\" or \"ViT-B-32-quickgelu\"")),
        }
    }
}

impl fmt::Display for ClipVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which model embeds images (config `model.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// EfficientNet-Lite0 (ImageNet): 1280-d features and labels; words search the labels.
    EfficientNetLite0,
    /// CLIP: image and text in one 512-d space; words search the images.
    Clip(ClipVariant),
}

impl FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "efficientnet-lite0" | "efficientnet-lite0-imagenet" => Ok(ModelKind::EfficientNetLite0),
            other => other
                .parse::<ClipVariant>()
                .map(ModelKind::Clip)
                .map_err(|_| format!("unknown model {s:?}: expected \"efficientnet-lite0\", \"ViT-B-32\" or \"ViT-B-32-quickgelu\"")),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelKind::EfficientNetLite0 => f.write_str("efficientnet-lite0"),
            ModelKind::Clip(v) => v.fmt(f),
        }
    }
}

/// A model and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub weights: PathBuf,
    /// CLIP's tokenizer merges (unused by EfficientNet).
    pub vocab: PathBuf,
    /// CLIP's arithmetic on the CPU kernels (`model.precision`).
    pub precision: Precision,
}

/// The arithmetic of CLIP's GEMMs on pixdex's CPU kernels (config `model.precision`). `bf16`
/// (opt-in) rounds weights and activations to bf16 for the products and sums in f32, on
/// AVX512-BF16 CPUs only (elsewhere f32); its vectors are those of another model
/// (`…-bf16`, a collection of their own), never mixed with f32 ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The precision a model's vectors were made with, from its name (`clip-…-bf16`).
    pub fn of_model_name(name: &str) -> Precision {
        if name.starts_with("clip-") && name.ends_with("-bf16") { Precision::Bf16 } else { Precision::F32 }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("{other:?} is not one of \"f32\", \"bf16\"")),
        }
    }
}

impl ModelSpec {
    pub fn efficientnet(weights: &Path) -> ModelSpec {
        ModelSpec { kind: ModelKind::EfficientNetLite0, weights: weights.to_path_buf(), vocab: PathBuf::from(DEFAULT_CLIP_VOCAB), precision: Precision::F32 }
    }
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
