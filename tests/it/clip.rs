//! CLIP against open_clip itself: the tokenizer on 1 304 strings, both towers of a tiny
//! random-weight CLIP (GELU and QuickGELU, safetensors and a PyTorch state dict) on flex and on
//! wgpu, a full-size ViT-B-32 state dict (open_clip's exact keys and shapes, random values), and
//! bad weights. Fixtures: `scripts/make-clip-fixtures.py` (run once in a venv with torch);
//! merges: `scripts/fetch-clip-vocab`.

use std::path::{Path, PathBuf};

use pixdex::embed::clip::{ClipRuntime, Custom, Tokenizer};
use pixdex::embed::{DeviceChoice, EmbedError, Embedder, IMAGE_FLOATS, INPUT, ModelKind, ModelSpec};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    crate::harness::repo_dir().join("tests/fixtures/clip").join(name)
}

pub(crate) fn vocab() -> PathBuf {
    let p = crate::harness::repo_dir().join(pixdex::embed::clip::DEFAULT_VOCAB);
    assert!(p.is_file(), "CLIP merges missing at {}: run `scripts/fetch-clip-vocab`", p.display());
    p
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The fixture's test image `k` (mirrors `pixel()` in scripts/make-clip-fixtures.py) as pipeline
/// input, `(px - 127) / 128`.
fn images(count: usize) -> Vec<f32> {
    let mut out = vec![0f32; count * IMAGE_FLOATS];
    for k in 0..count {
        for c in 0..3 {
            for y in 0..INPUT {
                for x in 0..INPUT {
                    let px = (x * (3 + k) + y * (5 + 2 * k) + c * 77 + k * 31 + (x * y) % 7 + ((x / 16 + y / 16 + k) % 2) * 90) % 256;
                    out[k * IMAGE_FLOATS + c * INPUT * INPUT + y * INPUT + x] = (px as f32 - 127.0) / 128.0;
                }
            }
        }
    }
    out
}

#[test]
fn tokenizer_matches_open_clip() {
    let tok = Tokenizer::load(&vocab()).expect("merges load");
    assert_eq!(tok.vocab_size(), 49408);
    let cases = json("tokenizer.json");
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 1000, "{} cases", cases.len());
    let mut wrong = Vec::new();
    let mut repaired = 0;
    for c in cases {
        let text = c["text"].as_str().unwrap();
        // ftfy's mojibake repair (random Latin-1 pairs that happen to spell UTF-8, like "Ç±")
        // is not reproduced: those cases must match open_clip's tokens without that repair.
        let want = if c["mojibake_repaired"].as_bool() == Some(true) {
            repaired += 1;
            ids(&c["tokens_without_repair"])
        } else {
            ids(&c["tokens"])
        };
        let got = tok.tokenize(text);
        if got != want {
            wrong.push(format!("{text:?}\n  open_clip {want:?}\n  pixdex    {got:?}"));
        }
    }
    eprintln!("{} strings: {} identical to open_clip, {repaired} identical to open_clip without ftfy's mojibake repair", cases.len(), cases.len() - repaired);
    assert!(repaired * 100 <= cases.len(), "{repaired} mojibake cases: the corpus is meant to be text people type");
    assert!(wrong.is_empty(), "{} of {} differ:\n{}", wrong.len(), cases.len(), wrong.iter().take(8).cloned().collect::<Vec<_>>().join("\n"));
    // Truncation keeps 77 with end-of-text last.
    let long = tok.tokenize(&"mountain lake ".repeat(100));
    assert_eq!(long.len(), 77);
    assert_eq!(*long.last().unwrap(), tok.eot);
}

fn tiny(file: &str, quick_gelu: bool) -> ClipRuntime {
    ClipRuntime::load_for_tests(&fixture(file), &vocab(), Custom { head_width: 16, quick_gelu }).expect("tiny CLIP loads")
}

