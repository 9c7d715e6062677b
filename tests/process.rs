//! The `kausal` binary as users run it: real processes, real signals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kausal_kafka::EventProducer;
use kausal_telemetry::Metrics;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{Engine, TestBroker, count_by_key, relative, scratch_dir};

const BIN: &str = env!("CARGO_BIN_EXE_kausal");

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal delivered");
}

/// Waits for the child to exit, killing it after `timeout`.
fn wait(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn payment_service(b: &TestBroker, database: &str) -> Child {
    Command::new(BIN)
        .args([
            "service",
            "payment",
            "--kafka",
            &b.kafka.bootstrap_servers,
            "--database",
            database,
        ])
        .args([
            "--payment-failure-rate",
            "0",
            "--payment-decline-rate",
            "0",
            "--payment-latency-ms",
            "5",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("payment service starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_exits_0_commits_finished_work_and_restart_loses_nothing() {
    let b = TestBroker::start(Engine::Sqlite).await;
    b.create_topics(&[("orders", 3), ("orders.dlq", 3), ("payments", 3)])
        .await;
    let n = 400;
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    for i in 0..n {
        let order = kausal_contracts::OrderPlaced {
            order_id: format!("ord-{i}"),
            user_id: "u".into(),
            amount: 1.0,
            currency: "EUR".into(),
            customer_email: None,
            created_at: "2026-11-22T00:00:00Z".into(),
        };
        kausal_order::place_order(&producer, "orders", &order, None, None)
            .await
            .expect("order");
    }
    let database = format!("sqlite://{}", b.dir.path().join("kausal.db").display());

    let mut first = payment_service(&b, &database);
    // Stop it once some, but not all, orders are paid.
    let admin = b.admin();
    let paid = || {
        admin
            .watermarks("payments")
            .map(|w| w.iter().map(|w| w.high).sum::<i64>())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while paid() < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(paid() >= 50, "the service paid orders");
    signal(&first, Signal::SIGTERM);
    let status = wait(&mut first, Duration::from_secs(30)).expect("stops within 30 s");
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");

    let paid_before = paid();
    assert!(
        paid_before < n as i64,
        "stopped mid-stream ({paid_before} of {n} paid): slow the service down"
    );
    let committed: i64 = admin
        .committed_offsets("payment-service", "orders")
        .expect("committed")
        .iter()
        .map(|(_, o)| o.unwrap_or(0))
        .sum();
    assert_eq!(
        committed, paid_before,
        "exactly the finished work is committed"
    );

    let mut second = payment_service(&b, &database);
    let deadline = Instant::now() + Duration::from_secs(120);
    while paid() < n as i64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&second, Signal::SIGTERM);
    assert_eq!(
        wait(&mut second, Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    let payments = b.read_all("payments", n, Duration::from_secs(30));
    let per_order = count_by_key(&payments);
    assert_eq!(per_order.len(), n, "no order lost");
    let twice: Vec<_> = per_order.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "charged twice: {twice:?}");
}

#[test]
fn kausal_up_shows_payments_flowing_and_ctrl_c_exits_0() {
    let dir = scratch_dir();
    let data_dir = relative(&dir, "data");
    let free = crate::harness::free_port;
    let mut up = Command::new(BIN)
        .args([
            "up",
            "--rate",
            "50",
            "--broker-port",
            &free().to_string(),
            "--metrics-port-base",
            &free().to_string(),
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("KAUSAL_KAFKA")
        .env_remove("BOOTSTRAP_SERVERS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kausal up starts");
    let stdout = up.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut flowing = None;
    let mut seen = Vec::new();
    while Instant::now() < deadline && flowing.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let ok = line
                .split("payments ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0);
            if ok > 0.0 {
                flowing = Some(line.clone());
            }
            seen.push(line);
        }
    }
    signal(&up, Signal::SIGINT);
    let status = wait(&mut up, Duration::from_secs(60));
    assert!(
        flowing.is_some(),
        "no payments within 2 minutes; output:\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter().any(|l| l.contains("metrics http://")),
        "the banner says where the metrics are"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "Ctrl-C exits 0");
}
