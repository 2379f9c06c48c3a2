//! The `fanout` command. Thin: it parses arguments and wires the libraries
//! together.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use fanout_gateway::{Gateway, Plan, config::Config};
use tracing_subscriber::EnvFilter;

mod demo;
mod log;

/// Structured scatter-gather: call many services at once, combine the answers.
#[derive(Debug, Parser)]
#[command(name = "fanout", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The demo: mock services and a gateway on loopback replaying the
    /// scenarios fanout exists for, until Ctrl-C.
    Demo {
        /// Where the gateway listens (default 127.0.0.1:8080, or a free port if
        /// that one is taken).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run the gateway: serve the endpoints of a config file until SIGINT or
    /// SIGTERM, then finish in-flight requests within the grace period (a
    /// second signal stops at once). SIGHUP, or a change to the file, reloads it.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Log format: `text` (readable) or `json` (one object per line).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Serving threads, each with its own runtime, listener and backend
        /// connections (default: one per CPU).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: Option<u16>,
    },
    /// Validate a gateway config file; every problem is reported with its line
    /// and column, and the exit status is 1 if there is any.
    Check(ConfigArg),
    /// Print the config file's JSON Schema (point your editor at it).
    Schema,
    /// Read an API key on standard input (one line) and print the
    /// `sha256:<hex>` hash that `auth.<name>.api_key.keys` stores.
    HashKey,
    /// Call many URLs concurrently, each with its own timeout, and print a table
    /// of what came back; the exit status is 1 if any failed.
    Fetch(FetchArgs),
    /// Serve canned JSON with latency, failures and faults, for trying configs
    /// without real services.
    Mock {
        /// The mock config file (YAML or JSON).
        #[arg(
            short,
            long,
            value_name = "FILE",
            required_unless_present = "make_certs"
        )]
        config: Option<PathBuf>,
        /// Only check the mock config, then exit (1 if it has a problem).
        #[arg(long)]
        check: bool,
        /// Write a new test CA, a certificate for localhost/127.0.0.1/::1 and
        /// its key, and a client certificate, into this folder, then exit (for
        /// trying TLS on loopback; never for real use).
        #[arg(long, value_name = "DIR", conflicts_with = "check")]
        make_certs: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// The URLs to call (http://).
    urls: Vec<String>,
    /// Read more URLs from a file, one per line (`-` for standard input).
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Calls in flight at once.
    #[arg(long, default_value_t = fanout_fetch::FetchOptions::DEFAULT_LIMIT)]
    limit: usize,
    /// Time allowed for each call, e.g. 700ms or 5s.
    #[arg(long, default_value = "10s")]
    timeout: fanout_gateway::config::Duration,
    /// HTTP method of every call.
    #[arg(long, default_value = "GET")]
    method: http::Method,
    /// A header for every call, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
        Command::Demo { listen } => report(runtime.block_on(demo::run(listen, shutdown_signal()))),
        Command::Mock {
            make_certs: Some(dir),
            ..
        } => report(make_certs(&dir)),
        Command::Mock { config, check, .. } => report(match config {
            Some(config) => runtime.block_on(mock(&config, check)),
            None => Err(anyhow::anyhow!(
                "give a mock config (-c FILE) or --make-certs DIR"
            )),
        }),
        Command::Fetch(args) => match runtime.block_on(fetch(args)) {
            Ok(all_ok) if all_ok => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("fanout fetch: {err:#}");
                ExitCode::from(2)
            }
        },
        Command::Check(arg) => check(&arg.config),
        Command::Serve {
            config,
            log_format,
            threads,
        } => {
            let threads = threads.map_or_else(
                || std::thread::available_parallelism().map_or(1, usize::from),
                usize::from,
            );
            runtime.block_on(serve(&config.config, &log_format, threads))
        }
        Command::HashKey => report(hash_key()),
        Command::Schema => {
            let schema = Config::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
    }
}