/// Compare one runtime with open_clip's embeddings for the fixture's images and texts.
fn check_against_open_clip(rt: &ClipRuntime, which: &str) {
    let refs = json("tiny.json");
    let n = refs["images"].as_u64().unwrap() as usize;
    let want_img = floats(&refs[which]["image"]);
    let want_txt = floats(&refs[which]["text"]);
    let texts: Vec<&str> = refs["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let tokens: Vec<Vec<u32>> = refs["tokens"].as_array().unwrap().iter().map(ids).collect();

    let mut got_img = Vec::new();
    let input = images(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let (a, b) = (chunk[0], *chunk.last().unwrap() + 1);
        got_img.extend(rt.embed_images_normalized(&input[a * IMAGE_FLOATS..b * IMAGE_FLOATS], b - a).unwrap());
    }
    for (k, (g, w)) in got_img.iter().zip(&want_img).enumerate() {
        let cos = cosine(g, w);
        assert!(cos >= 0.9999, "{which}: image {k}: cosine {cos}");
    }
    // Our tokenizer gives open_clip's tokens, and the towers give its embeddings.
    for (t, want) in texts.iter().zip(&tokens) {
        assert_eq!(&rt.tokenizer().tokenize(t), want, "{t:?}");
    }
    let got_txt = rt.embed_texts(&texts).unwrap();
    for (k, (g, w)) in got_txt.iter().zip(&want_txt).enumerate() {
        let cos = cosine(g, w);
        assert!(cos >= 0.9999, "{which}: text {k} ({:?}): cosine {cos}", texts[k]);
    }
    // One at a time (a different padded length) gives the same.
    let single = rt.embed_tokens(&tokens[1..2]).unwrap();
    assert!(cosine(&single[0], &want_txt[1]) >= 0.9999);
    eprintln!("{which}: {} images, {} texts at cosine >= 0.9999", got_img.len(), got_txt.len());
}

#[test]
fn towers_match_open_clip_on_flex() {
    check_against_open_clip(&tiny("tiny.safetensors", false), "gelu");
    check_against_open_clip(&tiny("tiny.safetensors", true), "quick_gelu");
    // The same weights as a PyTorch state dict.
    check_against_open_clip(&tiny("tiny.pt", false), "gelu");
}

/// Both towers on pixdex's CPU kernels (`model.device = "cpu"`: the image tower in
/// `embed/clip/host.rs`, not Burn) against open_clip.
#[test]
fn towers_match_open_clip_on_the_cpu_kernels() {
    for (file, which, quick_gelu) in [("tiny.safetensors", "gelu", false), ("tiny.safetensors", "quick_gelu", true), ("tiny.pt", "gelu", false)] {
        let rt = ClipRuntime::load_for_tests_on_host(&fixture(file), &vocab(), Custom { head_width: 16, quick_gelu }).expect("tiny CLIP on the host");
        check_against_open_clip(&rt, which);
    }
}

/// The towers on wgpu (Mesa llvmpipe here, a real GPU on a GPU machine) against open_clip.
/// `PIXDEX_SKIP_WGPU=1` on machines where wgpu finds no adapter at all.
#[test]
fn towers_match_open_clip_on_wgpu() {
    if std::env::var_os("PIXDEX_SKIP_WGPU").is_some() {
        eprintln!("PIXDEX_SKIP_WGPU set: skipping the wgpu test");
        return;
    }
    let rt =
        ClipRuntime::load_for_tests_on_wgpu(&fixture("tiny.safetensors"), &vocab(), Custom { head_width: 16, quick_gelu: false }).expect("tiny CLIP on wgpu");
    check_against_open_clip(&rt, "gelu");
}

/// A full-size ViT-B-32 state dict — open_clip's exact keys and shapes
/// (`vit-b-32-shapes.json`), random values — loads as the right model and embeds.
#[test]
fn full_size_state_dict_loads_with_the_right_shapes() {
    let shapes = json("vit-b-32-shapes.json");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vit-b-32-random.safetensors");
    write_random_safetensors(&path, shapes.as_object().unwrap());
    let spec = ModelSpec { kind: ModelKind::Clip("ViT-B-32".parse().unwrap()), weights: path.clone(), vocab: vocab(), precision: Default::default() };
    let e = Embedder::load_spec(&spec, DeviceChoice::Flex, 2).expect("full-size random ViT-B-32 loads");
    assert_eq!(e.dim(), 512);
    assert!(e.has_text());
    assert!(e.model_name().starts_with("clip-vit-b-32-"), "{}", e.model_name());
    let Embedder::Clip(rt) = &e else { panic!("not CLIP") };
    let shape = rt.describe();
    assert_eq!(
        shape,
        "image: ViT width 768, 12 layers, 12 heads, 32 px patches on a 7x7 grid; text: width 512, 12 layers, 8 heads, 77 tokens, 49408-token vocabulary; 512-d",
        "{shape}"
    );
    let v = e.embed_text("a dog on a beach at sunset").unwrap();
    assert_eq!(v.len(), 512);
    assert!(v.iter().all(|x| x.is_finite()));
    let img = e.embed_normalized(&images(1), 1).unwrap();
    assert_eq!(img[0].vector.len(), 512);
    assert!(img[0].labels.is_empty(), "CLIP has no ImageNet labels");
    // `cpu`: the same model on pixdex's kernels, the same vectors.
    drop(e);
    let host = Embedder::load_spec(&spec, DeviceChoice::Cpu, 2).expect("full-size random ViT-B-32 on the CPU kernels");
    assert!(host.device_name().starts_with("cpu (pixdex kernels"), "{}", host.device_name());
    let got = host.embed_normalized(&images(2), 2).unwrap();
    let cos = cosine(&got[0].vector, &img[0].vector);
    assert!(cos >= 0.9999, "CPU kernels vs flex: cosine {cos}");
    assert!(cosine(&got[0].vector, &got[1].vector) < 0.9999, "two different images give different vectors");
}

fn write_random_safetensors(path: &Path, shapes: &serde_json::Map<String, Value>) {
    let shapes: Vec<(String, Vec<usize>)> =
        shapes.iter().map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect())).collect();
    pixdex::embed::clip::random::write_safetensors(path, &shapes).unwrap();
}

