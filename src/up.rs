//! `kausal up`: the embedded broker, every service as its own process, and a
//! live summary. Ctrl-C (or SIGTERM) stops everything and exits 0.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kausal_broker::{EmbeddedBroker, Storage};
use kausal_contracts::topics;
use kausal_kafka::admin::{Admin, TopicSpec};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::Common;
use crate::scrape;
use crate::service::ServiceName;
use crate::signals::shutdown_on_signals;
use kausal_kafka::receipt::RECEIPTS_TOPIC;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerStorage {
    /// SQLite file under --data-dir: survives restarts, correct watermarks.
    Sqlite,
    /// Memory: for benchmarks only. Lost on exit, wrong high watermarks, and
    /// a consumer resuming inside a produce batch skips its rest
    /// (docs/broker.md).
    Memory,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    /// Orders per second from the order generator.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Fraction of charge attempts that fail transiently (retried, then DLQ).
    #[arg(long, default_value_t = 0.2)]
    pub payment_failure_rate: f64,
    /// Fraction of orders declined (PaymentFailed).
    #[arg(long, default_value_t = 0.05)]
    pub payment_decline_rate: f64,
    /// Fraction of orders without a customer email.
    #[arg(long, default_value_t = 0.05)]
    pub missing_email_rate: f64,
    /// What notification-service does with a payment whose order has no
    /// email: `dead-letter` (the seeds' bug) or `in-app` (the fix; restart
    /// `kausal up` with it, then replay the dead letters from the console).
    #[arg(long, value_enum, default_value_t = kausal_notification::WithoutEmail::DeadLetter)]
    pub notify_without_email: kausal_notification::WithoutEmail,
    /// Port of the embedded broker.
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    /// Storage of the embedded broker.
    #[arg(long, value_enum, default_value_t = BrokerStorage::Sqlite)]
    pub broker_storage: BrokerStorage,
    /// Port of the console: its API and the OTLP/HTTP receiver every
    /// service exports spans to (or any free port when taken).
    #[arg(long, default_value_t = 8080)]
    pub console_port: u16,
    /// Port of the console's OTLP/gRPC receiver (or any free port when
    /// taken). The services export over OTLP/HTTP; this one is for other
    /// exporters.
    #[arg(long, default_value_t = 4317)]
    pub otlp_grpc_port: u16,
    /// First /metrics port; each service takes the next one (or any free
    /// port when taken).
    #[arg(long, default_value_t = 9101)]
    pub metrics_port_base: u16,
    /// Port of the order service's HTTP API (or any free port when taken).
    #[arg(long, default_value_t = 8081)]
    pub http_port: u16,
    /// Partitions per topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
}

/// One supervised service process.
struct Supervised {
    name: &'static str,
    args: Vec<String>,
    /// Added to the environment `up` was started with.
    env: Vec<(String, String)>,
    log: PathBuf,
    /// Where its `/metrics` is (the console has none).
    metrics: Option<SocketAddr>,
    child: Option<Child>,
    restarts: u32,
}

impl Supervised {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the kausal executable")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let child = Command::new(exe)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals()?;
    let data_dir = args.common.data_dir.clone();
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // Logs of `up` itself go to a file too; the terminal shows the summary.
    kausal_telemetry::logs::init_logging_to_file("kausal-up", &logs.join("up.log"))?;

