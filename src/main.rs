//! `pixdex`: the daemon, its control client and config tools. Only wiring lives here.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixdex::config::Config;
use pixdex::ctl::CtlArgs;

#[derive(Parser)]
#[command(name = "pixdex", version, about = "Keeps an image library indexed for search")]
struct Cli {
    /// Config file (TOML). Defaults ← this file ← PIXDEX_SECTION__KEY environment variables.
    #[arg(long, global = true, env = "PIXDEX_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: catalog, control socket, config sessions.
    Daemon,
    /// Drive a running daemon over its control socket.
    Ctl(CtlArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run images through the model (same decode/resize/model code as the pipeline): top-5
    /// labels, or with --json one object per file with the whole embedding.
    Embed {
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Measure device throughput at these batch sizes instead (e.g. 1,8,32).
        #[arg(long, value_delimiter = ',')]
        bench_batches: Vec<usize>,
        /// Batches per measurement with --bench-batches.
        #[arg(long, default_value_t = 20)]
        iters: usize,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration (defaults ← file ← environment), secrets masked.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = cli.config.as_deref();
    match cli.cmd {
        Cmd::Config(ConfigCmd::Show) => config_show(file),
        Cmd::Daemon => daemon(file),
        Cmd::Embed { files, json, bench_batches, iters } => embed(file, &files, json, &bench_batches, iters),
        Cmd::Ctl(args) => ExitCode::from(pixdex::ctl::main(file, &args) as u8),
    }
}

/// A configuration error: printed, exit code 2.
fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// `pixdex config show`: the effective configuration, secrets masked.
fn config_show(file: Option<&Path>) -> ExitCode {
    let raw = match Config::load_raw(file) {
        Ok(r) => r,
        Err(e) => return config_error(e),
    };
    match Config::validate(raw.clone(), file) {
        Ok(cfg) => {
            print!("{}", Config::show(&raw, &cfg));
            ExitCode::SUCCESS
        }
        Err(e) => config_error(e),
    }
}

/// `pixdex daemon`: logging, a runtime, `daemon::run` until a signal stops it.
fn daemon(file: Option<&Path>) -> ExitCode {
    let cfg = match Config::load(file) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    // Text (colour only on a terminal) or JSON lines (`log.format`).
    pixdex::logging::init(&cfg.log, cfg.log_format);
    let json = cfg.log_format == pixdex::config::LogFormat::Json;
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let ran = rt.block_on(pixdex::daemon::run(cfg));
    // A blocking task still running (a handler's walk or store call whose connection was
    // dropped at shutdown) must not hold the exit: the daemon has shut down.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json => {
            tracing::error!(error = %format!("{e:#}"), "the daemon stopped on an error");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pixdex embed`: files through the model, or a device throughput measurement.
fn embed(file: Option<&Path>, files: &[PathBuf], json: bool, bench_batches: &[usize], iters: usize) -> ExitCode {
    let cfg = match Config::load(file) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    if !bench_batches.is_empty() {
        return match pixdex::embed::cli::bench(&cfg, bench_batches, iters.max(1)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => config_error(e),
        };
    }
    match pixdex::embed::cli::run(&cfg, files, json) {
        Ok(code) => ExitCode::from(code),
        Err(e) => config_error(e),
    }
}
