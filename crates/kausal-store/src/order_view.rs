//! The order service's read model, one row per order.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::{Backend, Result, Store};

/// What the order service knows about one order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: String,
    /// `placed`, `paid`, `payment_failed`, `reserved`, `shipped`.
    pub status: String,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub amount: Option<f64>,
    pub currency: Option<String>,
    pub customer_email: Option<String>,
    pub payment_id: Option<String>,
    pub failure_reason: Option<String>,
    pub reservation_id: Option<String>,
    pub shipment_id: Option<String>,
    pub notified: bool,
    pub updated_at_ms: i64,
}

impl Store {
    pub async fn order_view(&self, order_id: &str) -> Result<Option<OrderView>> {
        read(self.pool(), order_id).await
    }

    /// Reads an order's view, lets `change` fold an event into it and
    /// writes what it returns (nothing for `Ok(None)` or an error), as one
    /// step: events of one order arrive on different topics and are handled
    /// concurrently (a worker per partition, possibly in other processes),
    /// and two read-then-write folds that overlap would lose the first
    /// one's change. SQLite: one write transaction holds the file's lock
    /// throughout; PostgreSQL: a transaction-scoped advisory lock per order.
    pub async fn update_order_view<E>(
        &self,
        order_id: &str,
        change: impl FnOnce(Option<OrderView>) -> std::result::Result<Option<OrderView>, E>,
    ) -> Result<std::result::Result<(), E>> {
        let (_turn, mut tx) = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query(include_str!("../sql/order_view_lock.sql"))
                .bind(order_id)
                .execute(&mut *tx)
                .await?;
        }
        let current = read(&mut *tx, order_id).await?;
        match change(current) {
            Ok(Some(v)) => write(&mut *tx, &v).await?,
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    pub async fn save_order_view(&self, v: &OrderView) -> Result<()> {
        write(self.pool(), v).await
    }
}

async fn read<'e>(
    db: impl Executor<'e, Database = Any>,
    order_id: &str,
) -> Result<Option<OrderView>> {
    let row = sqlx::query(include_str!("../sql/order_view.sql"))
        .bind(order_id)
        .fetch_optional(db)
        .await?;
    row.map(|r| view_of(&r)).transpose()
}

fn view_of(r: &AnyRow) -> Result<OrderView> {
    Ok(OrderView {
        order_id: r.try_get(0)?,
        status: r.try_get(1)?,
        correlation_id: r.try_get(2)?,
        user_id: r.try_get(3)?,
        amount: r.try_get(4)?,
        currency: r.try_get(5)?,
        customer_email: r.try_get(6)?,
        payment_id: r.try_get(7)?,
        failure_reason: r.try_get(8)?,
        reservation_id: r.try_get(9)?,
        shipment_id: r.try_get(10)?,
        notified: r.try_get::<i64, _>(11)? != 0,
        updated_at_ms: r.try_get(12)?,
    })
}

async fn write<'e>(db: impl Executor<'e, Database = Any>, v: &OrderView) -> Result<()> {
    sqlx::query(include_str!("../sql/order_view_upsert.sql"))
        .bind(&v.order_id)
        .bind(&v.status)
        .bind(&v.correlation_id)
        .bind(&v.user_id)
        .bind(v.amount.unwrap_or_default())
        .bind(&v.currency)
        .bind(&v.customer_email)
        .bind(&v.payment_id)
        .bind(&v.failure_reason)
        .bind(&v.reservation_id)
        .bind(&v.shipment_id)
        .bind(i64::from(v.notified))
        .bind(v.updated_at_ms)
        .bind(i64::from(v.amount.is_some()))
        .execute(db)
        .await?;
    Ok(())
}
