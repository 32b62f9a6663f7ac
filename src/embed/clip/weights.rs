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
    /// Read a checkpoint. Safetensors is recognised by its structure (a little-endian u64 header
    /// length whose JSON header, starting with `{`, fits in the file), never by one byte: the
    /// length's first byte can be anything, 0x80 (a pickle's first byte) included. Otherwise a
    /// ZIP archive or a pickle (0x80) is PyTorch's; anything else is reported as neither.
    pub(crate) fn load(path: &Path) -> Result<Checkpoint, String> {
        let (head, len) = {
            use std::io::Read;
            let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            let mut head = Vec::with_capacity(9);
            f.take(9).read_to_end(&mut head).map_err(|e| e.to_string())?;
            (head, len)
        };
        if head.len() < 4 {
            return Err("the file is too short to be a checkpoint".into());
        }
        let raw = match format_of(&head, len) {
            Format::Safetensors => Self::safetensors(path)?,
            Format::PyTorch => Self::pytorch(path)?,
            // The safetensors reader says why (with the words "neither … nor").
            Format::Unknown => Self::safetensors(path)?,
        };
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Safetensors,
    PyTorch,
    Unknown,
}

/// The format from the first bytes (up to 9) and the file's length.
fn format_of(head: &[u8], len: u64) -> Format {
    if head.len() >= 9 {
        let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if n >= 2 && n.checked_add(8).is_some_and(|end| end <= len) && head[8] == b'{' {
            return Format::Safetensors;
        }
    }
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) { Format::PyTorch } else { Format::Unknown }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file with one F32 tensor `w` = [1.5, -2.0], its JSON header padded with
    /// spaces to `header_len` bytes.
    fn safetensors_bytes(header_len: usize) -> Vec<u8> {
        let json = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(json.len() <= header_len);
        let mut out = (header_len as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.resize(8 + header_len, b' ');
        out.extend_from_slice(&1.5f32.to_le_bytes());
        out.extend_from_slice(&(-2.0f32).to_le_bytes());
        out
    }

    #[test]
    fn safetensors_whose_header_length_starts_with_0x80_loads() {
        let dir = tempfile::tempdir().unwrap();
        for header_len in [128usize, 384, 640, 136] {
            let bytes = safetensors_bytes(header_len);
            assert_eq!(bytes[0] == 0x80, header_len % 256 == 128, "{header_len}");
            let path = dir.path().join(format!("h{header_len}.safetensors"));
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(format_of(&bytes[..9], bytes.len() as u64), Format::Safetensors, "{header_len}");
            let ck = Checkpoint::load(&path).unwrap_or_else(|e| panic!("header length {header_len}: {e}"));
            assert_eq!(ck.tensors["w"].shape, vec![2]);
            assert_eq!(ck.tensors["w"].data, vec![1.5, -2.0]);
        }
    }

    #[test]
    fn pickles_and_zips_are_still_pytorch() {
        // The fixture's PyTorch state dict (a ZIP archive) loads; the same tensors as its safetensors twin.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip");
        let pt = Checkpoint::load(&fixtures.join("tiny.pt")).expect("tiny.pt loads");
        let st = Checkpoint::load(&fixtures.join("tiny.safetensors")).expect("tiny.safetensors loads");
        assert_eq!(pt.tensors.len(), st.tensors.len());
        assert_eq!(pt.tensors["visual.conv1.weight"].data, st.tensors["visual.conv1.weight"].data);
        // A legacy pickle's first bytes (protocol 2), and a safetensors-like length that does not fit the file.
        assert_eq!(format_of(b"\x80\x02}q\x00(X\x03\x00\x00", 4096), Format::PyTorch);
        assert_eq!(format_of(b"PK\x03\x04\x14\x00\x00\x00\x08", 4096), Format::PyTorch);
        let mut too_long = safetensors_bytes(128);
        too_long.truncate(100);
        assert_eq!(format_of(&too_long[..9], too_long.len() as u64), Format::PyTorch);
        assert_eq!(format_of(b"this is n", 31), Format::Unknown);
        // A pickle that is not a checkpoint goes to the PyTorch reader and says so.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pt");
        std::fs::write(&junk, b"\x80\x02\xff\xfe\xfd\xfc\xfb\xfa\xf9 no pickle opcodes").unwrap();
        let e = Checkpoint::load(&junk).unwrap_err();
        assert!(e.contains("PyTorch"), "{e}");
    }
}