    let (broker, bootstrap) = match args.common.explicit_kafka() {
        Some(kafka) => (None, kafka),
        None => {
            ensure_port_free(args.broker_port, "--broker-port")?;
            let storage = match args.broker_storage {
                BrokerStorage::Sqlite => Storage::Sqlite(data_dir.join("broker.db")),
                BrokerStorage::Memory => Storage::Memory,
            };
            let broker = EmbeddedBroker::start(storage, args.broker_port)
                .await
                .context("cannot start the embedded broker")?;
            let bootstrap = broker.bootstrap_servers();
            (Some(broker), bootstrap)
        }
    };
    let kafka = args.common.kafka_config_at(&bootstrap);
    let admin = Admin::new(&kafka)?;
    let mut wanted: Vec<TopicSpec> = vec![TopicSpec::new(RECEIPTS_TOPIC, args.partitions)];
    for topic in topics::ALL {
        wanted.push(TopicSpec::new(topic, args.partitions));
        wanted.push(TopicSpec::new(
            kausal_core::dlq::dlq_topic(topic),
            args.partitions,
        ));
    }
    admin
        .ensure_topics(&wanted)
        .await
        .with_context(|| format!("cannot create topics on {bootstrap}"))?;

    let database = args.common.database_url();
    let common = |metrics: SocketAddr| {
        vec![
            "--kafka".to_owned(),
            bootstrap.clone(),
            "--database".to_owned(),
            database.clone(),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--metrics-port".to_owned(),
            metrics.port().to_string(),
            "--partitions".to_owned(),
            args.partitions.to_string(),
        ]
    };
    // Consumers first, so the order generator's first events find them.
    let order = [
        ServiceName::Recorder,
        ServiceName::Payment,
        ServiceName::Inventory,
        ServiceName::Notification,
        ServiceName::Fulfillment,
        ServiceName::Order,
        ServiceName::Monitor,
    ];
    let api_addr = port_near(args.http_port)?;
    let console_addr = port_near(args.console_port)?;
    let grpc_addr = port_near(args.otlp_grpc_port)?;
    let export = span_export(console_addr);
    let forward = user_endpoint()?;
    // The console's token: the user's, or a fresh one the console writes to
    // <data-dir>/console-token and the banner prints.
    let token = std::env::var("KAUSAL_CONSOLE_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(kausal_console::token::generate);
    // The console first, so that the services' first spans find it.
    let mut services = vec![Supervised {
        name: "console",
        args: vec![
            "console".to_owned(),
            // Replays and the lag board need the cluster.
            "--kafka".to_owned(),
            bootstrap.clone(),
            "--database".to_owned(),
            database.clone(),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--console-port".to_owned(),
            console_addr.port().to_string(),
            "--otlp-grpc-port".to_owned(),
            grpc_addr.port().to_string(),
        ]
        .into_iter()
        .chain(
            forward
                .iter()
                .flat_map(|f| ["--forward-otlp".to_owned(), f.endpoint.clone()]),
        )
        .collect(),
        // The console's own log lines go where everyone's go: to itself
        // (and, forwarded, to the user's endpoint), not around it.
        env: export
            .iter()
            .cloned()
            .chain([("KAUSAL_CONSOLE_TOKEN".to_owned(), token.clone())])
            .collect(),
        log: logs.join("console.log"),
        metrics: None,
        child: None,
        restarts: 0,
    }];
    for name in order {
        let port = args
            .metrics_port_base
            .saturating_add(service_port_offset(name));
        let metrics = port_near(port)?;
        let extra: Vec<String> = match name {
            ServiceName::Order => vec![
                "--http-port".into(),
                api_addr.port().to_string(),
                "--rate".into(),
                args.rate.to_string(),
                "--missing-email-rate".into(),
                args.missing_email_rate.to_string(),
            ],
            ServiceName::Payment => vec![
                "--payment-failure-rate".into(),
                args.payment_failure_rate.to_string(),
                "--payment-decline-rate".into(),
                args.payment_decline_rate.to_string(),
            ],
            ServiceName::Notification => vec![
                "--notify-without-email".into(),
                args.notify_without_email
                    .to_possible_value()
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default(),
            ],
            _ => Vec::new(),
        };
        services.push(Supervised {
            name: name.service_name(),
            args: [
                vec!["service".to_owned(), name.word().to_owned()],
                common(metrics),
                extra,
            ]
            .concat(),
            env: export.clone(),
            log: logs.join(format!("{}.log", name.service_name())),
            metrics: Some(metrics),
            child: None,
            restarts: 0,
        });
    }
    // The console (first in the list) before the services, so that their
    // first spans are not refused.
    for (i, s) in services.iter_mut().enumerate() {
        s.spawn()?;
        if i == 0 && !wait_for_port(console_addr, Duration::from_secs(30)).await {
            eprintln!(
                "the console did not answer on {console_addr} within 30 s; see {}",
                s.log.display()
            );
        }
    }

    print_banner(
        &bootstrap,
        broker.is_some(),
        &database,
        &data_dir,
        &services,
        console_addr,
    );
    print_otlp(console_addr, grpc_addr, forward.as_ref());
    println!(
        "  token      {token}  (replay and discard: Authorization: Bearer <token>; also in {})",
        kausal_console::token::path(&data_dir).display()
    );
    println!("  order API  POST http://{api_addr}/orders   GET http://{api_addr}/orders/{{id}}");
    println!(
        "  trace      kausal trace <order-id> --data-dir {}",
        data_dir.display()
    );
    println!("Ctrl-C stops everything.\n");
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    });
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        for s in &mut services {
            let exited = match s.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            };
            if let Some(status) = exited {
                s.restarts += 1;
                eprintln!(
                    "\n{} exited ({status}); restarting (see {})",
                    s.name,
                    s.log.display()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                s.spawn()?;
            }
        }
        let line = summary_line(&services, started.elapsed()).await;
        if tty {
            print!("\r\x1b[2K{line}");
        } else {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
    }

    println!("\nstopping services…");
    for s in &mut services {
        if let Some(pid) = s.child.as_ref().and_then(Child::id) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let mut clean = true;
    for s in &mut services {
        if let Some(child) = s.child.as_mut() {
            match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => {
                    clean = false;
                    eprintln!("{} stopped with {status}", s.name);
                }
                _ => {
                    clean = false;
                    eprintln!("{} did not stop within 30 s; killing it", s.name);
                    let _ = child.kill().await;
                }
            }
        }
    }
    if let Some(broker) = broker {
        broker.stop().await;
    }
    if !clean {
        bail!("not every service stopped cleanly; see {}", logs.display());
    }
    println!("stopped.");
    Ok(())
}

