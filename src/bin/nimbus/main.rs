//! The `nimbus` command: `demo` (the default) drives a short load through a few functions on the
//! in-memory runtime and prints what happened; `bench` measures nimbus beside its peers;
//! `serve` (feature `serve`) runs the functions, mappings and routes of a `nimbus.toml`.

// `pub` down to the benchmark harness (`bench::peers`, `bench::workloads`), whose items are
// `pub` because the criterion benches include the same files at their crate root.
mod allocator;
pub mod bench;
mod demo;
#[cfg(feature = "serve")]
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: a server's requests allocate on one worker thread and
/// free on another, where glibc spent a third of a gateway request on its free lists. Every
/// scenario of `nimbus bench`, baselines included, runs on it.
#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

#[derive(Debug, Parser)]
#[command(name = "nimbus", version, about = "An embeddable serverless scheduler")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register a few functions, drive load through them and print a report (the default).
    Demo(demo::DemoArgs),
    /// Benchmark scenarios, each with peer baselines in the same run.
    Bench(bench::BenchArgs),
    /// Serve the functions, mappings and routes of a file (`nimbus serve nimbus.toml`).
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the Tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli
            .command
            .unwrap_or(Command::Demo(demo::DemoArgs::default()))
        {
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            #[cfg(feature = "serve")]
            Command::Serve(args) => serve::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
