//! The `fanout` command. Thin: it parses arguments and wires the libraries
//! together.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use fanout_gateway::{Gateway, Plan, config::Config};
use tracing_subscriber::EnvFilter;

mod demo;

/// Structured scatter-gather: call many services at once, combine the answers.
#[derive(Debug, Parser)]
#[command(name = "fanout", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay the scenarios that motivated fanout, with their timings.
    Demo,
    /// Run the gateway: serve the endpoints of a config file until SIGINT or
    /// SIGTERM, then finish in-flight requests within the grace period.
    Serve(ConfigArg),
    /// Validate a gateway config file; every problem is reported with its line
    /// and column, and the exit status is 1 if there is any.
    Check(ConfigArg),
    /// Print the config file's JSON Schema (point your editor at it).
    Schema,
    /// Call many URLs concurrently (not built yet).
    Fetch,
    /// Serve canned JSON for trying configs (not built yet).
    Mock,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file: .yaml, .yml, .toml or .json.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("fanout: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Demo => {
            runtime.block_on(demo::run());
            ExitCode::SUCCESS
        }
        Command::Check(arg) => check(&arg.config),
        Command::Serve(arg) => runtime.block_on(serve(&arg.config)),
        Command::Schema => {
            let schema = Config::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        other => {
            let name = format!("{other:?}").to_lowercase();
            eprintln!(
                "fanout {name}: not available yet. This build has the task group \
                 (`fanout demo` shows it); the gateway and its commands come next."
            );
            ExitCode::from(2)
        }
    }
}

/// `fanout check`: one line per problem on stderr, a summary, exit 1; or a
/// one-line summary of what the file defines.
fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            let backends: usize = config.endpoints.iter().map(|e| e.backends.len()).sum();
            println!(
                "{}: ok ({} upstreams, {} endpoints, {} backends)",
                path.display(),
                config.upstreams.len(),
                config.endpoints.len(),
                backends
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            let n = err.problems.len();
            eprintln!("{}: {n} problem{}", err.file, if n == 1 { "" } else { "s" });
            ExitCode::FAILURE
        }
    }
}

/// `fanout serve`.
async fn serve(path: &std::path::Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            eprintln!("fanout serve: the config has problems (above); nothing was started");
            return ExitCode::FAILURE;
        }
    };
    let plan = match Plan::compile(&config) {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("fanout serve: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listen = config.server.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "fanout serve: cannot listen on {listen}: {err} (is another process using it? change server.listen)"
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    tracing::info!(%addr, endpoints = config.endpoints.len(), "fanout gateway listening on http://{addr}");
    match fanout_gateway::serve(listener, Gateway::new(plan), shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fanout serve: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