#[test]
fn bad_weights_say_what_and_how() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |weights: PathBuf| ModelSpec { kind: ModelKind::Clip("ViT-B-32".parse().unwrap()), weights, vocab: vocab(), precision: Default::default() };
    let load = |s: &ModelSpec| Embedder::load_spec(s, DeviceChoice::Flex, 1).map(|_| ()).unwrap_err();

    let missing = load(&spec(dir.path().join("nope.safetensors")));
    assert!(matches!(missing, EmbedError::Missing { .. }), "{missing}");
    assert!(missing.to_string().contains("scripts/fetch-clip") && missing.to_string().contains("nope.safetensors"), "{missing}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    let e = load(&spec(garbage));
    assert!(matches!(e, EmbedError::Invalid { .. }) && e.to_string().contains("garbage.safetensors"), "{e}");

    // Truncated: the first half of a real file.
    let bytes = std::fs::read(fixture("tiny.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load(&spec(cut));
    assert!(matches!(e, EmbedError::Invalid { .. }), "{e}");

    // Mismatched: the tiny model's text width (32) is no multiple of ViT-B-32's head width.
    let e = load(&spec(fixture("tiny.safetensors")));
    assert!(e.to_string().contains("head width 64") && e.to_string().contains("not a CLIP ViT-B-32 checkpoint"), "{e}");

    // Another model's weights: EfficientNet's checkpoint names the missing CLIP tensor.
    let effnet = crate::harness::repo_dir().join(pixdex::embed::DEFAULT_WEIGHTS);
    if effnet.is_file() {
        let e = load(&spec(effnet));
        assert!(e.to_string().contains("visual.conv1.weight"), "{e}");
    }

    // Missing merges.
    let mut s = spec(fixture("tiny.safetensors"));
    s.vocab = dir.path().join("no-vocab.txt.gz");
    let e = load(&s);
    assert!(e.to_string().contains("scripts/fetch-clip-vocab"), "{e}");
}

/// `[model]` + `[pipeline]` TOML for a daemon running CLIP (ViT-B-32) from `weights` on the CPU
/// kernels, batches of 4, one decoder.
pub(crate) fn clip_toml(weights: &Path) -> String {
    format!(
        "[model]\nname = \"ViT-B-32\"\nweights = \"{}\"\nvocab = \"{}\"\ndevice = \"cpu\"\n\n[pipeline]\nbatch_size = 4\ndecode_workers = 1\n",
        weights.display(),
        vocab().display()
    )
}

/// A small random CLIP with ViT-B-32's layout and head width (64): widths 64, 2 layers per
/// tower, open_clip's key names — loads through `model.name = "ViT-B-32"` like real weights.
pub(crate) fn small_random_clip(path: &Path) {
    let full = json("vit-b-32-shapes.json");
    let mut shapes = serde_json::Map::new();
    for (k, v) in full.as_object().unwrap() {
        let layer = k.split("resblocks.").nth(1).and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok());
        if layer.is_some_and(|l| l >= 2) {
            continue;
        }
        let dims: Vec<Value> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let d = d.as_u64().unwrap();
                Value::from(match d {
                    768 | 512 => 64,
                    3072 | 2048 => 256,
                    2304 | 1536 => 192,
                    other => other,
                })
            })
            .collect();
        shapes.insert(k.clone(), Value::Array(dims));
    }
    write_random_safetensors(path, &shapes);
}

