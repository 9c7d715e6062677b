//! loyalty-service: ten points for every shipped order. A complete Kausal
//! service on the public API; README.md shows this file down to the tests.
use clap::Parser;
use kausal_contracts::ShipmentCreated;
use kausal_kafka::{Emitter, Event, Handler, HandlerError, IncomingEvent};
use kausal_service::{Consumer, Service, ServiceConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct PointsAwarded {
    order_id: String,
    points: u32,
}

impl Event for PointsAwarded {
    const TYPE: &'static str = "PointsAwarded";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = "loyalty";
    fn key(&self) -> Option<&str> {
        Some(&self.order_id)
    }
}

struct Loyalty;

impl Handler for Loyalty {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        let shipped: ShipmentCreated = event.decode()?;
        tracing::info!(orderId = %shipped.order_id, "points awarded");
        out.emit(&PointsAwarded {
            order_id: shipped.order_id,
            points: 10,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Service::new("loyalty-service", ServiceConfig::parse())
        .consume(Consumer::new("loyalty-service", &["shipments"], Loyalty).emits_to(&["loyalty"]))
        .run()
        .await
}

#[cfg(test)]
mod tests {
    use kausal_contracts::CustomerNotified;
    use kausal_kafka::testing;

    use super::*;

    fn shipped(order_id: &str) -> ShipmentCreated {
        ShipmentCreated {
            order_id: order_id.to_owned(),
            shipment_id: "shp-1".to_owned(),
            carrier: "DHL".to_owned(),
            created_at: "2026-12-01T00:00:00.000Z".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_shipped_order_earns_ten_points_in_the_same_story() {
        let record = testing::record(&shipped("ord-7"));
        let handled = testing::handle(&Loyalty, "loyalty-service", &record).await;
        assert!(handled.result.is_ok(), "{:?}", handled.result);
        let [awarded] = handled.emitted.as_slice() else {
            panic!("one event, got {:?}", handled.emitted);
        };
        let points: PointsAwarded = awarded.decode().expect("a PointsAwarded");
        assert_eq!((points.order_id.as_str(), points.points), ("ord-7", 10));
        assert_eq!(awarded.topic, "loyalty");
        assert_eq!(awarded.key.as_deref(), Some(&b"ord-7"[..]));
        assert_eq!(awarded.headers.correlation_id, *record.correlation_id());
        assert_eq!(awarded.headers.causation_id, Some(record.event_id()));
        let log = &handled.captured.logs[0];
        assert_eq!(log.message, "points awarded");
        assert_eq!(log.fields.get("orderId").map(String::as_str), Some("ord-7"));
    }

    #[tokio::test]
    async fn another_event_is_a_fatal_unknown_type_and_earns_nothing() {
        let record = testing::record(&CustomerNotified {
            order_id: "ord-8".to_owned(),
            email: None,
            channel: "in-app".to_owned(),
            notified_at: "2026-12-01T00:00:00.000Z".to_owned(),
        });
        let handled = testing::handle(&Loyalty, "loyalty-service", &record).await;
        let error = handled.result.expect_err("not a shipment");
        assert_eq!(error.error_type, "UnknownEventType");
        assert!(handled.emitted.is_empty());
    }

    /// The README shows this file as it is, down to the tests.
    #[test]
    fn the_readme_shows_this_service() {
        let readme = include_str!("../../../README.md");
        let source = include_str!("main.rs");
        let service = &source[..source.find("#[cfg(test)]").expect("tests")];
        let fenced = format!("```rust\n{}```", service.trim_end().to_owned() + "\n");
        assert!(
            readme.contains(&fenced),
            "README.md must show examples/loyalty/src/main.rs down to its tests, in a ```rust block"
        );
    }
}
