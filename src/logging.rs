//! The daemon's log: tracing to standard error, as text (coloured only on a terminal, so a
//! file or journald gets plain lines) or, with `log.format = "json"` / `PIXDEX_LOG_FORMAT=json`,
//! one JSON object per line for log shippers: `timestamp`, `level`, `target`, `message` and the
//! event's fields at the top level.

use std::io::IsTerminal;

use crate::config::LogFormat;

/// Install the global subscriber. `filter` is `daemon.log`; `RUST_LOG` overrides it.
pub fn init(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.with_ansi(false).json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
}
