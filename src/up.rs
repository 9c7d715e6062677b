//! `kausal up`: the embedded broker, every service as its own process, and a
//! live summary. Ctrl-C (or SIGTERM) stops everything and exits 0 (1 when a
//! service had to be given up).
//!
//! A service that exits is started again after a delay that doubles with
//! each crash ([`RestartPolicy`]); one that crashes [`CRASH_LOOP_CRASHES`]
//! times within [`CRASH_LOOP_WINDOW`] is left down, logged as an error and
//! shown in the summary line.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
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
use kausal_kafka::receipt::RECEIPTS_TOPIC;
use kausal_service::signals::shutdown_on_signals;

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
    /// Port of the ledger service's HTTP API (or any free port when taken).
    #[arg(long, default_value_t = 8095)]
    pub ledger_port: u16,
    /// Port of the read model's HTTP API (or any free port when taken).
    #[arg(long, default_value_t = 8096)]
    pub read_model_port: u16,
    /// Partitions per topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
}

/// The wait before a crashed service is started again the first time.
const RESTART_DELAY_FIRST: Duration = Duration::from_secs(1);
/// The wait doubles with each crash, up to this. (With the crash-loop
/// limits below a service is given up before its wait passes 8 s: five
/// crashes less than [`HEALTHY_RUN`] apart fit in five minutes. The cap
/// bounds the wait should those limits change.)
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A service that ran this long before it crashed is started again after
/// [`RESTART_DELAY_FIRST`]: its earlier crashes are over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// This many crashes of one service within [`CRASH_LOOP_WINDOW`] are a
/// crash loop: `up` stops restarting it (restarting cannot help; its log
/// says why), logs an error and shows it in the summary line.
const CRASH_LOOP_CRASHES: usize = 5;
/// See [`CRASH_LOOP_CRASHES`].
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How often `up` looks at its children (the summary line is printed less
/// often).
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);

/// When to start a crashed service again, and when to give up on it. Pure:
/// the times are passed in.
#[derive(Debug)]
struct RestartPolicy {
    /// When the current run of the service started.
    started: Instant,
    /// The wait before the next restart.
    delay: Duration,
    /// Crashes within the last [`CRASH_LOOP_WINDOW`], oldest first.
    crashes: VecDeque<Instant>,
    /// Restarts so far.
    restarts: u32,
    /// Crashes within `loop_window` that are a crash loop
    /// ([`CRASH_LOOP_CRASHES`], [`CRASH_LOOP_WINDOW`]).
    loop_crashes: usize,
    loop_window: Duration,
}

/// What to do about a service that just exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCrash {
    /// Start it again after this long.
    RestartIn(Duration),
    /// A crash loop: `crashes` crashes within `within`; leave it down.
    GiveUp { crashes: usize, within: Duration },
}

impl RestartPolicy {
    /// A service started at `started`.
    fn new(started: Instant) -> Self {
        Self {
            started,
            delay: RESTART_DELAY_FIRST,
            crashes: VecDeque::new(),
            restarts: 0,
            loop_crashes: CRASH_LOOP_CRASHES,
            loop_window: CRASH_LOOP_WINDOW,
        }
    }

    /// The service was started again at `now`.
    fn restarted(&mut self, now: Instant) {
        self.started = now;
        self.restarts += 1;
    }

    /// The service exited at `now`.
    fn crashed(&mut self, now: Instant) -> AfterCrash {
        if now.saturating_duration_since(self.started) >= HEALTHY_RUN {
            self.delay = RESTART_DELAY_FIRST;
        }
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.loop_window)
        {
            self.crashes.pop_front();
        }
        if let Some(first) = self.crashes.front()
            && self.crashes.len() >= self.loop_crashes
        {
            return AfterCrash::GiveUp {
                crashes: self.crashes.len(),
                within: now.saturating_duration_since(*first),
            };
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(RESTART_DELAY_MAX);
        AfterCrash::RestartIn(delay)
    }
}

/// How a child ended, short: `exit 101`, `signal 9`.
fn exit_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
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
    policy: RestartPolicy,
    /// When the crashed service is due to start again.
    restart_at: Option<Instant>,
    /// Why it is no longer restarted (for the summary line).
    gave_up: Option<String>,
    /// The ports it will listen on, held by `up` until it first starts.
    ports: Vec<ReservedPort>,
}

impl Supervised {
    /// A service not started yet.
    fn new(
        name: &'static str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
        metrics: Option<SocketAddr>,
    ) -> Self {
        Self {
            name,
            args,
            env,
            log,
            metrics,
            child: None,
            policy: RestartPolicy::new(Instant::now()),
            restart_at: None,
            gave_up: None,
            ports: Vec::new(),
        }
    }

