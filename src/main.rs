//! `pixdex`: the daemon, its control client and config tools. Only wiring lives here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixdex::api::client::{Client, Endpoint};
use pixdex::config::Config;
use pixdex::ctl::{self, CtlArgs};

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
    let load = || match Config::load(file) {
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    };
    match cli.cmd {
        Cmd::Config(ConfigCmd::Show) => {
            let raw = match Config::load_raw(file) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match Config::validate(raw.clone(), file) {
                Ok(cfg) => {
                    print!("{}", Config::show(&raw, &cfg));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Daemon => {
            let cfg = match load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Text (colour only on a terminal) or JSON lines (`log.format`).
            pixdex::logging::init(&cfg.log, cfg.log_format);
            let json = cfg.log_format == pixdex::config::LogFormat::Json;
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let ran = rt.block_on(pixdex::daemon::run(cfg));
            // A blocking task still running (a handler's walk or store call whose connection
            // was dropped at shutdown) must not hold the exit: the daemon has shut down.
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
        Cmd::Embed { files, json, bench_batches, iters } => {
            let cfg = match load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            if std::env::var_os("RUST_LOG").is_some() {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .init();
            }
            if !bench_batches.is_empty() {
                return match pixdex::embed::cli::bench(&cfg, &bench_batches, iters.max(1)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(2)
                    }
                };
            }
            match pixdex::embed::cli::run(&cfg, &files, json) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Ctl(args) => {
            // Without --config, the packaged daemon's config when it is installed.
            let file = ctl::config_file(file);
            let file = file.as_deref();
            let endpoint = if let Some(tcp) = &args.tcp {
                Endpoint::Tcp(tcp.clone())
            } else if let Some(sock) = &args.socket {
                Endpoint::Unix(sock.clone())
            } else {
                match ctl::load_config(file) {
                    Ok(c) => Endpoint::Unix(c.socket),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            // Over TCP the daemon wants its token: --token / PIXDEX_TOKEN, else the one the
            // config names (daemon.token, daemon.token_file, or the generated one in data_dir).
            let token = match (&args.tcp, &args.token) {
                (None, _) => None,
                (Some(_), Some(t)) => Some(t.clone()),
                (Some(_), None) => {
                    Config::load(file).ok().and_then(|c| pixdex::api::guard::Guard::new(&c.web).ok()).and_then(|g| g.token().map(str::to_string))
                }
            };
            let code = rt.block_on(ctl::run(&Client::new(endpoint).with_token(token), &args));
            ExitCode::from(code as u8)
        }
    }
}