/// The OTLP settings of every service: spans and log records to the
/// console over OTLP/HTTP, all of them (`up` is for looking at the system).
/// The per-signal endpoints and protocols are set as well, so that a user's
/// own `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` cannot divert them: what the
/// user's `OTEL_EXPORTER_OTLP_ENDPOINT` names gets everything through the
/// console's forwarding instead ([`user_endpoint`]).
fn span_export(console: SocketAddr) -> Vec<(String, String)> {
    let base = format!("http://{console}");
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", base.clone()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{base}/v1/traces"),
        ),
        (
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            format!("{base}/v1/logs"),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
        (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "http/protobuf".to_owned(),
        ),
        (
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "http/protobuf".to_owned(),
        ),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Where the console forwards: the user's `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// if set. Forwarding speaks OTLP/HTTP; `grpc` says the user's protocol was
/// gRPC, which the banner warns about.
struct UserEndpoint {
    endpoint: String,
    grpc: bool,
}

/// Checked here, so that a bad one stops `up` with the reason instead of
/// leaving its console restarting.
fn user_endpoint() -> anyhow::Result<Option<UserEndpoint>> {
    let Some(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
    else {
        return Ok(None);
    };
    kausal_console::forward::ForwardConfig::new(endpoint.clone())
        .validate()
        .context(
            "OTEL_EXPORTER_OTLP_ENDPOINT is where the console forwards; give an OTLP/HTTP URL \
             such as http://localhost:4318, or unset it",
        )?;
    let grpc = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("grpc"));
    Ok(Some(UserEndpoint { endpoint, grpc }))
}

/// Whether something accepts connections on `addr` within `timeout`.
async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Metrics port of each service relative to --metrics-port-base.
fn service_port_offset(name: ServiceName) -> u16 {
    match name {
        ServiceName::Order => 0,
        ServiceName::Payment => 1,
        ServiceName::Inventory => 2,
        ServiceName::Notification => 3,
        ServiceName::Fulfillment => 4,
        ServiceName::Recorder => 5,
        ServiceName::Monitor => 6,
    }
}

fn ensure_port_free(port: u16, flag: &str) -> anyhow::Result<()> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map(drop)
        .with_context(|| format!("port {port} is in use; pick another with {flag} (or point --kafka at a running broker)"))
}