    /// Holds `ports` for the service until it first starts.
    fn listening_on(mut self, ports: impl IntoIterator<Item = ReservedPort>) -> Self {
        self.ports.extend(ports);
        self
    }

    /// One look at the service: notices that it exited (and decides what
    /// next), starts it again when that is due.
    fn supervise(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|at| now >= at) {
            self.restart_at = None;
            match self.spawn() {
                Ok(()) => self.policy.restarted(now),
                Err(e) => self.exited(now, format!("cannot start: {e:#}")),
            }
            return;
        }
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(exit_text(status)),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        if let Some(status) = exited {
            self.child = None;
            self.exited(now, status);
        }
    }

    fn exited(&mut self, now: Instant, status: String) {
        match self.policy.crashed(now) {
            AfterCrash::RestartIn(delay) => {
                tracing::warn!(service = self.name, %status, restartInMs = delay.as_millis() as u64, log = %self.log.display(), "service exited; restarting it");
                eprintln!(
                    "\n{} exited ({status}); restarting in {} s (see {})",
                    self.name,
                    delay.as_secs_f64(),
                    self.log.display()
                );
                self.restart_at = Some(now + delay);
            }
            AfterCrash::GiveUp { crashes, within } => {
                let restarts = self.policy.restarts;
                tracing::error!(
                    service = self.name,
                    lastStatus = %status,
                    crashes,
                    withinSeconds = within.as_secs(),
                    restarts,
                    log = %self.log.display(),
                    "service is in a crash loop ({crashes} exits within {} s, the last with {status}); gave up restarting it",
                    within.as_secs()
                );
                eprintln!(
                    "\n{} is in a crash loop ({crashes} exits within {} s, the last with {status}); not restarting it (see {})",
                    self.name,
                    within.as_secs(),
                    self.log.display()
                );
                self.gave_up = Some(format!(
                    "crash loop, gave up after {restarts} restarts ({status})"
                ));
            }
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the kausal executable")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        // Its ports are let go only now, so nothing else took them since
        // they were chosen (another service of `up` cannot have).
        self.ports.clear();
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
    let mut wanted: Vec<TopicSpec> = vec![
        TopicSpec::new(RECEIPTS_TOPIC, args.partitions),
        TopicSpec::new(
            kausal_contracts::ledger::LEDGER_ENTRIES_TOPIC,
            args.partitions,
        ),
    ];
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
        // Before payment, which posts every approved charge to it.
        ServiceName::Ledger,
        ServiceName::ReadModel,
        ServiceName::Payment,
        ServiceName::Inventory,
        ServiceName::Notification,
        ServiceName::Fulfillment,
        ServiceName::Order,
        ServiceName::Monitor,
    ];
    // Every port is chosen before anything starts and held until its
    // service does.
    let api_port = ReservedPort::near(args.http_port)?;
    let ledger_port = ReservedPort::near(args.ledger_port)?;
    let read_model_port = ReservedPort::near(args.read_model_port)?;
    let console_port = ReservedPort::near(args.console_port)?;
    let grpc_port = ReservedPort::near(args.otlp_grpc_port)?;
    let (api_addr, ledger_addr, read_model_addr) =
        (api_port.addr, ledger_port.addr, read_model_port.addr);
    let (console_addr, grpc_addr) = (console_port.addr, grpc_port.addr);
    let mut api_port = Some(api_port);
    let mut ledger_port = Some(ledger_port);
    let mut read_model_port = Some(read_model_port);
    let export = span_export(console_addr);
    let forward = user_endpoint()?;
    // The console's token: the user's, or a fresh one the console writes to
    // <data-dir>/console-token and the banner prints.
    let token = std::env::var("KAUSAL_CONSOLE_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(kausal_console::token::generate);
    // The console first, so that the services' first spans find it.
    let console = Supervised::new(
        "console",
        vec![
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
        .chain(forward.iter().flat_map(|f| {
            [
                "--forward-otlp".to_owned(),
                f.endpoint.clone(),
                "--forward-protocol".to_owned(),
                f.protocol.as_env().to_owned(),
            ]
        }))
        .collect(),
        // The console's own log lines go where everyone's go: to itself
        // (and, forwarded, to the user's endpoint), not around it.
        export
            .iter()
            .cloned()
            .chain([("KAUSAL_CONSOLE_TOKEN".to_owned(), token.clone())])
            .collect(),
        logs.join("console.log"),
        None,
    );
    let mut services = vec![console.listening_on([console_port, grpc_port])];
    for name in order {
        let port = args
            .metrics_port_base
            .saturating_add(service_port_offset(name));
        let metrics_port = ReservedPort::near(port)?;
        let metrics = metrics_port.addr;
        let own_port = match name {
            ServiceName::Order => api_port.take(),
            ServiceName::Ledger => ledger_port.take(),
            ServiceName::ReadModel => read_model_port.take(),
            _ => None,
        };
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
                "--ledger-url".into(),
                format!("http://{ledger_addr}"),
            ],
            ServiceName::Ledger => vec!["--ledger-port".into(), ledger_addr.port().to_string()],
            ServiceName::ReadModel => vec![
                "--read-model-port".into(),
                read_model_addr.port().to_string(),
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
        let service = Supervised::new(
            name.service_name(),
            [
                vec!["service".to_owned(), name.word().to_owned()],
                common(metrics),
                extra,
            ]
            .concat(),
            export.clone(),
            logs.join(format!("{}.log", name.service_name())),
            Some(metrics),
        );
        services.push(service.listening_on([metrics_port].into_iter().chain(own_port)));
    }
    // The console (first in the list) before the services, so that their
    // first spans are not refused.
    for (i, s) in services.iter_mut().enumerate() {
        s.spawn()?;
        s.policy = RestartPolicy::new(Instant::now());
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
        "  ledger API POST http://{ledger_addr}/v1/entries   GET http://{ledger_addr}/v1/accounts/{{id}}"
    );
    println!(
        "  read model GET http://{read_model_addr}/v1/accounts/{{id}}   GET http://{read_model_addr}/v1/accounts/{{id}}/statement"
    );
    println!(
        "  trace      kausal trace <order-id> --data-dir {}",
        data_dir.display()
    );
    println!("Ctrl-C stops everything.\n");
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let summary_every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let mut ticker = tokio::time::interval(SUPERVISE_EVERY);
    let mut next_summary = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        for s in &mut services {
            s.supervise(now);
        }
        if now < next_summary {
            continue;
        }
        next_summary = now + summary_every;
        let line = summary_line(&services, started.elapsed()).await;
        // A closed stdout (the terminal or the reading pipe went away) must
        // not take the supervisor down and orphan its services: the summary
        // is dropped, the services keep being supervised until a signal.
        let mut out = std::io::stdout().lock();
        let _ = if tty {
            write!(out, "\r\x1b[2K{line}")
        } else {
            writeln!(out, "{line}")
        }
        .and_then(|()| out.flush());
    }

    let _ = writeln!(std::io::stdout(), "\nstopping services…");
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
    let given_up: Vec<&str> = services
        .iter()
        .filter(|s| s.gave_up.is_some())
        .map(|s| s.name)
        .collect();
    if !given_up.is_empty() {
        bail!(
            "given up after a crash loop: {}; see {}",
            given_up.join(", "),
            logs.display()
        );
    }
    if !clean {
        bail!("not every service stopped cleanly; see {}", logs.display());
    }
    let _ = writeln!(std::io::stdout(), "stopped.");
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
/// if set, in the protocol `OTEL_EXPORTER_OTLP_PROTOCOL` names.
struct UserEndpoint {
    endpoint: String,
    protocol: kausal_console::forward::ForwardProtocol,
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
    let protocol = kausal_console::forward::ForwardProtocol::parse(
        std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok().as_deref(),
    )?;
    kausal_console::forward::ForwardConfig::new(endpoint.clone())
        .with_protocol(protocol)
        .validate()
        .context(
            "OTEL_EXPORTER_OTLP_ENDPOINT is where the console forwards; give an OTLP URL \
             such as http://localhost:4318 (or http://localhost:4317 with \
             OTEL_EXPORTER_OTLP_PROTOCOL=grpc), or unset it",
        )?;
    Ok(Some(UserEndpoint { endpoint, protocol }))
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
        ServiceName::Ledger => 7,
        ServiceName::ReadModel => 8,
    }
}

fn ensure_port_free(port: u16, flag: &str) -> anyhow::Result<()> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map(drop)
        .with_context(|| format!("port {port} is in use; pick another with {flag} (or point --kafka at a running broker)"))
}

