//! Checkpoint files as host tensors: safetensors (open_clip's `open_clip_model.safetensors`) and
//! PyTorch state dicts (`open_clip_pytorch_model.bin`, `torch.save(state_dict)`, optionally under
//! a `state_dict` key), in f32, f16 or bf16 (read as f32). Keys lose a `module.` prefix (weights
//! saved from DataParallel). TorchScript archives (OpenAI's original `ViT-B-32.pt`) are not
//! state dicts: the error says how to convert them.

use std::collections::HashMap;
use std::path::Path;

/// One tensor in host memory, row-major.
#[derive(Debug, Clone)]
pub(crate) struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A checkpoint's tensors by name.
#[derive(Debug, Default)]
pub(crate) struct Checkpoint {
    pub tensors: HashMap<String, HostTensor>,
}

impl Checkpoint {
    /// Read a checkpoint; the format is told by its first bytes (a zip archive is PyTorch's).
    pub(crate) fn load(path: &Path) -> Result<Checkpoint, String> {
        let mut head = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let n = f.read(&mut head).map_err(|e| e.to_string())?;
            if n < 4 {
                return Err("the file is too short to be a checkpoint".into());
            }
        }
        let raw = if head == *b"PK\x03\x04" || head[0] == 0x80 { Self::pytorch(path)? } else { Self::safetensors(path)? };
        let tensors = raw.into_iter().map(|(k, v)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), v)).collect();
        Ok(Checkpoint { tensors })
    }

    fn safetensors(path: &Path) -> Result<HashMap<String, HostTensor>, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("neither a PyTorch checkpoint nor safetensors ({e})"))?;
        let mut out = HashMap::new();
        for (name, view) in st.tensors() {
            use safetensors::Dtype;
            let dtype = match view.dtype() {
                Dtype::F32 => Elem::F32,
                Dtype::F16 => Elem::F16,
                Dtype::BF16 => Elem::BF16,
                Dtype::F64 => Elem::F64,
                other => {
                    // Integer buffers (e.g. position ids) are not weights; skip them.
                    tracing::debug!(tensor = %name, dtype = ?other, "skipping a non-float tensor");
                    continue;
                }
            };
            out.insert(name, HostTensor { shape: view.shape().to_vec(), data: to_f32(view.data(), dtype) });
        }
        Ok(out)
    }

    fn pytorch(path: &Path) -> Result<HashMap<String, HostTensor>, String> {
        use burn::store::pytorch_reader::{DType, PytorchReader};
        let reader = match PytorchReader::new(path) {
            Ok(r) if r.keys().iter().any(|k| k.starts_with("state_dict.")) => PytorchReader::with_top_level_key(path, "state_dict"),
            other => other,
        }
        .map_err(|e| {
            let e = e.to_string();
            if e.contains("constants.pkl") || e.contains("__torch__") || e.contains("code/") {
                format!("a TorchScript archive, not a state dict ({e}); load it with open_clip and save `model.state_dict()` with safetensors")
            } else {
                format!("not a readable PyTorch checkpoint: {e}")
            }
        })?;
        let mut out = HashMap::new();
        for (name, t) in reader.into_tensors() {
            let dtype = match t.dtype() {
                DType::F32 => Elem::F32,
                DType::F16 => Elem::F16,
                DType::BF16 => Elem::BF16,
                DType::F64 => Elem::F64,
                _ => continue,
            };
            let bytes = t.read().map_err(|e| format!("reading `{name}`: {e}"))?;
            out.insert(name, HostTensor { shape: t.shape().to_vec(), data: to_f32(&bytes, dtype) });
        }
        Ok(out)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub(crate) fn shape(&self, key: &str) -> Result<&[usize], String> {
        self.tensors.get(key).map(|t| t.shape.as_slice()).ok_or_else(|| format!("missing tensor `{key}`"))
    }

    /// Take a tensor out, checking its shape.
    pub(crate) fn take(&mut self, key: &str, expect: &[usize]) -> Result<Vec<f32>, String> {
        let t = self.tensors.remove(key).ok_or_else(|| format!("missing tensor `{key}`"))?;
        if t.shape != expect {
            return Err(format!("`{key}` has shape {:?}, expected {expect:?}", t.shape));
        }
        Ok(t.data)
    }
}

#[derive(Clone, Copy)]
enum Elem {
    F32,
    F16,
    BF16,
    F64,
}

fn to_f32(bytes: &[u8], dtype: Elem) -> Vec<f32> {
    match dtype {
        Elem::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Elem::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        Elem::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Elem::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
    }
}
