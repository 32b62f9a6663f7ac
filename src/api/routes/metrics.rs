//! `GET /metrics`: the pipeline's own counters in Prometheus text format (version 0.0.4), for a
//! scraper. The same numbers as `GET /api/v1/training/pipeline`, plus what operators alert on
//! (failed jobs by cause, waits for the catalog and the vector store, the watcher's overflows
//! and reconciles, search latency; `docs/operations.md` says which to watch) and the process's
//! resident memory. On TCP it sits behind the token like every route but `/health`
//! (Prometheus sends it with `authorization.credentials`).

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::super::{ApiResult, St};
use crate::pipeline::PipelineStatus;

/// Prometheus' text exposition content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(st): St) -> ApiResult {
    let p = st.pipeline.status();
    let points = st.pipeline.points().await;
    let w = st.watcher.status().await;
    let mut out = render_pipeline(&p, points);
    out.push_str(&render_faults(&st.pipeline.fault_counters()));
    out.push_str(&render_search(&st.search.latency().snapshot()));
    let mut m = Metrics(&mut out);
    m.family("pixdex_watcher_pending_paths", "gauge", "Paths changed on disk and not yet applied to the catalog.");
    m.sample("pixdex_watcher_pending_paths", &[], w.pending_paths as f64);
    m.family("pixdex_watcher_events_total", "counter", "Filesystem events the watcher has seen.");
    m.sample("pixdex_watcher_events_total", &[], w.events_seen as f64);
    m.family("pixdex_watcher_overflows_total", "counter", "Event queue overflows (each answered by a full reconcile).");
    m.sample("pixdex_watcher_overflows_total", &[], w.overflows as f64);
    m.family("pixdex_watcher_reconciles_total", "counter", "Reconciles of the catalog with the disk (at start, periodic, after overflows, scans).");
    m.sample("pixdex_watcher_reconciles_total", &[], w.reconciles as f64);
    if let Some(ms) = w.last_reconcile_ms {
        m.family("pixdex_watcher_last_reconcile_seconds", "gauge", "How long the last reconcile took.");
        m.sample("pixdex_watcher_last_reconcile_seconds", &[], ms as f64 / 1000.0);
    }
    m.family("pixdex_watcher_unreadable_folders", "gauge", "Folders that exist but cannot be read (their assets are kept).");
    m.sample("pixdex_watcher_unreadable_folders", &[], w.unreadable.len() as f64);
    m.family("pixdex_watcher_unavailable_folders", "gauge", "Folders that are away: unmounted mount points, missing roots (their assets are kept).");
    m.sample("pixdex_watcher_unavailable_folders", &[], w.unavailable.len() as f64);
    m.family("pixdex_catalog_assets", "gauge", "Images in the catalog under the watched roots.");
    m.sample("pixdex_catalog_assets", &[], w.assets_known as f64);
    if let Some(rss) = resident_bytes() {
        m.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        m.sample("process_resident_memory_bytes", &[], rss as f64);
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response())
}

/// The pipeline's families: one sample per stage for the per-stage ones.
pub(crate) fn render_pipeline(p: &PipelineStatus, points: Option<u64>) -> String {
    let mut out = String::new();
    let mut m = Metrics(&mut out);
    m.family("pixdex_pipeline_running", "gauge", "1 when the pipeline runs, 0 when it is disabled (health says why).");
    m.sample("pixdex_pipeline_running", &[], if p.running { 1.0 } else { 0.0 });
    m.family("pixdex_pipeline_waiting", "gauge", "1 while writing waits for the vector store or the catalog to come back (nothing fails meanwhile).");
    m.sample("pixdex_pipeline_waiting", &[], if p.waiting_for.is_some() { 1.0 } else { 0.0 });
    m.family("pixdex_pipeline_batch_size", "gauge", "Images per model batch.");
    m.sample("pixdex_pipeline_batch_size", &[], p.batch_size as f64);
    m.family("pixdex_images_completed_total", "counter", "Jobs the pipeline completed since the daemon started.");
    m.sample("pixdex_images_completed_total", &[], p.completed as f64);
    m.family("pixdex_images_per_second", "gauge", "Completed images per second over the last minute of work.");
    m.sample("pixdex_images_per_second", &[], p.images_per_second);
    type Field = fn(&crate::pipeline::StageStatus) -> f64;
    let per_stage: [(&str, &str, &str, Field); 7] = [
        ("pixdex_stage_items_total", "counter", "Items a stage has handled.", |s| s.items as f64),
        ("pixdex_stage_failures_total", "counter", "Items a stage failed (each fails its own job only).", |s| s.failures as f64),
        ("pixdex_stage_busy_seconds_total", "counter", "Time a stage's workers spent working, summed over workers.", |s| s.busy_ms as f64 / 1000.0),
        ("pixdex_stage_busy_share", "gauge", "Busy time over wall time per worker since start (1 = saturated).", |s| s.busy_share),
        ("pixdex_stage_workers", "gauge", "Threads a stage runs on.", |s| s.workers as f64),
        ("pixdex_stage_queue_depth", "gauge", "Items waiting in the bounded channel into a stage.", |s| s.queue_depth as f64),
        ("pixdex_stage_queue_capacity", "gauge", "Capacity of the bounded channel into a stage.", |s| s.queue_capacity as f64),
    ];
    for (name, kind, help, field) in per_stage {
        m.family(name, kind, help);
        for s in &p.stages {
            m.sample(name, &[("stage", s.name)], field(s));
        }
    }
    if let Some(n) = points {
        m.family("pixdex_vector_points", "gauge", "Points in the vector store.");
        m.sample("pixdex_vector_points", &[], n as f64);
    }
    out
}