/// Prints an error for a person and turns it into the exit status.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fanout: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `fanout hash-key`: the key comes on standard input, not as an argument,
/// so that it stays out of the shell's history and the process list.
fn hash_key() -> anyhow::Result<()> {
    use std::io::Read;
    let mut input = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut input)
        .map_err(|e| anyhow::anyhow!("cannot read the key from standard input: {e}"))?;
    let key = input
        .strip_suffix('\n')
        .map(|k| k.strip_suffix('\r').unwrap_or(k))
        .unwrap_or(&input);
    if key.is_empty() {
        anyhow::bail!("no key on standard input (e.g. `printf %s \"$KEY\" | fanout hash-key`)");
    }
    if key.contains('\n') {
        anyhow::bail!("give one key, on one line");
    }
    println!("{}", fanout_gateway::hash_api_key(key));
    Ok(())
}

/// `fanout fetch`: returns whether every call succeeded.
async fn fetch(args: FetchArgs) -> anyhow::Result<bool> {
    use std::io::{IsTerminal, Read};

    use anyhow::Context;
    let mut urls = args.urls;
    if let Some(file) = &args.file {
        let text = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read URLs from standard input")?;
            text
        } else {
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?
        };
        urls.extend(fanout_fetch::read_urls(&text));
    }
    if urls.is_empty() {
        anyhow::bail!(
            "no URLs: give them as arguments, in a file with -f FILE, or on standard input with -f -"
        );
    }
    let headers = args
        .headers
        .iter()
        .map(|h| fanout_fetch::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let options = fanout_fetch::FetchOptions {
        limit: args.limit,
        timeout: args.timeout.0,
        method: args.method,
        headers,
    };
    // A progress bar only for a person watching: never when piped or for --json.
    let progress = (!args.json && std::io::stdout().is_terminal())
        .then(|| fanout_fetch::progress_bar(urls.len() as u64));
    let report = fanout_fetch::fetch_all(urls, &options, progress.as_ref()).await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.render_table());
    }
    Ok(report.failed() == 0)
}

/// `fanout mock --make-certs DIR`.
fn make_certs(dir: &std::path::Path) -> anyhow::Result<()> {
    let made = fanout_mock::certs::make(dir)?;
    println!(
        "wrote a new test CA ({}), a certificate for localhost, 127.0.0.1 and ::1 ({}, {}) and a client certificate ({}, {}): for loopback experiments only",
        made.ca.display(),
        made.server_cert.display(),
        made.server_key.display(),
        made.client_cert.display(),
        made.client_key.display()
    );
    Ok(())
}

