//! `nimbus bench process`: process instances through the Lambda Runtime API (feature `process`).
//!
//! For the Rust client (a `lambda_runtime` binary, built on demand) and Python's `awslambdaric`
//! (from `.ci/clients`, skipped when absent), beside the same echo handler in-process:
//! - cold start: spawn until the runtime's first `/next` (the init duration nimbus bills), and
//!   the baseline of the same program starting and opening one TCP connection to a local port;
//! - warm round trip: one caller, sync invokes of a small JSON event on the warm instance, beside
//!   the floor: the Rust binary echoing one byte twice over a loopback TCP connection, the four
//!   process-to-process hops an invocation makes (event, response, its 202, the next `/next`)
//!   with nothing else.
//!
//! Five rounds, the systems interleaved within each; the figures are medians over rounds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nimbus::process::{ProcessBackend, ProcessConfig};
use nimbus::{handler_fn, Context, Function, FunctionError, InvokeOptions, Runtime};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::stats::{median, round1, Row};

const ROUNDS: usize = 5;

/// The functions' memory: one full vCPU under the kernel's quota, as the baselines have.
const FULL_CPU_MB: u32 = 1_769;

/// A client under test: how to start its echo function, and its start-and-connect baseline.
struct Client {
    name: &'static str,
    config: ProcessConfig,
    /// The same program, started to open one TCP connection to `{addr}` and exit.
    baseline: Box<dyn Fn(&str) -> tokio::process::Command + Send + Sync>,
}

/// Sizes of one run.
pub(crate) struct ProcessSizes {
    /// Cold starts per system per round.
    pub(crate) cold: usize,
    /// Warm invokes per system per round.
    pub(crate) warm: usize,
}

pub(crate) async fn run(sizes: ProcessSizes) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let mut clients = vec![rust_client()?];
    match python_client() {
        Some(client) => clients.push(client),
        None => eprintln!(
            "bench process: Python's awslambdaric is not installed (run .ci/clients); \
             its rows are left out"
        ),
    }
    let mut cold: Vec<Vec<f64>> = vec![Vec::new(); clients.len()];
    let mut baseline: Vec<Vec<f64>> = vec![Vec::new(); clients.len()];
    let mut warm: Vec<Vec<f64>> = vec![Vec::new(); clients.len() + 1];
    let mut floor = Vec::new();
    for round in 0..ROUNDS {
        for (i, client) in clients.iter().enumerate() {
            if std::env::var_os("BENCH_WARM_ONLY").is_none() {
                baseline[i].push(baseline_us(client, sizes.cold).await?);
                cold[i].push(cold_start_us(client, sizes.cold, round).await?);
            }
            warm[i].push(warm_round_trip_us(Some(client), sizes.warm, round).await?);
        }
        warm[clients.len()].push(warm_round_trip_us(None, sizes.warm, round).await?);
        floor.push(floor_us(&clients[0], sizes.warm).await?);
    }
    let mut rows = Vec::new();
    let in_process = median(&warm[clients.len()]);
    for (i, client) in clients.iter().enumerate() {
        let (cold, base) = (median(&cold[i]), median(&baseline[i]));
        let mut row = latency_row("process cold", client.name, cold);
        row.extra.insert("baseline_us".into(), json!(round1(base)));
        row.extra
            .insert("over_baseline_us".into(), json!(round1(cold - base)));
        rows.push(row);
        let rtt = median(&warm[i]);
        let mut row = latency_row("process warm", client.name, rtt);
        row.extra
            .insert("in_process_us".into(), json!(round1(in_process)));
        rows.push(row);
    }
    rows.push(latency_row(
        "process warm",
        "in-process handler",
        in_process,
    ));
    rows.push(latency_row(
        "process warm",
        "loopback floor, 4 hops",
        median(&floor),
    ));
    Ok(rows)
}

/// Median of one round's cold starts: a new function per sample, so each invoke starts a
/// process; the init duration is what the executor measured and bills.
async fn cold_start_us(
    client: &Client,
    samples: usize,
    round: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let runtime = Runtime::default();
    let mut took = Vec::with_capacity(samples);
    for n in 0..samples {
        let name = format!("cold-{}-{round}-{n}", client.name.replace(' ', "-"));
        let backend = ProcessBackend::<Value, Value>::new(client.config.clone())?;
        let f = runtime
            .register(backend.into_function(&name).with_memory_mb(FULL_CPU_MB))
            .await?;
        let invocation = f
            .invoke_with(json!({"op": "echo"}), InvokeOptions::default())
            .await;
        invocation.result?;
        let init = invocation
            .report
            .and_then(|r| r.init_duration)
            .ok_or("a cold start reports its init duration")?;
        took.push(init.as_secs_f64() * 1e6);
        runtime.unregister(&name, Duration::from_secs(2)).await;
    }
    runtime.shutdown(Duration::from_secs(2)).await;
    Ok(median(&took))
}