/// Failed jobs by cause; waits of the writer for an unavailable catalog or vector store.
pub(crate) fn render_faults(f: &crate::pipeline::FaultCounters) -> String {
    let mut out = String::new();
    let mut m = Metrics(&mut out);
    m.family(
        "pixdex_jobs_failed_total",
        "counter",
        "Jobs failed since start, by cause: file (unreadable, undecodable, too large), model (run-time error), vector_store (point refused), crash (a stage panicked: a bug), attempts (given up after pipeline.max_attempts claims).",
    );
    for (cause, n) in &f.failed {
        m.sample("pixdex_jobs_failed_total", &[("cause", cause)], *n as f64);
    }
    m.family(
        "pixdex_pipeline_waits_total",
        "counter",
        "Retries of the writer after the catalog or the vector store was unavailable (nothing fails meanwhile).",
    );
    for (store, n, _) in &f.waits {
        m.sample("pixdex_pipeline_waits_total", &[("store", store)], *n as f64);
    }
    m.family("pixdex_pipeline_wait_seconds_total", "counter", "Time the writer spent waiting for the catalog or the vector store to come back.");
    for (store, _, secs) in &f.waits {
        m.sample("pixdex_pipeline_wait_seconds_total", &[("store", store)], *secs);
    }
    out
}

/// The search latency histogram, one series per kind of search.
pub(crate) fn render_search(kinds: &[(&str, crate::search::HistogramSnapshot)]) -> String {
    const NAME: &str = "pixdex_search_duration_seconds";
    let mut out = String::new();
    let mut m = Metrics(&mut out);
    m.family(NAME, "histogram", "Time to answer a search (words, image, similar), refused ones included.");
    for (kind, h) in kinds {
        for (le, n) in &h.buckets {
            m.sample(&format!("{NAME}_bucket"), &[("kind", kind), ("le", &le.to_string())], *n as f64);
        }
        m.sample(&format!("{NAME}_bucket"), &[("kind", kind), ("le", "+Inf")], h.count as f64);
        m.sample(&format!("{NAME}_sum"), &[("kind", kind)], h.sum_seconds);
        m.sample(&format!("{NAME}_count"), &[("kind", kind)], h.count as f64);
    }
    out
}

struct Metrics<'a>(&'a mut String);

impl Metrics<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident set size from `/proc/self/status` (Linux; None elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim();
    Some(kb.parse::<u64>().ok()? * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::StageStatus;

    fn stage(name: &'static str, items: u64) -> StageStatus {
        StageStatus { name, items, failures: 1, busy_ms: 1500, busy_share: 0.25, workers: 2, queue_depth: 3, queue_capacity: 8 }
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family_and_parses() {
        let p = PipelineStatus {
            running: true,
            reason: None,
            model_problem: None,
            device: Some("cpu".into()),
            model: "m".into(),
            batch_size: 16,
            jpeg_decoder: "libjpeg-turbo",
            vector_store: None,
            images_per_second: 12.5,
            waiting_for: Some("vector store unavailable".into()),
            completed: 40,
            stages: vec![stage("decode", 41), stage("embed", 40)],
        };
        let text = render_pipeline(&p, Some(40));
        let mut declared = std::collections::HashSet::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                declared.insert(it.next().unwrap().to_string());
                assert!(matches!(it.next(), Some("counter" | "gauge")), "{line}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(declared.contains(name), "{name} sampled before its # TYPE");
            value.parse::<f64>().unwrap_or_else(|_| panic!("value of {line}"));
            samples += 1;
        }
        assert_eq!(samples, 5 + 7 * 2 + 1);
        assert!(text.contains("pixdex_pipeline_waiting 1\n"), "{text}");
        assert!(text.contains("pixdex_stage_items_total{stage=\"decode\"} 41\n"), "{text}");
        assert!(text.contains("pixdex_stage_busy_seconds_total{stage=\"embed\"} 1.5\n"), "{text}");
        assert!(text.contains("pixdex_images_per_second 12.5\n"), "{text}");
        assert!(text.contains("pixdex_vector_points 40\n"), "{text}");
    }

    #[test]
    fn faults_and_search_histogram_render() {
        let f = crate::pipeline::FaultCounters { failed: vec![("file", 2), ("attempts", 0)], waits: vec![("catalog", 3, 1.5), ("vector_store", 0, 0.0)] };
        let text = render_faults(&f);
        assert!(text.contains("pixdex_jobs_failed_total{cause=\"file\"} 2\n"), "{text}");
        assert!(text.contains("pixdex_pipeline_waits_total{store=\"catalog\"} 3\n"), "{text}");
        assert!(text.contains("pixdex_pipeline_wait_seconds_total{store=\"catalog\"} 1.5\n"), "{text}");
        let h = crate::search::Histogram::default();
        h.observe(std::time::Duration::from_millis(20));
        h.observe(std::time::Duration::from_secs(30));
        let text = render_search(&[("words", h.snapshot())]);
        assert!(text.contains("# TYPE pixdex_search_duration_seconds histogram\n"), "{text}");
        assert!(text.contains("pixdex_search_duration_seconds_bucket{kind=\"words\",le=\"0.01\"} 0\n"), "{text}");
        assert!(text.contains("pixdex_search_duration_seconds_bucket{kind=\"words\",le=\"0.025\"} 1\n"), "{text}");
        assert!(text.contains("pixdex_search_duration_seconds_bucket{kind=\"words\",le=\"10\"} 1\n"), "{text}");
        assert!(text.contains("pixdex_search_duration_seconds_bucket{kind=\"words\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("pixdex_search_duration_seconds_count{kind=\"words\"} 2\n"), "{text}");
        assert!(text.contains("pixdex_search_duration_seconds_sum{kind=\"words\"} 30.02\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