/// `fanout mock`.
async fn mock(path: &std::path::Path, check_only: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = fanout_mock::MockConfig::parse(&text)
        .map_err(|p| anyhow::anyhow!("{}:{p}", path.display()))?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let mock = fanout_mock::Mock::new(&config, base)?;
    let https = fanout_mock::Mock::new_tls(&config, base)
        .with_context(|| format!("the `tls` of {}", path.display()))?;
    if check_only {
        println!("{}: ok ({} routes)", path.display(), config.routes.len());
        return Ok(());
    }
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (change `listen` in {})",
                path.display()
            )
        })
    };
    let mut serving = Vec::new();
    let mut urls = Vec::new();
    for addr in &config.listen {
        let listener = bind(*addr).await?;
        urls.push(format!("http://{}", listener.local_addr()?));
        serving.push((mock.clone(), listener));
    }
    if let Some((addr, mock)) = https {
        let listener = bind(addr).await?;
        urls.push(format!("https://{}", listener.local_addr()?));
        serving.push((mock, listener));
    }
    println!(
        "fanout mock: {} routes on {} (stats: /__mock/stats); Ctrl-C stops it",
        config.routes.len(),
        urls.join(", ")
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = serving
        .into_iter()
        .map(|(mock, listener)| {
            let mut stopped = stopped.clone();
            tokio::spawn(mock.serve(listener, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        })
        .collect();
    shutdown_signal().await;
    let _ = stop.send(true);
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// `fanout check`: one line per problem on stderr, a summary, exit 1; or a
/// one-line summary of what the file defines.
fn check(path: &std::path::Path) -> ExitCode {
    match Plan::load(path) {
        Ok(plan) => {
            let config = plan.config();
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
async fn serve(path: &std::path::Path, log_format: &str, threads: usize) -> ExitCode {
    let telemetry = init_logging(log_format);
    // Before anything listens: a SIGHUP that comes as soon as the port is
    // open must reload, not kill the process (its default action).
    #[cfg(unix)]
    let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(error = %err, "SIGHUP cannot be handled: reload by changing the file");
            None
        }
    };
    #[cfg(not(unix))]
    let hangup = None::<()>;
    let plan = match Plan::load(path) {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("{err}");
            eprintln!("fanout serve: the config has problems (above); nothing was started");
            return ExitCode::FAILURE;
        }
    };
    let (listen, admin, endpoints) = {
        let server = &plan.config().server;
        (server.listen, server.admin, plan.config().endpoints.len())
    };
    let listeners = match fanout_gateway::bind_reuseport(listen, threads) {
        Ok(listeners) => listeners,
        Err(err) => {
            eprintln!(
                "fanout serve: cannot listen on {listen}: {err} (is another process using it? change server.listen)"
            );
            return ExitCode::FAILURE;
        }
    };
    let gateway = Gateway::new(plan);
    if let Some(admin) = admin {
        if !admin.ip().is_loopback() {
            tracing::warn!(%admin, "the admin API has no authentication and listens beyond loopback");
        }
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .and_then(|b| b.install_recorder());
        let metrics = match metrics {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::warn!(error = %err, "metrics are off");
                None
            }
        };
        match tokio::net::TcpListener::bind(admin).await {
            Ok(admin_listener) => {
                tracing::info!(%admin, "admin API on http://{admin} (/healthz, /readyz, /config, /metrics)");
                tokio::spawn(fanout_gateway::serve_admin(
                    admin_listener,
                    gateway.clone(),
                    metrics,
                    std::future::pending(),
                ));
            }
            Err(err) => {
                eprintln!(
                    "fanout serve: cannot listen on {admin} for the admin API: {err} (change server.admin)"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    tokio::spawn(reload_on_change(path.to_owned(), gateway.clone(), hangup));
    let addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(listen);
    let scheme = if gateway.is_tls() { "https" } else { "http" };
    tracing::info!(%addr, endpoints, threads, "fanout gateway listening on {scheme}://{addr}");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
        // A second signal does not wait for the grace period.
        shutdown_signal().await;
        eprintln!("fanout serve: second signal: stopping now");
        std::process::exit(130);
    });
    let served = fanout_gateway::serve_on_threads(listeners, gateway, stopped).await;
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fanout serve: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Trace export, when built with the `otel` feature and configured.
#[derive(Default)]
struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes the spans not yet exported.
    fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("fanout serve: exporting the last traces failed: {err}");
            }
        }
    }
}

/// Logs to stdout (text or JSON); with the `otel` feature and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, also exports spans over OTLP/HTTP.
fn init_logging(format: &str) -> Telemetry {
    use std::io::IsTerminal;
    use tracing_subscriber::{
        Layer, filter::FilterExt, layer::SubscriberExt, util::SubscriberInitExt,
    };
    // At `info` the log gets events only: each request's line carries its
    // own fields, and formatting every request's and backend call's span for
    // it cost more than the line itself (a quarter of the log's cost per
    // request). At `debug` and more verbose, lines carry their spans.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = filter
        .max_level_hint()
        .is_some_and(|level| level >= tracing_subscriber::filter::LevelFilter::DEBUG);
    let filter = filter.and(tracing_subscriber::filter::filter_fn(move |meta| {
        spans || !meta.is_span()
    }));
    let ansi = std::io::stdout().is_terminal();
    let fmt = if format == "json" {
        tracing_subscriber::fmt::layer().json().boxed()
    } else if !ansi && !spans {
        // The line of the default format, written for less (see `log`).
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .event_format(log::Plain)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(ansi).boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    #[cfg(feature = "otel")]
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        use opentelemetry::trace::TracerProvider;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build();
        match exporter {
            Ok(exporter) => {
                let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("fanout")
                            .build(),
                    )
                    .build();
                opentelemetry::global::set_text_map_propagator(
                    opentelemetry_sdk::propagation::TraceContextPropagator::new(),
                );
                let tracer = provider.tracer("fanout");
                let otel = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(EnvFilter::new("info"));
                registry.with(otel).init();
                return Telemetry {
                    provider: Some(provider),
                };
            }
            Err(err) => eprintln!("fanout serve: traces are not exported: {err}"),
        }
    }
    registry.init();
    Telemetry::default()
}