/// Median of one round's baselines: spawn the program until it connects to our port.
async fn baseline_us(client: &Client, samples: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut command = (client.baseline)(&addr);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let start = Instant::now();
        let mut child = command.spawn()?;
        let (_connection, _) = listener.accept().await?;
        took.push(start.elapsed().as_secs_f64() * 1e6);
        child.wait().await?;
    }
    Ok(median(&took))
}

/// Median round trip of `invokes` sync invokes by one caller on a warm instance of `client`'s
/// echo function, or of the same echo in-process (`None`).
async fn warm_round_trip_us(
    client: Option<&Client>,
    invokes: usize,
    round: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let runtime = Runtime::default();
    let function = match client {
        Some(client) => ProcessBackend::<Value, Value>::new(client.config.clone())?
            .into_function(format!("warm-{round}")),
        None => Function::new(
            format!("warm-{round}"),
            handler_fn(|event: Value, _ctx: Context| async move {
                Ok::<_, FunctionError>(json!({"pid": std::process::id(), "event": event}))
            }),
        ),
    };
    let f = runtime
        .register(function.with_max_concurrency(1).with_memory_mb(FULL_CPU_MB))
        .await?;
    // On a worker, as a host's request handler would call it: not on the thread that blocks
    // on the main future, which every wake-up would have to unpark.
    let took = tokio::spawn(async move {
        let event = json!({"op": "echo", "order": 7});
        f.invoke(event.clone()).await?;
        let mut took = Vec::with_capacity(invokes);
        for _ in 0..invokes {
            let start = Instant::now();
            f.invoke(event.clone()).await?;
            took.push(start.elapsed().as_secs_f64() * 1e6);
        }
        Ok::<_, nimbus::InvokeError>(took)
    })
    .await??;
    runtime.shutdown(Duration::from_secs(2)).await;
    Ok(median(&took))
}

/// Median time of two one-byte round trips (four hops) between this process and the Rust
/// binary over one loopback TCP connection.
async fn floor_us(rust: &Client, rounds: usize) -> Result<f64, Box<dyn std::error::Error>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let mut command = (rust.baseline)(&addr);
    command
        .env_remove("FIXTURE_CONNECT_ONLY")
        .env("FIXTURE_ECHO", &addr);
    let mut child = command.kill_on_drop(true).spawn()?;
    let (mut stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let mut byte = [7u8; 1];
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..2 {
            stream.write_all(&byte).await?;
            stream.read_exact(&mut byte).await?;
        }
        took.push(start.elapsed().as_secs_f64() * 1e6);
    }
    drop(stream);
    child.wait().await?;
    Ok(median(&took))
}

fn rust_client() -> Result<Client, Box<dyn std::error::Error>> {
    let binary = lambda_fixture()?;
    let program = binary.clone();
    Ok(Client {
        name: "rust lambda_runtime",
        config: ProcessConfig::new(binary),
        baseline: Box::new(move |addr| {
            let mut command = tokio::process::Command::new(&program);
            command.env_clear().env("FIXTURE_CONNECT_ONLY", addr);
            command
        }),
    })
}

fn python_client() -> Option<Client> {
    let dir = std::env::var_os("NIMBUS_CLIENTS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/nimbus/clients"))
        })?;
    let python = dir.join("venv/bin/python");
    if !python.exists() {
        return None;
    }
    let fixture = workspace().join("crates/nimbus-process-clients/fixtures/python");
    let program = python.clone();
    Some(Client {
        name: "python awslambdaric",
        config: ProcessConfig::new(python)
            .with_env("PYTHONDONTWRITEBYTECODE", "1")
            .with_args(["-m", "awslambdaric"])
            .with_handler("app.handler")
            .with_handler_as_argument()
            .with_working_dir(fixture),
        baseline: Box::new(move |addr| {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
            let mut command = tokio::process::Command::new(&program);
            command.args([
                "-c",
                &format!("import socket; socket.create_connection(('{host}', {port}))"),
            ]);
            command
        }),
    })
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `lambda-fixture` binary beside this one, built with cargo if it is not there.
fn lambda_fixture() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or("the nimbus binary has no folder")?;
    let fixture = dir.join("lambda-fixture");
    if fixture.exists() {
        return Ok(fixture);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.current_dir(workspace()).args([
        "build",
        "--quiet",
        "-p",
        "nimbus-process-clients",
        "--bin",
        "lambda-fixture",
    ]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    eprintln!(
        "bench process: building the lambda_runtime fixture ({})",
        fixture.display()
    );
    if !build.status()?.success() {
        return Err("building the lambda-fixture binary failed".into());
    }
    Ok(fixture)
}

/// A row of one median latency (µs): the rate is that of one caller at that latency.
fn latency_row(scenario: &str, system: &str, median_us: f64) -> Row {
    let took = Duration::try_from_secs_f64(median_us / 1e6).unwrap_or_default();
    let mut row = Row::throughput(scenario, system, 1, took);
    row.p50_us = Some(round1(median_us));
    row
}