/// A local port chosen for a service and held open (bound, not listening
/// for anyone) until the service starts: while it is held no other choice
/// of `up` can fall on it, so two services never get one port even when
/// their preferred ports are the same, and the window in which another
/// program could take it is only the service's own start.
struct ReservedPort {
    addr: SocketAddr,
    _held: TcpListener,
}

impl ReservedPort {
    /// `127.0.0.1:preferred` if free, otherwise any free port.
    fn near(preferred: u16) -> anyhow::Result<Self> {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, preferred))
            .or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .context("no free local port")?;
        Ok(Self {
            addr: held.local_addr()?,
            _held: held,
        })
    }
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
            "             forwarded to {} (OTEL_EXPORTER_OTLP_ENDPOINT, {})",
            forward.endpoint, forward.protocol
        );
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
        let m = scrape::Exposition::parse(&text);
        orders += m.sum("orders_published_total", &[]);
        approved += m.sum("payments_total", &["outcome=\"approved\""]);
        declined += m.sum("payments_total", &["outcome=\"declined\""]);
        retries += m.sum("event_retries_total", &[]);
        dlq += m.sum("dlq_events_total", &[]);
        shipped += m.sum(
            "events_published_total",
            &["event_type=\"ShipmentCreated\""],
        );
        lag += m.sum("consumer_lag", &[]);
        if let Some(s) = m.max("consumer_group_status", &[]) {
            worst = Some(worst.map_or(s, |w: f64| w.max(s)));
        }
    }
    let status = match worst {
        None => "…",
        Some(s) if s >= 2.0 => "ERR",
        Some(s) if s >= 1.0 => "WARN",
        Some(_) => "OK",
    };
    let mut line = format!(
        "[{:>5}s] orders {orders} | payments {approved} ok, {declined} declined | shipped {shipped} | retries {retries} | dead-lettered {dlq} | lag {lag} {status}",
        elapsed.as_secs()
    );
    for s in services {
        if let Some(why) = &s.gave_up {
            line.push_str(&format!(" | {}: {why}", s.name));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_services_preferring_one_port_get_two_and_it_is_free_once_let_go() {
        let first = ReservedPort::near(0).expect("a port");
        let second = ReservedPort::near(first.addr.port()).expect("another port");
        assert_ne!(first.addr, second.addr);
        assert!(
            TcpListener::bind(first.addr).is_err(),
            "held while reserved"
        );
        let addr = first.addr;
        drop(first);
        TcpListener::bind(addr).expect("free once the reservation is let go");
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// Crashes `runs` seconds after each (re)start; the waits it got.
    fn waits(policy: &mut RestartPolicy, mut now: Instant, runs: &[u64]) -> Vec<AfterCrash> {
        let mut out = Vec::new();
        for run in runs {
            now += S(*run);
            let next = policy.crashed(now);
            out.push(next);
            match next {
                AfterCrash::RestartIn(delay) => {
                    now += delay;
                    policy.restarted(now);
                }
                AfterCrash::GiveUp { .. } => break,
            }
        }
        out
    }

    #[test]
    fn the_wait_doubles_from_one_second_and_a_fast_crash_loop_is_given_up_at_the_fifth_crash() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(start);
        let got = waits(&mut policy, start, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(
            got,
            vec![
                AfterCrash::RestartIn(S(1)),
                AfterCrash::RestartIn(S(2)),
                AfterCrash::RestartIn(S(4)),
                AfterCrash::RestartIn(S(8)),
                // Crashes at 0, 1, 3, 7 and 15 s.
                AfterCrash::GiveUp {
                    crashes: 5,
                    within: S(15)
                },
            ]
        );
        assert_eq!(policy.restarts, 4);
    }

    #[test]
    fn the_wait_is_capped_at_thirty_seconds() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(start);
        // With the crash-loop limits it would be given up at 8 s.
        policy.loop_crashes = usize::MAX;
        let got = waits(&mut policy, start, &[0; 9]);
        let delays: Vec<u64> = got
            .iter()
            .map(|a| match a {
                AfterCrash::RestartIn(d) => d.as_secs(),
                AfterCrash::GiveUp { .. } => panic!("gave up: {got:?}"),
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
    }

    #[test]
    fn a_minute_without_crashing_starts_the_wait_over() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(start);
        // Four crashes (a fifth within five minutes would be a crash loop).
        let got = waits(&mut policy, start, &[0, 0, 60, 0]);
        assert_eq!(
            got,
            [1, 2, 1, 2].map(|s| AfterCrash::RestartIn(S(s))).to_vec()
        );
    }

    #[test]
    fn crashes_older_than_five_minutes_do_not_count_towards_a_crash_loop() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(start);
        // Healthy for 90 s each time: the wait stays 1 s, and never five
        // crashes within five minutes (at most four: 0, 91, 182, 273).
        let got = waits(&mut policy, start, &[90; 10]);
        assert!(
            got.iter().all(|a| *a == AfterCrash::RestartIn(S(1))),
            "{got:?}"
        );
        // Five within five minutes, however slow: given up (crashes at 59,
        // 119, 180, 243 and 310 s).
        let mut policy = RestartPolicy::new(start);
        let got = waits(&mut policy, start, &[59; 5]);
        assert_eq!(
            got.last(),
            Some(&AfterCrash::GiveUp {
                crashes: 5,
                within: S(251)
            }),
            "{got:?}"
        );
    }

    #[test]
    fn an_exit_is_described_by_its_code_or_signal() {
        assert_eq!(exit_text(ExitStatus::from_raw(101 << 8)), "exit 101");
        assert_eq!(exit_text(ExitStatus::from_raw(9)), "signal 9");
    }
}