/// `pixdex embed` with a CLIP model reports that model and its width (not EfficientNet's), and
/// without `--json` prints the path with what was computed (CLIP has no labels).
#[test]
fn embed_command_reports_the_clip_model() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("clip-small.safetensors");
    small_random_clip(&weights);
    let photo = crate::harness::sample("chelsea.png");
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(crate::harness::BIN);
        cmd.arg("embed");
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .arg(&photo)
            .env("PIXDEX_MODEL__NAME", "ViT-B-32")
            .env("PIXDEX_MODEL__WEIGHTS", &weights)
            .env("PIXDEX_MODEL__VOCAB", vocab())
            .env("PIXDEX_MODEL__DEVICE", "cpu")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let line: Value = serde_json::from_str(run(true).trim()).unwrap();
    let model = line["model"].as_str().unwrap().to_string();
    assert!(model.starts_with("clip-vit-b-32-"), "{line}");
    assert_eq!(line["dim"], 64, "{line}");
    assert_eq!(line["embedding"].as_array().unwrap().len(), 64);
    assert_eq!(line["path"], photo.display().to_string());
    assert_eq!(line["labels"], serde_json::json!([]));
    let text = run(false);
    assert_eq!(text, format!("{}: 64-d vector ({model})\n", photo.display()));
}

mod daemon {
    use super::*;
    use crate::harness::{Db, TestDaemon, eventually, model_toml, sample};
    use serde_json::json;

