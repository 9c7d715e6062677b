//! Failure visibility (issue 15): a runtime whose settling dies stops with
//! an error, and what it held is redelivered; `kausal up` stops restarting
//! a service in a crash loop and says so.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kausal_kafka::{
    ConsumerRuntime, Emitter, EventProducer, HandlerError, IncomingEvent, RuntimeError,
};
use kausal_telemetry::Metrics;
use tokio_util::sync::CancellationToken;

use crate::harness::{Engine, TestBroker, eventually, relative, scratch_dir, send, unique};

/// Handles every record by doing nothing.
struct Accept;

impl kausal_kafka::Handler for Accept {
    async fn handle(&self, _: &IncomingEvent, _: &mut Emitter) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A member of `group` on `topic` whose outcome observer (called when a
/// record settles) runs `observe`.
fn member(
    b: &TestBroker,
    group: &str,
    topic: &str,
    observe: impl Fn(&IncomingEvent) + Send + Sync + 'static,
) -> ConsumerRuntime<kausal_kafka::runtime::Single<Accept>> {
    let producer = EventProducer::new(&b.kafka, "settle-test", Metrics::new()).expect("producer");
    ConsumerRuntime::new(
        b.kafka.clone(),
        "settle-test",
        group,
        &[topic],
        Accept,
        producer,
    )
    .commit_interval(Duration::from_millis(50))
    .on_outcome(Arc::new(move |event, _| observe(event)))
}

on_brokers!(a_dead_settle_stops_the_runtime_with_an_error_and_its_record_is_redelivered: Sqlite);
/// The outcome observer is part of settling: when it panics on the record
/// at offset 1, `run` ends with `RuntimeError::TaskDied` naming it (before
/// issue 15 it ended `Ok`, the process exited 0), offset 0 is committed and
/// offset 1 is not: a second member of the group gets records 1 and 2 again.
async fn a_dead_settle_stops_the_runtime_with_an_error_and_its_record_is_redelivered(
    engine: Engine,
) {
    let b = TestBroker::start(engine).await;
    let topic = format!("settle-death-{}", unique());
    b.create_topics(&[(&topic, 1)]).await;
    let plain = b.plain_producer();
    for i in 0..3 {
        let key = format!("record-{i}");
        send(&plain, &topic, Some(key.as_bytes()), Some(b"{}"), &[]).await;
    }
    let group = format!("settle-death-{}", unique());

    let settled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let seen = settled.clone();
    let first = member(&b, &group, &topic, move |event| {
        assert_ne!(event.offset, 1, "the observer refuses offset 1");
        seen.lock().expect("lock").push(event.offset);
    });
    let result = tokio::time::timeout(Duration::from_secs(60), first.run(CancellationToken::new()))
        .await
        .expect("the runtime stops by itself");
    match result {
        Err(RuntimeError::TaskDied { task, reason }) => {
            assert_eq!(task, format!("the outcome observer settling {topic}/0@1"));
            assert!(
                reason.starts_with("panicked: ")
                    && reason.contains("the observer refuses offset 1"),
                "{reason}"
            );
        }
        other => panic!("expected TaskDied, got {other:?}"),
    }
    assert_eq!(*settled.lock().expect("lock"), [0]);
    let committed = b
        .admin()
        .committed_offsets(&group, &topic)
        .expect("committed offsets");
    assert_eq!(committed, [(0, Some(1))], "offset 0 done, 1 not");

    let redelivered: Arc<Mutex<Vec<i64>>> = Arc::default();
    let seen = redelivered.clone();
    let second = member(&b, &group, &topic, move |event| {
        seen.lock().expect("lock").push(event.offset);
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(second.run(shutdown.clone()));
    let both = eventually(Duration::from_secs(60), || {
        redelivered.lock().expect("lock").len() >= 2
    })
    .await;
    shutdown.cancel();
    let summary = task.await.expect("task").expect("the second member runs");
    assert!(both, "redelivered: {:?}", redelivered.lock().expect("lock"));
    assert_eq!(*redelivered.lock().expect("lock"), [1, 2]);
    assert_eq!(summary.processed, 2);
}

/// `kausal up` in which every service but the order service and the
/// console exits at once (`KAUSAL_HTTP_PORT` is read by a `kausal service`
/// not given `--http-port`, and is no port): each is restarted after 1, 2,
/// 4 and 8 s, then given up; the summary line says so and Ctrl-C exits 1.
#[test]
fn kausal_up_gives_up_on_a_service_in_a_crash_loop_and_says_so() {
    let dir = scratch_dir();
    let data_dir = relative(&dir, "data");
    let free = crate::harness::free_port;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kausal"))
        .arg("up")
        .args([
            "--rate",
            "1",
            "--broker-port",
            &free().to_string(),
            "--metrics-port-base",
            &free().to_string(),
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("KAUSAL_KAFKA")
        .env_remove("BOOTSTRAP_SERVERS")
        .env_remove("KAUSAL_DATABASE_URL")
        .env("KAUSAL_HTTP_PORT", "not-a-port")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kausal up starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let gave_up = loop {
        if started.elapsed() > Duration::from_secs(120) {
            break None;
        }
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(line.clone());
            if line.contains("payment-service: crash loop") {
                break Some(line);
            }
        }
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal delivered");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let Some(line) = gave_up else {
        panic!(
            "no crash loop reported within 2 minutes; output:\n{}",
            seen.join("\n")
        );
    };
    assert!(
        line.contains("payment-service: crash loop, gave up after 4 restarts (exit 2)"),
        "{line}"
    );
    assert!(
        !line.contains("order-service: crash loop") && !line.contains("console: crash loop"),
        "only the services that cannot start: {line}"
    );
    let up_log = std::fs::read_to_string(data_dir.join("logs").join("up.log")).expect("up.log");
    assert!(
        up_log
            .lines()
            .any(|l| l.contains("gave up restarting it") && l.contains("\"ERROR\"")),
        "up.log says so at ERROR:\n{up_log}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "a service given up makes `up` exit 1"
    );
}