/// `127.0.0.1:preferred` if free, otherwise any free port.
fn port_near(preferred: u16) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, preferred))
        .or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .context("no free local port")?;
    Ok(listener.local_addr()?)
}

fn print_banner(
    bootstrap: &str,
    embedded: bool,
    database: &str,
    data_dir: &Path,
    services: &[Supervised],
    console: SocketAddr,
) {
    println!("kausal is up");
    println!(
        "  kafka      {bootstrap}{}",
        if embedded { "  (embedded broker)" } else { "" }
    );
    println!("  database   {database}");
    for s in services {
        match s.metrics {
            Some(metrics) => println!(
                "  {:<15} metrics http://{metrics}/metrics  logs {}",
                s.name,
                s.log.display()
            ),
            None => println!("  {:<15} logs {}", s.name, s.log.display()),
        }
    }
    println!("  data dir   {}", data_dir.display());
    println!(
        "  console    http://{console}  (API: /api/search?q=<order id>, /api/correlations/<id>)"
    );
}

/// The banner's lines under the console's: where OTLP goes.
fn print_otlp(console: SocketAddr, grpc: SocketAddr, forward: Option<&UserEndpoint>) {
    println!(
        "             every service exports its spans and logs to http://{console}/v1/traces, /v1/logs"
    );
    println!("             OTLP/gRPC receiver on {grpc}");
    if let Some(forward) = forward {
        println!(
            "             forwarded unchanged to {} (OTEL_EXPORTER_OTLP_ENDPOINT, OTLP/HTTP)",
            forward.endpoint
        );
        if forward.grpc {
            println!(
                "             warning: forwarding speaks OTLP/HTTP, not the gRPC that \
                 OTEL_EXPORTER_OTLP_PROTOCOL asks for: point it at an OTLP/HTTP port (4318)"
            );
        }
    }
}

async fn summary_line(services: &[Supervised], elapsed: Duration) -> String {
    let mut orders = 0.0;
    let (mut approved, mut declined, mut retries, mut dlq, mut shipped) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut lag, mut worst) = (0.0, None);
    for s in services {
        let Some(text) = s.metrics.map(scrape::fetch) else {
            continue;
        };
        let Some(text) = text.await else {
            continue;
        };
        orders += scrape::sum(&text, "orders_published_total", &[]);
        approved += scrape::sum(&text, "payments_total", &["outcome=\"approved\""]);
        declined += scrape::sum(&text, "payments_total", &["outcome=\"declined\""]);
        retries += scrape::sum(&text, "event_retries_total", &[]);
        dlq += scrape::sum(&text, "dlq_events_total", &[]);
        shipped += scrape::sum(
            &text,
            "events_published_total",
            &["event_type=\"ShipmentCreated\""],
        );
        lag += scrape::sum(&text, "consumer_lag", &[]);
        if let Some(s) = scrape::max(&text, "consumer_group_status", &[]) {
            worst = Some(worst.map_or(s, |w: f64| w.max(s)));
        }
    }
    let status = match worst {
        None => "…",
        Some(s) if s >= 2.0 => "ERR",
        Some(s) if s >= 1.0 => "WARN",
        Some(_) => "OK",
    };
    format!(
        "[{:>5}s] orders {orders} | payments {approved} ok, {declined} declined | shipped {shipped} | retries {retries} | dead-lettered {dlq} | lag {lag} {status}",
        elapsed.as_secs()
    )
}