/// The SIGHUP stream, installed before anything listens.
#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// The listener settings that differ between two configs: a reload cannot
/// apply them (the sockets, threads and connection limits are made once).
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut changed = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            changed.push(name);
        }
    };
    check("listen", a.listen == b.listen);
    check("admin", a.admin == b.admin);
    check(
        "header_read_timeout",
        a.header_read_timeout == b.header_read_timeout,
    );
    check("shutdown_grace", a.shutdown_grace == b.shutdown_grace);
    check("max_connections", a.max_connections == b.max_connections);
    check("idle_timeout", a.idle_timeout == b.idle_timeout);
    check("write_timeout", a.write_timeout == b.write_timeout);
    check(
        "response_buffer",
        a.response_buffer.per_connection == b.response_buffer.per_connection
            && a.response_buffer.total == b.response_buffer.total,
    );
    // New certificate files are taken by a reload; TLS on or off is not.
    check("tls", a.tls.is_some() == b.tls.is_some());
    changed
}

/// Reloads the config on SIGHUP and when the file, or a certificate or key
/// it names, changes (checked every second: simpler than filesystem events,
/// and it works on every filesystem, with editors that replace the file and
/// with Kubernetes' secret volumes, which swap a symlink). A config with
/// problems is refused with its located errors, and the previous one keeps
/// serving.
async fn reload_on_change(path: PathBuf, gateway: Gateway, mut hangup: Option<Hangup>) {
    let stamps = |plan: &Plan| -> Vec<Option<std::time::SystemTime>> {
        std::iter::once(path.as_path())
            .chain(plan.files().iter().map(PathBuf::as_path))
            .map(|file| std::fs::metadata(file).and_then(|m| m.modified()).ok())
            .collect()
    };
    let mut last = stamps(&gateway.plan());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = {
            let _ = &mut hangup;
            std::future::pending::<()>()
        };
        let reason = tokio::select! {
            () = hup => {
                last = stamps(&gateway.plan());
                "SIGHUP"
            }
            _ = tick.tick() => {
                let now = stamps(&gateway.plan());
                if now == last { continue; }
                last = now;
                "a file changed"
            }
        };
        match Plan::load(&path) {
            Ok(plan) => {
                let endpoints = plan.config().endpoints.len();
                for changed in needs_restart(gateway.plan().config(), plan.config()) {
                    tracing::warn!(
                        reason,
                        setting = changed,
                        "server.{changed} changed: it takes effect at the next restart; the rest of the config is reloaded"
                    );
                }
                gateway.reload(plan);
                // The new plan may name other files.
                last = stamps(&gateway.plan());
                tracing::info!(reason, endpoints, "config reloaded");
            }
            Err(problems) => {
                tracing::error!(
                    reason,
                    "config change refused; still serving the previous config:\n{problems}"
                );
            }
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
