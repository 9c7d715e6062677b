//! After an approved charge, the customer → merchant entry goes to the
//! ledger service over HTTP (issue 14, seed 004's orchestrator → ledger
//! call): a CLIENT span under the handler's `process` span, `traceparent`,
//! `X-Correlation-ID` and `X-Causation-ID` (the `OrderPlaced` being
//! handled) injected, the order id as `Idempotency-Key`. A ledger that
//! refuses connections, or does not answer them within the connect
//! timeout, is down: the handling fails as unavailable and the
//! consumer runtime tries it again for as long as the ledger is down,
//! without dead-lettering (the partition waits). A transient failure (a
//! timeout, 429, 5xx) fails it as retryable, so the retry policy tries the
//! whole handling again within its budget — the gateway and the ledger
//! both answer a repeated order the same way — and dead-letters it in the
//! end; a refusal (400, 409) dead-letters it at once.

use kausal_contracts::OrderPlaced;
use kausal_contracts::ledger::{Direction, LegRequest, MAX_ID_LEN, PostEntryRequest, paths};
use kausal_http::{CallContext, HttpClient};
use kausal_kafka::{HandlerError, IncomingEvent};

/// The account every charge is credited to.
pub const DEFAULT_MERCHANT_ACCOUNT: &str = "merchant:kausal-shop";

/// Posts charges to a ledger service at `base_url`.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    http: HttpClient,
    entries_url: String,
    merchant_account: String,
}

impl LedgerClient {
    /// `base_url`: the ledger's address, `http://127.0.0.1:8095`.
    pub fn new(service: &str, base_url: &str) -> Result<Self, HandlerError> {
        Ok(Self {
            http: HttpClient::new(service)?,
            entries_url: format!("{}{}", base_url.trim_end_matches('/'), paths::ENTRIES),
            merchant_account: DEFAULT_MERCHANT_ACCOUNT.to_owned(),
        })
    }

    /// The entry of an approved charge: the customer's account debited,
    /// the merchant's credited, by the order's amount.
    pub fn entry(
        &self,
        order: &OrderPlaced,
        payment_id: &str,
    ) -> Result<PostEntryRequest, HandlerError> {
        let amount = minor_units(order.amount, &order.currency).ok_or_else(|| {
            HandlerError::fatal(
                "InvalidOrder",
                format!(
                    "amount {} {} has no exact count of minor units",
                    order.amount, order.currency
                ),
            )
        })?;
        Ok(PostEntryRequest {
            entry_id: None,
            description: format!("payment {payment_id} for order {}", order.order_id),
            currency: order.currency.clone(),
            order_id: Some(order.order_id.clone()),
            legs: vec![
                LegRequest {
                    account: customer_account(&order.user_id),
                    direction: Direction::Debit,
                    amount,
                },
                LegRequest {
                    account: self.merchant_account.clone(),
                    direction: Direction::Credit,
                    amount,
                },
            ],
        })
    }

    /// Posts `order`'s entry while handling `event`.
    pub async fn post_charge(
        &self,
        order: &OrderPlaced,
        payment_id: &str,
        event: &IncomingEvent,
    ) -> Result<(), HandlerError> {
        let entry = self.entry(order, payment_id)?;
        let context = CallContext::new(event.correlation_id().clone())
            .caused_by(event.event_id())
            .parent(Some(event.trace));
        self.http
            .post_json(
                &self.entries_url,
                paths::ENTRIES,
                &entry,
                &context,
                Some(&order.order_id),
            )
            .await?;
        Ok(())
    }
}

/// The customer's account id: `customer:` and the user id, with what the
/// ledger does not accept in an id replaced by `_`, cut to its length.
fn customer_account(user_id: &str) -> String {
    let cleaned: String = user_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut account = format!("customer:{cleaned}");
    account.truncate(MAX_ID_LEN);
    account
}

/// `amount` in the currency's minor units: cents, except for the
/// currencies without them (ISO 4217 exponent 0). `None` when it is not a
/// whole number of minor units (12.345 EUR) or not positive.
fn minor_units(amount: f64, currency: &str) -> Option<u64> {
    let exponent = match currency {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" => 0,
        _ => 2,
    };
    let scaled = amount * 10f64.powi(exponent);
    let rounded = scaled.round();
    ((rounded - scaled).abs() < 1e-6 && (1.0..9.0e15).contains(&rounded)).then_some(rounded as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_become_minor_units_exactly_or_not_at_all() {
        let cases = [
            (12.5, "EUR", Some(1250)),
            (19.99, "EUR", Some(1999)),
            (0.01, "USD", Some(1)),
            (1500.0, "JPY", Some(1500)),
            (12.345, "EUR", None),
            (12.5, "JPY", None),
            (0.0, "EUR", None),
            (-3.0, "EUR", None),
        ];
        for (amount, currency, want) in cases {
            assert_eq!(minor_units(amount, currency), want, "{amount} {currency}");
        }
    }

    #[test]
    fn customer_accounts_are_ids_the_ledger_accepts() {
        assert_eq!(customer_account("u-17"), "customer:u-17");
        assert_eq!(customer_account("ann smith/π"), "customer:ann_smith__");
        assert_eq!(customer_account(&"x".repeat(100)).len(), MAX_ID_LEN);
    }
}
