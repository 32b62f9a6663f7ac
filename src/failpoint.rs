//! Fault injection for the test suite: `PIXDEX_FAILPOINT=<stage>:<substring>` makes a pipeline
//! stage (`resize`, `embed`, `write`) panic on a job whose path contains the substring, so the
//! tests can prove that a panicking stage fails only the item in hand and keeps running;
//! `discovery:<substring>` aborts the process after a session discovery's first batch there. Read
//! once at first use; unset (the normal case) it costs one `OnceLock` read per item.

use std::sync::OnceLock;

static POINT: OnceLock<Option<(String, String)>> = OnceLock::new();

fn point() -> &'static Option<(String, String)> {
    POINT.get_or_init(|| {
        let v = std::env::var("PIXDEX_FAILPOINT").ok()?;
        let (stage, needle) = v.split_once(':')?;
        tracing::warn!(stage, needle, "PIXDEX_FAILPOINT is set: this stage will panic on matching files (a test hook)");
        Some((stage.to_string(), needle.to_string()))
    })
}

/// Panic here when the failpoint names this stage and the path matches.
pub fn check(stage: &str, path: &str) {
    if let Some((s, needle)) = point()
        && s == stage
        && path.contains(needle.as_str())
    {
        panic!("failpoint: {stage} stage on {path}");
    }
}

/// Abort the whole process here (no unwinding, no cleanup: a crash or `kill -9`) when the
/// failpoint names this stage and the path matches — for tests of work resumed after a crash.
pub fn abort_if(stage: &str, path: &str) {
    if let Some((s, needle)) = point()
        && s == stage
        && path.contains(needle.as_str())
    {
        tracing::error!(stage, path, "failpoint: aborting the process");
        std::process::abort();
    }
}
