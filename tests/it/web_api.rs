//! The web over TCP: the replaced UI's requests replayed exactly as its client code sends them
//! (github MacPhobos/image-search-ui, `src/lib/api/*.ts`: `Content-Type: application/json` on
//! every call, a cross-origin browser page), checking every field its types mark required; the
//! TCP listener's guard (token, cookie login, Host, Origin, 415); containment of every path a
//! request names; images, thumbnails and their failure modes.

use std::path::Path;

use hyper::Method;
use pixdex::api::client::{Client, Endpoint, RawResponse};
use serde_json::{Value, json};

use crate::harness::{Db, TestDaemon, eventually, model_toml, sample};

const ORIGIN: &str = "http://localhost:3000";
const T: &str = "/api/v1/training";

/// As the replaced UI's `apiRequest`: JSON content type on every call, the page's Origin.
async fn ui(c: &Client, m: Method, path: &str, body: Option<Value>) -> RawResponse {
    c.raw(m, path, &[("content-type", "application/json"), ("origin", ORIGIN)], body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .await
        .expect("request")
}

fn require(v: &Value, fields: &[&str], what: &str) {
    for f in fields {
        assert!(v.get(*f).is_some(), "{what} lacks the required field {f}: {v}");
    }
}

fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn ui_library(root: &Path) {
    for (dir, name) in [("photos", "chelsea.png"), ("photos", "coffee.png"), ("more", "astronaut.png")] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::copy(sample(name), root.join(dir).join(name)).unwrap();
    }
    std::fs::write(root.join("more/broken.jpg"), b"this is not an image").unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_ui_journey() {
    let lines = format!("tcp_auth = \"none\"\ncors_origins = [\"{ORIGIN}\"]\n");
    let (d, addr) = TestDaemon::start_tcp(Db::Sqlite, &lines, &model_toml(4), ui_library).await;
    let c = Client::new(Endpoint::Tcp(addr.clone()));
    let root = d.root.display().to_string();

    // CORS: every call of the UI is preflighted (it sets Content-Type: application/json).
    let pre = c
        .raw(
            Method::OPTIONS,
            &format!("{T}/sessions?page=1&page_size=50"),
            &[("origin", ORIGIN), ("access-control-request-method", "GET"), ("access-control-request-headers", "content-type")],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some(ORIGIN));
    assert!(pre.header("access-control-allow-methods").unwrap().contains("DELETE"));

    // Header dot: GET /health → {"status": "ok"}.
    let h = ui(&c, Method::GET, "/health", None).await;
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")), "{:?}", h.json());
    assert_eq!(h.header("access-control-allow-origin"), Some(ORIGIN));

    // Categories: the default "General" exists; create, edit.
    let r = ui(&c, Method::GET, "/api/v1/categories?page=1&page_size=100", None).await;
    let cats = r.json();
    require(&cats, &["items", "total", "page", "pageSize", "hasMore"], "PaginatedCategoryResponse");
    let general = cats["items"].as_array().unwrap().iter().find(|c| c["isDefault"] == true).expect("a default category").clone();
    require(&general, &["id", "name", "description", "color", "isDefault", "createdAt", "updatedAt", "sessionCount"], "Category");
    assert_eq!(general["name"], "General");
    let r = ui(&c, Method::POST, "/api/v1/categories", Some(json!({"name": "Trips", "description": null, "color": "#3b82f6"}))).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let cat = r.json()["id"].as_i64().unwrap();
    let r = ui(&c, Method::PATCH, &format!("/api/v1/categories/{cat}"), Some(json!({"name": "Trips 2024", "description": "summer", "color": "#10B981"}))).await;
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("Trips 2024")), "{:?}", r.json());
    let r = ui(&c, Method::POST, "/api/v1/categories", Some(json!({"name": "Bad", "description": null, "color": "blue"}))).await;
    assert_eq!(r.status, 422, "{:?}", r.json());
    let r = ui(&c, Method::POST, "/api/v1/categories", Some(json!({"name": "Trips 2024", "description": null, "color": null}))).await;
    assert_eq!(r.status, 409);
    assert!(r.json()["message"].as_str().unwrap().contains("already exists"));

    // Create-session dialog: the scan (snake_case body), the directory browser, the preview.
    let r = ui(&c, Method::POST, &format!("{T}/directories/scan"), Some(json!({"root_path": root, "recursive": true}))).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let scan = r.json();
    require(&scan, &["rootPath", "subdirectories", "totalSubdirectories", "totalImages"], "DirectoryScanResponse");
    assert_eq!(scan["totalImages"], 4, "by extension: {scan}");
    let r = ui(&c, Method::GET, &format!("{T}/directories?path={}&include_training_status=true", enc(&root)), None).await;
    let dirs = r.json();
    let dirs = dirs.as_array().unwrap_or_else(|| panic!("a bare array: {dirs}"));
    for di in dirs {
        require(di, &["path", "name", "imageCount", "selected", "trainedCount", "lastTrainedAt", "trainingStatus"], "DirectoryInfo");
    }
    let photos = dirs.iter().find(|x| x["name"] == "photos").unwrap();
    assert_eq!((photos["imageCount"].as_i64(), photos["trainingStatus"].as_str()), (Some(2), Some("never")));
    let r = ui(&c, Method::GET, &format!("{T}/directories/preview?path={}", enc(&format!("{root}/photos"))), None).await;
    let prev = r.json();
    require(&prev, &["directory", "imageCount", "images"], "DirectoryPreviewResponse");
    require(&prev["images"][0], &["filename", "fullPath", "sizeBytes", "modifiedAt"], "DirectoryImageInfo");
    let full = prev["images"][0]["fullPath"].as_str().unwrap().to_string();
    let r = c.raw(Method::GET, &format!("{T}/directories/preview/thumbnail?path={}", enc(&full)), &[], vec![]).await.unwrap();
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/jpeg")));

    // Create, read, start.
    let body = json!({"name": "From the old UI", "rootPath": root, "categoryId": cat, "subdirectories": [format!("{root}/photos"), format!("{root}/more")]});
    let r = ui(&c, Method::POST, &format!("{T}/sessions"), Some(body)).await;
    assert!(r.status == 200 || r.status == 201, "{:?}", r.json());
    let id = r.json()["id"].as_i64().unwrap();
    let r = ui(&c, Method::GET, &format!("{T}/sessions?page=1&page_size=50"), None).await;
    require(&r.json(), &["items", "total", "page", "pageSize", "hasMore"], "PaginatedResponse");
    let s = ui(&c, Method::GET, &format!("{T}/sessions/{id}"), None).await.json();
    require(
        &s,
        &["id", "name", "status", "rootPath", "categoryId", "totalImages", "processedImages", "failedImages", "skippedImages", "createdAt"],
        "TrainingSession",
    );
    let r = ui(&c, Method::POST, &format!("{T}/sessions/{id}/start"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    require(&r.json(), &["sessionId", "status", "message"], "ControlResponse");

    // The progress panel until done.
    let done = eventually(120, || async {
        let p = ui(&c, Method::GET, &format!("{T}/sessions/{id}/progress-unified"), None).await.json();
        require(&p, &["sessionId", "overallStatus", "overallProgress", "phases"], "UnifiedProgressResponse");
        require(&p["overallProgress"], &["percentage", "currentPhase"], "OverallProgress");
        require(&p["phases"]["training"], &["name", "status", "progress"], "PhaseProgress");
        require(&p["phases"]["training"]["progress"], &["current", "total", "percentage"], "ProgressStats");
        p["overallStatus"] == "completed"
    })
    .await;
    assert!(done, "session did not complete:\n{}", d.log());
    let p = ui(&c, Method::GET, &format!("{T}/sessions/{id}/progress-unified"), None).await.json();
    assert_eq!((p["overallProgress"]["percentage"].as_f64(), p["overallProgress"]["currentPhase"].as_str()), (Some(100.0), Some("completed")), "{p}");
    let jobs = ui(&c, Method::GET, &format!("{T}/sessions/{id}/jobs?page=1&page_size=20"), None).await.json();
    assert_eq!(jobs["total"], 4, "{jobs}");
    for j in jobs["items"].as_array().unwrap() {
        require(
            j,
            &[
                "id",
                "sessionId",
                "assetId",
                "status",
                "progress",
                "imagePath",
                "processingTimeMs",
                "skipReason",
                "errorMessage",
                "createdAt",
                "startedAt",
                "completedAt",
            ],
            "TrainingJob",
        );
    }
    let r = ui(&c, Method::GET, &format!("{T}/directories?path={}&include_training_status=true", enc(&root)), None).await.json();
    let photos = r.as_array().unwrap().iter().find(|x| x["name"] == "photos").unwrap().clone();
    assert_eq!((photos["trainedCount"].as_i64(), photos["trainingStatus"].as_str()), (Some(2), Some("complete")), "{photos}");
    assert!(photos["lastTrainedAt"].is_string());

    // Search as the UI sends it: filters as strings (categoryId "N", dates YYYY-MM-DD).
    let q = json!({"query": "cat", "limit": 50, "offset": 0, "filters": {"categoryId": cat.to_string(), "dateFrom": "2000-01-01", "dateTo": "2999-12-31"}});
    let r = ui(&c, Method::POST, "/api/v1/search", Some(q)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let res = r.json();
    require(&res, &["results", "total", "query"], "SearchResponse");
    let first = &res["results"][0];
    require(first, &["asset", "score", "highlights"], "SearchResult");
    require(&first["asset"], &["id", "path", "filename", "url", "thumbnailUrl", "createdAt"], "Asset");
    assert_eq!(first["asset"]["filename"], "chelsea.png", "{res}");
    let thumb_url = first["asset"]["thumbnailUrl"].as_str().unwrap().to_string();
    let full_url = first["asset"]["url"].as_str().unwrap().to_string();
    assert!(thumb_url.starts_with("/api/v1/images/") && full_url.starts_with("/api/v1/images/"), "root-relative: {first}");
    let r =
        ui(&c, Method::POST, "/api/v1/search", Some(json!({"query": "cat", "limit": 50, "offset": 0, "filters": {"categoryId": general["id"].to_string()}})))
            .await
            .json();
    assert_eq!(r["results"].as_array().unwrap().len(), 0, "another category holds nothing: {r}");
    let r = ui(&c, Method::POST, "/api/v1/search", Some(json!({"query": "cat", "filters": {"dateTo": "2001-01-01"}}))).await.json();
    assert_eq!(r["results"].as_array().unwrap().len(), 0, "nothing indexed before 2001: {r}");

    // Images: thumbnail (256 px JPEG, ETag, 304), the original bytes, batch.
    let t = c.raw(Method::GET, &thumb_url, &[], vec![]).await.unwrap();
    assert_eq!((t.status, t.header("content-type")), (200, Some("image/jpeg")));
    let img = image::load_from_memory(&t.body).unwrap();
    assert_eq!(img.width().max(img.height()), 256);
    let etag = t.header("etag").unwrap().to_string();
    assert!(t.header("cache-control").is_some());
    let t2 = c.raw(Method::GET, &thumb_url, &[("if-none-match", &etag)], vec![]).await.unwrap();
    assert_eq!(t2.status, 304);
    let f = c.raw(Method::GET, &full_url, &[], vec![]).await.unwrap();
    assert_eq!((f.status, f.header("content-type")), (200, Some("image/png")));
    assert_eq!(f.body.as_ref(), std::fs::read(d.root.join("photos/chelsea.png")).unwrap().as_slice());
    let aid = first["asset"]["id"].as_i64().unwrap();
    let b = ui(&c, Method::POST, "/api/v1/images/thumbnails/batch", Some(json!({"assetIds": [aid, 987654]}))).await.json();
    assert!(b["thumbnails"][aid.to_string()].as_str().unwrap().starts_with("data:image/jpeg;base64,"), "{b}");
    assert_eq!((b["found"].as_i64(), b["notFound"][0].as_i64()), (Some(1), Some(987654)));
    let a = ui(&c, Method::GET, "/api/v1/assets?page=1&page_size=10", None).await.json();
    assert_eq!(a["total"], 4, "{a}");
    let broken = a["items"].as_array().unwrap().iter().find(|x| x["filename"] == "broken.jpg").unwrap()["id"].as_i64().unwrap();
    // A file that cannot be decoded: a placeholder that says why, never a 500.
    let t = c.raw(Method::GET, &format!("/api/v1/images/{broken}/thumbnail"), &[], vec![]).await.unwrap();
    assert_eq!((t.status, t.header("content-type")), (200, Some("image/svg+xml")));
    let why = t.header("x-pixdex-image-error").unwrap();
    assert!(why.contains("broken.jpg") && why.contains("indexing failed"), "{why}");
    let r = ui(&c, Method::GET, "/api/v1/images/424242/thumbnail", None).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains("424242"));

    // Restart (failed only, the default): the broken file's job runs again; cleanup_stats in
    // both spellings.
    let r = c.raw(Method::POST, &format!("{T}/sessions/{id}/restart-training"), &[("origin", ORIGIN)], vec![]).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    let rr = r.json();
    assert_eq!((rr["cleanup_stats"]["items_reset"].as_i64(), rr["cleanupStats"]["items_preserved"].as_i64()), (Some(1), Some(3)), "{rr}");
    assert!(eventually(60, || async { ui(&c, Method::GET, &format!("{T}/sessions/{id}"), None).await.json()["status"] == "completed" }).await);
    let r = c.raw(Method::POST, &format!("{T}/sessions/{id}/restart-faces"), &[], vec![]).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.json()["detail"].as_str().unwrap().contains("face"));

    // Category in use cannot be deleted; the default never; an unused one can (204).
    let r = ui(&c, Method::DELETE, &format!("/api/v1/categories/{cat}"), None).await;
    assert_eq!(r.status, 409);
    assert!(r.json()["message"].as_str().unwrap().contains("1 training session"), "{:?}", r.json());
    let r = ui(&c, Method::DELETE, &format!("/api/v1/categories/{}", general["id"]), None).await;
    assert_eq!(r.status, 400);
    let spare =
        ui(&c, Method::POST, "/api/v1/categories", Some(json!({"name": "Spare", "description": null, "color": null}))).await.json()["id"].as_i64().unwrap();
    let r = ui(&c, Method::DELETE, &format!("/api/v1/categories/{spare}"), None).await;
    assert_eq!((r.status, r.body.len()), (204, 0));

    // Features pixdex does not have: the search page's two loads are empty lists; the rest 404
    // JSON naming the feature. Unknown routes: 404 JSON.
    let r = ui(&c, Method::GET, "/api/v1/faces/persons?page=1&page_size=1000&status=active", None).await;
    assert_eq!((r.status, r.json()["items"].as_array().map(|a| a.len())), (200, Some(0)));
    for path in ["/api/v1/queues", "/api/v1/workers", "/api/v1/vectors/directories/stats", "/api/v1/faces/clusters?page=1", "/api/v1/config/face-matching"] {
        let r = ui(&c, Method::GET, path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["message"].as_str().unwrap().contains("pixdex does not have"), "{path}: {:?}", r.json());
    }
    let r = ui(&c, Method::GET, "/api/v1/nothing/here", None).await;
    assert_eq!(r.status, 404);
    require(&r.json(), &["detail", "message"], "error");
    // pixdex's own routes stay, on the same listener.
    let r = ui(&c, Method::GET, &format!("{T}/sessions/{id}/progress"), None).await;
    assert_eq!(r.status, 200);
    let (code, out, _) = d.ctl(&["sessions", "list"]);
    assert_eq!(code, 0, "{out}");
}

