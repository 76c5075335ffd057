//! `nimbus serve <file>`: starts what the file declares, says where it listens, shows a live
//! summary, and on Ctrl-C or SIGTERM stops gracefully and reports what it could not finish.

mod summary;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nimbus::serve::{Platform, ServeFile};
use nimbus::Runtime;

/// `nimbus serve` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// The file to serve (`nimbus.toml`).
    file: PathBuf,
    /// Listen here instead of the file's `[http] bind` (port 0 picks a free port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Seconds that work in flight gets to finish at Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Seconds between two lines of the live summary.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

pub(crate) async fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let grace = Duration::try_from_secs_f64(args.grace).map_err(|_| "--grace: seconds >= 0")?;
    let interval = Duration::try_from_secs_f64(args.interval)
        .ok()
        .filter(|i| !i.is_zero())
        .ok_or("--interval: seconds > 0")?;
    let mut file = ServeFile::load(&args.file)?;
    if let Some(bind) = args.bind {
        file = file.with_bind(bind);
    }
    // Registered before anything starts: a signal that comes during the start (the listener
    // is already bound then) or as soon as "listening" is printed stops gracefully rather than
    // killing the process.
    let mut stop = StopSignals::new()?;
    let platform = file.start(Runtime::default()).await?;
    announce(&args.file, &platform);

    let live = summary::Live::new(std::io::stdout().is_terminal());
    let mut ticks = tokio::time::interval(interval);
    let signal = loop {
        tokio::select! {
            signal = stop.next() => break signal,
            _ = ticks.tick() => live.show(&platform),
        }
    };
    live.finish();
    println!(
        "stopping ({signal}): the listener answers the requests in flight, the pipeline drains, \
         then mappings stop and work in flight gets the rest of {grace:?}"
    );
    let functions = platform.functions().to_vec();
    let runtime = platform.runtime().clone();
    let report = platform.stop(grace).await;
    summary::final_report(&runtime, &functions, &report);
    Ok(())
}

/// Where everything listens.
fn announce(file: &std::path::Path, platform: &Platform) {
    let addr = platform.local_addr();
    println!("nimbus serve {}", file.display());
    println!("listening on http://{addr}");
    println!("  Lambda API  http://{addr}/2015-03-31/functions/{{name}}/invocations");
    println!("              export AWS_ENDPOINT_URL_LAMBDA=http://{addr}");
    for route in platform.routes() {
        let method = route.method().map_or("ANY", |m| m.as_str());
        println!(
            "  route       {method} http://{addr}{} -> {}",
            route.path(),
            route.function()
        );
    }
    println!("  metrics     http://{addr}/metrics");
    for name in platform.functions() {
        println!("  function    {name}");
    }
    for mapping in platform.mappings() {
        println!("  mapping     {}", mapping.name());
    }
    for (name, folder) in platform.buckets() {
        println!("  bucket      {name} {}", folder.display());
    }
    println!("Ctrl-C or SIGTERM stops (work in flight is finished or reported)");
}

/// SIGINT (Ctrl-C) and SIGTERM (`kill`, `docker stop`, systemd), listened for from the start.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
