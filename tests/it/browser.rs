//! The web app's whole journey in a real browser: Debian's headless Chromium driven by
//! `tests/browser/journey.mjs` (puppeteer-core; nothing downloads a browser). `.ci/run`
//! installs Chromium and the script's npm packages and sets `PIXDEX_REQUIRE_BROWSER=1`; without
//! them the test says SKIPPED. `PIXDEX_SHOTS=DIR` keeps the screenshots (README's pictures).

use std::path::Path;
use std::process::Command;

use crate::harness::{Db, TestDaemon, model_toml, repo_dir, sample};

fn browser_ready() -> Result<(), String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no Chromium at {chromium} (apt-get install -y chromium)"));
    }
    if !repo_dir().join("tests/browser/node_modules/puppeteer-core").is_dir() {
        return Err("tests/browser/node_modules is missing (cd tests/browser && npm ci)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is not installed".into());
    }
    Ok(())
}

/// Images in the folder of the session the journey cancels.
const BIG: u32 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_app_journey_in_chromium() {
    if let Err(why) = browser_ready() {
        if std::env::var("PIXDEX_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("PIXDEX_REQUIRE_BROWSER=1 but {why}");
        }
        eprintln!("SKIPPED browser::web_app_journey_in_chromium: {why}");
        return;
    }
    let (d, addr) = TestDaemon::start_tcp(Db::Sqlite, "", &model_toml(4), |root| {
        for (dir, name) in [("photos", "chelsea.png"), ("photos", "coffee.png"), ("more", "astronaut.png"), ("more", "rocket.jpg")] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::copy(sample(name), root.join(dir).join(name)).unwrap();
        }
        // A byte-identical copy: embedded once, shown as "+1 similar copy" on the cat's card.
        std::fs::copy(sample("chelsea.png"), root.join("photos/zz-copy-of-chelsea.png")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        // A folder with no image, only another file: listed everywhere, as without images.
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/notes.txt"), "not an image\n").unwrap();
        // An image cut in half: one failed job, its reason shown in the failed-jobs table.
        let rocket = std::fs::read(sample("rocket.jpg")).unwrap();
        std::fs::write(root.join("photos/broken.jpg"), &rocket[..rocket.len() / 2]).unwrap();
        // BIG distinct small images the first session leaves out: a second session over them is
        // cancelled while it runs (some indexed, the rest never).
        std::fs::create_dir_all(root.join("big")).unwrap();
        for i in 0..BIG {
            // Noise from a per-image seed: no two alike, not even to a perceptual hash.
            let mut seed = 0x9e37_79b9_u32.wrapping_mul(i + 1);
            let img = image::RgbImage::from_fn(48, 48, |_, _| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let [r, g, b, _] = seed.to_be_bytes();
                image::Rgb([r, g, b])
            });
            img.save(root.join(format!("big/b{i:03}.png"))).unwrap();
        }
    })
    .await;
    let token = std::fs::read_to_string(d.dir.path().join("data/token")).unwrap().trim().to_string();
    let shots = std::env::var("PIXDEX_SHOTS").unwrap_or_default();
    let out = Command::new("node")
        .arg(repo_dir().join("tests/browser/journey.mjs"))
        .env("PIXDEX_URL", format!("http://{addr}"))
        .env("PIXDEX_LOGIN", format!("http://{addr}/?token={token}"))
        .env("PIXDEX_ROOT", d.root.display().to_string())
        .env("PIXDEX_PICK", d.root.join("photos/coffee.png"))
        .env("PIXDEX_DROP", d.root.join("more/astronaut.png"))
        .env("PIXDEX_BIG", BIG.to_string())
        .env("PIXDEX_SHOTS", shots)
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser journey failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- daemon\n{}", d.log());
    assert!(stdout.contains("journey: ok"), "{stdout}");
    // The timings (README's table): shown with --nocapture.
    println!("{stdout}");
}

/// A running session that waits for a model whose weights are not there yet (issue 24 §4), in
/// Chromium: the Sessions list and the session page say what it waits for, with the fix as code;
/// the weights moved into place, the model loads without a restart and the line goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_model_shows_in_the_web_app() {
    if let Err(why) = browser_ready() {
        if std::env::var("PIXDEX_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
            panic!("PIXDEX_REQUIRE_BROWSER=1 but {why}");
        }
        eprintln!("SKIPPED browser::waiting_for_the_model_shows_in_the_web_app: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("later.safetensors");
    let (d, addr) = TestDaemon::start_tcp(Db::Sqlite, "", &crate::clip::clip_toml(&weights), |root| {
        std::fs::create_dir_all(root.join("photos")).unwrap();
        for name in ["chelsea.png", "coffee.png"] {
            std::fs::copy(sample(name), root.join("photos").join(name)).unwrap();
        }
    })
    .await;
    let id = d.create(serde_json::json!({"name": "early", "rootPath": d.root.display().to_string()})).await;
    assert_eq!(d.action(id, "start").await.status, 200);
    let token = std::fs::read_to_string(d.dir.path().join("data/token")).unwrap().trim().to_string();
    let run = |phase: &str| {
        let out = Command::new("node")
            .arg(repo_dir().join("tests/browser/waiting.mjs"))
            .env("PIXDEX_URL", format!("http://{addr}"))
            .env("PIXDEX_LOGIN", format!("http://{addr}/?token={token}"))
            .env("PIXDEX_SESSION", id.to_string())
            .env("PIXDEX_PHASE", phase)
            .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
            .output()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("waiting journey: ok"),
            "{phase}\n{stdout}\n{}\n--- daemon\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    };
    run("waiting");
    let part = dir.path().join("later.part");
    crate::clip::small_random_clip(&part);
    std::fs::rename(&part, &weights).unwrap();
    crate::pipeline::wait_status(&d, id, "completed", 120).await;
    run("done");
}