const TOKEN: &str = "test-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_guard() {
    let lines = format!("token = \"{TOKEN}\"\nallowed_hosts = [\"photos.lan\"]\ncors_origins = [\"http://good.example\"]\nmax_upload_mb = 1\n");
    let (d, addr) = TestDaemon::start_tcp(Db::Sqlite, &lines, "", |_| {}).await;
    let anon = Client::new(Endpoint::Tcp(addr.clone()));
    let auth = Client::new(Endpoint::Tcp(addr.clone())).with_token(Some(TOKEN.into()));
    let sessions = format!("{T}/sessions");

    // Without the token: 401 JSON saying how to get in; /health and the page are public.
    let r = anon.raw(Method::GET, &sessions, &[], vec![]).await.unwrap();
    assert_eq!(r.status, 401);
    assert!(r.json()["detail"].as_str().unwrap().contains("token") && r.header("www-authenticate").is_some(), "{:?}", r.json());
    for path in [&format!("{T}/sessions/1/start"), "/api/v1/search", "/api/v1/images/1/full"] {
        let r = anon.raw(Method::POST, path, &[("content-type", "application/json")], b"{}".to_vec()).await.unwrap();
        assert_eq!(r.status, 401, "{path}");
    }
    assert_eq!(anon.raw(Method::GET, "/health", &[], vec![]).await.unwrap().status, 200);
    let page = anon.raw(Method::GET, "/", &[], vec![]).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    // Bearer, or the cookie the login link sets (HttpOnly, SameSite=Strict); a wrong token none.
    assert_eq!(auth.raw(Method::GET, &sessions, &[], vec![]).await.unwrap().status, 200);
    let wrong = Client::new(Endpoint::Tcp(addr.clone())).with_token(Some("test-token-0123456789abcdeX".into()));
    assert_eq!(wrong.raw(Method::GET, &sessions, &[], vec![]).await.unwrap().status, 401);
    let login = anon.raw(Method::GET, &format!("/?token={TOKEN}"), &[], vec![]).await.unwrap();
    assert_eq!(login.status, 303);
    let cookie = login.header("set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(anon.raw(Method::GET, &sessions, &[("cookie", &pair)], vec![]).await.unwrap().status, 200);
    let bad = anon.raw(Method::GET, "/?token=nope", &[], vec![]).await.unwrap();
    assert_eq!((bad.status, bad.header("set-cookie"), bad.header("location")), (303, None, Some("/?login=failed")));

    // DNS rebinding: a foreign Host is refused even with the token; allowed_hosts admits.
    let r = auth.raw(Method::GET, &sessions, &[("host", "evil.example")], vec![]).await.unwrap();
    assert_eq!(r.status, 403);
    assert!(r.json()["detail"].as_str().unwrap().contains("allowed_hosts"));
    assert_eq!(auth.raw(Method::GET, &sessions, &[("host", "photos.lan:8000")], vec![]).await.unwrap().status, 200);
    // Cross-site: a mutating request from a foreign Origin is 403, a preflight from it too; a
    // text/plain body (what a form can send) is 415 on a JSON route.
    let r = auth
        .raw(Method::POST, "/api/v1/categories", &[("origin", "http://evil.example"), ("content-type", "application/json")], br#"{"name":"x"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{:?}", r.json());
    let r =
        anon.raw(Method::OPTIONS, "/api/v1/categories", &[("origin", "http://evil.example"), ("access-control-request-method", "POST")], vec![]).await.unwrap();
    assert_eq!(r.status, 403);
    let r =
        anon.raw(Method::OPTIONS, "/api/v1/categories", &[("origin", "http://good.example"), ("access-control-request-method", "POST")], vec![]).await.unwrap();
    assert_eq!((r.status, r.header("access-control-allow-origin")), (204, Some("http://good.example")));
    let r = auth.raw(Method::POST, "/api/v1/categories", &[("content-type", "text/plain")], br#"{"name":"x"}"#.to_vec()).await.unwrap();
    assert_eq!(r.status, 415, "{:?}", r.json());
    assert!(r.json()["message"].as_str().unwrap().contains("application/json"));
    let same = format!("http://{addr}");
    let r = auth
        .raw(Method::POST, "/api/v1/categories", &[("origin", &same), ("content-type", "application/json")], br#"{"name":"Same origin"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "same-origin writes pass: {:?}", r.json());

    // Bad input: huge page numbers, oversized uploads, malformed bodies → 4xx JSON.
    for q in ["page=9223372036854775807", "page=4611686018427387905&page_size=4", "page=-1"] {
        let r = auth.raw(Method::GET, &format!("{sessions}?{q}"), &[], vec![]).await.unwrap();
        assert_eq!(r.status, 400, "{q}: {:?}", r.json());
    }
    let big = vec![0u8; 2 * 1024 * 1024];
    let r = auth.raw(Method::POST, "/api/v1/search/image", &[("content-type", "image/jpeg")], big).await.unwrap();
    assert_eq!(r.status, 413);
    require(&r.json(), &["detail", "message"], "413");
    let r = auth.raw(Method::POST, "/api/v1/search", &[("content-type", "application/json")], b"{not json".to_vec()).await.unwrap();
    assert_eq!(r.status, 400);
    // The control socket is unaffected (its file mode protects it).
    assert_eq!(d.get(&sessions).await.status, 200);
    // ctl over TCP reads the configured token.
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["--config"])
        .arg(&d.config_path)
        .args(["ctl", "--tcp", &addr, "sessions", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_token_and_login_link() {
    let (d, addr) = TestDaemon::start_tcp(Db::Sqlite, "", "", |_| {}).await;
    use std::os::unix::fs::PermissionsExt;
    let file = d.dir.path().join("data/token");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.len() >= 32);
    assert!(d.log().contains(&format!("http://{addr}/?token={token}")), "{}", d.log());
    let c = Client::new(Endpoint::Tcp(addr)).with_token(Some(token));
    assert_eq!(c.raw(Method::GET, "/api/v1/library", &[], vec![]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_stay_inside_the_roots() {
    let d = TestDaemon::start(Db::Sqlite, "", |root| {
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::copy(sample("coffee.png"), root.join("in/coffee.png")).unwrap();
    })
    .await;
    let outside = d.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(sample("coffee.png"), outside.join("secret.png")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.png"), d.root.join("in/link.png")).unwrap();
    std::os::unix::fs::symlink(&outside, d.root.join("linkdir")).unwrap();
    let root = d.root.display().to_string();

    // Search by path: outside files are refused alike whether they exist or not, before
    // anything is opened (no "content is text" for /etc/passwd).
    let mut answers = Vec::new();
    for p in [
        "/etc/passwd".to_string(),
        format!("{root}/../../../etc/passwd"),
        outside.join("secret.png").display().to_string(),
        outside.join("missing.png").display().to_string(),
        format!("{root}/in/link.png"),
    ] {
        let r = d.post("/api/v1/search/image", Some(json!({"path": p}))).await;
        assert_eq!(r.status, 403, "{p}: {:?}", r.body);
        answers.push(r.detail().replace(&p, "P"));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "refusals must not reveal whether a path exists: {answers:?}");
    // Every other path a request names.
    let enc_out = enc(&outside.display().to_string());
    for path in [
        format!("{T}/directories?path={enc_out}"),
        format!("{T}/directories/preview?path={enc_out}"),
        format!("{T}/directories/preview/thumbnail?path={}", enc(&outside.join("secret.png").display().to_string())),
        format!("{T}/directories/preview/thumbnail?path={}", enc(&format!("{root}/in/link.png"))),
        "/api/v1/assets?path_prefix=/etc".to_string(),
    ] {
        let r = d.get(&path).await;
        assert_eq!(r.status, 403, "{path}: {:?}", r.body);
        require(&r.body, &["detail", "message"], &path);
    }
    let r = d.post(&format!("{T}/directories/scan"), Some(json!({"rootPath": "/etc"}))).await;
    assert_eq!(r.status, 403);
    // A symlinked folder leading out is not offered as a subdirectory.
    let r = d.post(&format!("{T}/directories/scan"), Some(json!({"rootPath": root}))).await;
    let names: Vec<&str> = r.body["subdirectories"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["in"], "{:?}", r.body);
    // The admission preview the web app uses: the same verdicts as a stored session's.
    let r = d.post(&format!("{T}/admission"), Some(json!({"rootPath": root, "subdirectories": [], "listed": 1}))).await;
    assert_eq!((r.status, r.body["canStart"].as_bool()), (200, Some(false)), "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains("none is selected"), "{:?}", r.body);
    let r = d.post(&format!("{T}/admission"), Some(json!({"rootPath": root, "subdirectories": [format!("{root}/in")], "listed": 1}))).await;
    assert_eq!(r.body["canStart"], true, "{:?}", r.body);
}
