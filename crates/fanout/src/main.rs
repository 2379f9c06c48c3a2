//! The `fanout` command. Thin: it parses arguments and wires the libraries
//! together.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run the gateway with a config file (not built yet).
    Serve,
    /// Validate a gateway config file (not built yet).
    Check,
    /// Print the config's JSON Schema (not built yet).
    Schema,
    /// Call many URLs concurrently (not built yet).
    Fetch,
    /// Serve canned JSON for trying configs (not built yet).
    Mock,
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