    fn photos(root: &Path) {
        let dir = root.join("photos");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"] {
            std::fs::copy(sample(name), dir.join(name)).unwrap();
        }
        // Big PNGs (full decode, one decoder) keep the re-embed busy for a while.
        for i in 0..4 {
            crate::harness::noise_png(&root.join(format!("big/b{i}.png")), 3000, 3000, i);
        }
    }

    /// EfficientNet serves; the config switches to CLIP: bad weights leave EfficientNet
    /// serving (pipeline off, the reason says which file and how to fix it); good weights
    /// re-embed in a session of the new model's own while EfficientNet keeps answering; then
    /// CLIP answers words with its text tower, and every answer names its model.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn switching_to_clip_reembeds_while_the_old_model_serves() {
        let mut d = TestDaemon::start(Db::Sqlite, &(model_toml(4) + "resize_workers = 1\n"), photos).await;
        let root = d.root.display().to_string();
        let id = d.create(json!({"name": "all", "rootPath": root})).await;
        assert_eq!(d.action(id, "start").await.status, 200);
        crate::pipeline::wait_status(&d, id, "completed", 180).await;
        let r = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await.body;
        assert_eq!(r["model"], "efficientnet-lite0-imagenet", "{r}");
        assert_eq!(r["wordsVia"], "labels", "{r}");
        assert!(r["note"].as_str().unwrap().contains("ViT-B-32"), "{r}");
        assert!(!r["results"].as_array().unwrap().is_empty(), "{r}");

        // Bad CLIP weights: the daemon keeps serving EfficientNet's vectors and says why.
        let garbage = d.dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"not weights").unwrap();
        d.stop();
        d.write_config(&clip_toml(&garbage));
        d.restart().await;
        let p = d.get("/api/v1/training/pipeline").await.body;
        assert_eq!(p["running"], false, "{p}");
        let why = p.to_string();
        assert!(why.contains("garbage.safetensors") && why.contains("scripts/fetch-clip"), "{why}");
        let r = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await.body;
        assert_eq!(r["model"], "efficientnet-lite0-imagenet", "{r}");
        assert!(!r["results"].as_array().unwrap().is_empty(), "{r}");

        // Good CLIP weights: a re-embed session of its own; the old model answers meanwhile.
        let weights = d.dir.path().join("clip-small.safetensors");
        small_random_clip(&weights);
        d.stop();
        d.write_config(&clip_toml(&weights));
        d.restart().await;
        let r = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await.body;
        assert_eq!(r["model"], "efficientnet-lite0-imagenet", "the old model serves until the new one is complete: {r}");
        let models = d.get("/api/v1/models").await.body;
        let building: Vec<&Value> = models.as_array().unwrap().iter().filter(|m| m["state"] == "building").collect();
        assert_eq!(building.len(), 1, "{models}");
        let clip_name = building[0]["name"].as_str().unwrap().to_string();
        assert!(clip_name.starts_with("clip-vit-b-32-"), "{clip_name}");

        let switched = eventually(240, || async { d.post("/api/v1/search", Some(json!({"query": "a cat"}))).await.body["model"] == clip_name.as_str() }).await;
        assert!(switched, "CLIP never took over: {}\n{}", d.get("/api/v1/models").await.body, d.get("/api/v1/training/sessions").await.body);
        let sessions = d.get("/api/v1/training/sessions").await.body.to_string();
        assert!(sessions.contains(&format!("model {clip_name}")), "{sessions}");
        let r = d.post("/api/v1/search", Some(json!({"query": "a cat sleeping on a sofa", "limit": 20}))).await.body;
        assert_eq!(r["wordsVia"], "clip", "{r}");
        // The query reaches the tokenizer as typed: a trailing U+0085 is open_clip's ellipsis
        // (the same vector as "…"), not whitespace to trim.
        let scores = |r: &Value| r["results"].as_array().unwrap().iter().map(|x| (x["path"].to_string(), x["score"].as_f64().unwrap())).collect::<Vec<_>>();
        let nel = scores(&d.post("/api/v1/search", Some(json!({"query": "a cat sleeping on a sofa\u{85}", "limit": 20}))).await.body);
        let ellipsis = scores(&d.post("/api/v1/search", Some(json!({"query": "a cat sleeping on a sofa\u{2026}", "limit": 20}))).await.body);
        let plain = scores(&r);
        assert_eq!(nel.len(), 8, "{nel:?}");
        let same = |a: &[(String, f64)], b: &[(String, f64)]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() < 1e-6);
        assert!(same(&nel, &ellipsis), "U+0085 {nel:?}\n… {ellipsis:?}");
        assert!(!same(&nel, &plain), "U+0085 {nel:?}\ntrimmed {plain:?}");
        let blank = d.post("/api/v1/search", Some(json!({"query": " \u{85}\t"}))).await;
        assert_eq!(blank.status, 400, "{:?}", blank.body);
        // Never mixed: all 8 images answer from CLIP's vectors (512-d EfficientNet's would not).
        assert_eq!(r["results"].as_array().unwrap().len(), 8, "{r}");
        let models = d.get("/api/v1/models").await.body.to_string();
        assert!(models.contains("\"retired\"") && models.contains("\"serving\""), "{models}");
        // Search by image uses the serving model (CLIP) too.
        let r = d.post("/api/v1/search/image", Some(json!({"path": format!("{root}/photos/chelsea.png")}))).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["model"], clip_name.as_str(), "{:?}", r.body);
        assert!(r.body["results"][0]["path"].as_str().unwrap().ends_with("chelsea.png"), "{:?}", r.body);

        // A restart keeps CLIP serving (no second re-embed).
        d.restart().await;
        let r = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await.body;
        assert_eq!(r["model"], clip_name.as_str(), "{r}");
    }

    /// CLIP is configured but its weights are not there yet (fetched after the daemon started,
    /// as a new user does): the daemon says so everywhere — health names the model as failed
    /// and why, a started session says what it waits for and the fix, words search says CLIP
    /// is configured but not running, `ctl model reload` answers with the reason — and once the
    /// weights appear the daemon loads them by itself, without a restart, and the session
    /// completes with CLIP's vectors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn weights_that_appear_later_are_loaded_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("later.safetensors");
        let d = TestDaemon::start(Db::Sqlite, &clip_toml(&weights), |root| {
            let dir = root.join("photos");
            std::fs::create_dir_all(&dir).unwrap();
            for name in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"] {
                std::fs::copy(sample(name), dir.join(name)).unwrap();
            }
        })
        .await;
        let health = d.get("/api/v1/health").await.body;
        let failed: Vec<&Value> = health["models"].as_array().unwrap().iter().filter(|m| m["state"] == "failed").collect();
        assert_eq!(failed.len(), 1, "{health}");
        let why = failed[0]["error"].as_str().unwrap();
        assert!(why.contains("later.safetensors") && why.contains("scripts/fetch-clip"), "{health}");
        assert_eq!(failed[0]["name"], "ViT-B-32", "{health}");

        let id = d.create(json!({"name": "early", "rootPath": d.root.display().to_string()})).await;
        assert_eq!(d.action(id, "start").await.status, 200);
        let waiting = eventually(30, || async {
            let p = d.get(&format!("/api/v1/training/sessions/{id}/progress")).await.body;
            p["status"] == "running" && p["waitingFor"].as_str().is_some_and(|w| w.contains("later.safetensors") && w.contains("scripts/fetch-clip"))
        })
        .await;
        assert!(waiting, "{}", d.get(&format!("/api/v1/training/sessions/{id}/progress")).await.body);
        let (code, out, _) = d.ctl(&["sessions", "progress", &id.to_string()]);
        assert_eq!(code, 0);
        assert!(out.contains("waiting for") && out.contains("scripts/fetch-clip"), "{out}");
        let r = d.post("/api/v1/search", Some(json!({"query": "cat"}))).await.body;
        let note = r["note"].as_str().unwrap_or_default();
        assert!(note.contains("ViT-B-32") && note.contains("not running") && note.contains("later.safetensors"), "{r}");
        // Asked to reload before the weights are there: the reason, not a success.
        let (code, _, err) = d.ctl(&["model", "reload"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("later.safetensors") && err.contains("scripts/fetch-clip"), "{err}");

        // The weights arrive (written elsewhere and moved in, as scripts/fetch-clip does).
        let part = dir.path().join("later.part");
        small_random_clip(&part);
        std::fs::rename(&part, &weights).unwrap();
        crate::pipeline::wait_status(&d, id, "completed", 180).await;
        let s = d.session(id).await;
        assert_eq!(s["processedImages"], 4, "{s}");
        let health = d.get("/api/v1/health").await.body;
        assert_eq!(health["model"]["running"], true, "{health}");
        assert!(
            health["models"].as_array().unwrap().iter().any(|m| m["state"] == "serving" && m["name"].as_str().unwrap().starts_with("clip-vit-b-32-")),
            "{health}"
        );
        assert!(!health["models"].as_array().unwrap().iter().any(|m| m["state"] == "failed"), "{health}");
        let r = d.post("/api/v1/search", Some(json!({"query": "a cat", "limit": 10}))).await.body;
        assert_eq!(r["wordsVia"], "clip", "{r}");
        assert_eq!(r["results"].as_array().unwrap().len(), 4, "{r}");
        // Reloading a model that runs loads it again and says so.
        let (code, out, err) = d.ctl(&["model", "reload"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("loaded"), "{out}");
        // Weights replaced by something that cannot load: the pipeline keeps the model it has
        // and health says why; good weights again clear it.
        let bad = dir.path().join("bad.part");
        std::fs::write(&bad, b"not weights at all").unwrap();
        std::fs::rename(&bad, &weights).unwrap();
        let flagged = eventually(30, || async {
            let h = d.get("/api/v1/health").await.body;
            h["model"]["running"] == true && h["problems"].to_string().contains("cannot be loaded")
        })
        .await;
        assert!(flagged, "{}", d.get("/api/v1/health").await.body);
        let r = d.post("/api/v1/search", Some(json!({"query": "a cat", "limit": 10}))).await.body;
        assert_eq!(r["wordsVia"], "clip", "the loaded model keeps answering: {r}");
        small_random_clip(&part);
        std::fs::rename(&part, &weights).unwrap();
        let cleared = eventually(30, || async { !d.get("/api/v1/health").await.body["problems"].to_string().contains("cannot be loaded") }).await;
        assert!(cleared, "{}", d.get("/api/v1/health").await.body);
        // SIGHUP (`systemctl reload pixdex`) loads it again too, and search keeps answering.
        d.sighup();
        assert!(eventually(30, || async { d.log().contains("SIGHUP: model reloaded") }).await, "{}", d.log());
        let r = d.post("/api/v1/search", Some(json!({"query": "a cat", "limit": 10}))).await.body;
        assert_eq!(r["results"].as_array().unwrap().len(), 4, "{r}");
        assert!(!d.log().contains("panicked"), "{}", d.log());
    }
}
