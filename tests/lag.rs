//! `kausal lag` against the embedded broker: lag in records and seconds.

use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::{Engine, TestBroker, group_consumer, send, unique};

const BIN: &str = env!("CARGO_BIN_EXE_kausal");

fn commit(b: &TestBroker, group: &str, topic: &str, offset: i64) {
    let c = group_consumer(b, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("tpl");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_in_records_and_seconds_is_the_age_of_the_first_unread_record() {
    let b = TestBroker::start(Engine::Sqlite).await;
    b.create_topics(&[("lagged", 1)]).await;
    let producer = b.plain_producer();
    let before = chrono::Utc::now().timestamp_millis();
    for i in 0..10 {
        send(
            &producer,
            "lagged",
            Some(format!("k{i}").as_bytes()),
            Some(b"{}"),
            &[],
        )
        .await;
    }
    let behind = format!("behind-{}", unique());
    let caught_up = format!("caught-up-{}", unique());
    commit(&b, &behind, "lagged", 4);
    commit(&b, &caught_up, "lagged", 10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run = |group: &str| {
        let out = Command::new(BIN)
            .args([
                "lag",
                "--group",
                group,
                "--topic",
                "lagged",
                "--samples",
                "1",
                "--json",
                "--kafka",
                &b.kafka.bootstrap_servers,
            ])
            .output()
            .expect("kausal lag runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        doc[0]["partitions"][0].clone()
    };
    let lagging = run(&behind);
    let elapsed = (chrono::Utc::now().timestamp_millis() - before) as f64 / 1000.0;
    assert_eq!(lagging["lag"], 6);
    assert_eq!(lagging["committed"], 4);
    assert_eq!(lagging["high_watermark"], 10);
    let secs = lagging["lag_seconds"].as_f64().expect("seconds");
    // The first unread record was produced after `before` and at least 2 s ago.
    assert!(
        secs >= 2.0 && secs <= elapsed + 1.0,
        "lag {secs} s, elapsed {elapsed} s"
    );
    let fine = run(&caught_up);
    assert_eq!(fine["lag"], 0);
    assert_eq!(fine["lag_seconds"], 0.0);
    assert_eq!(fine["status"], "ok");
}
