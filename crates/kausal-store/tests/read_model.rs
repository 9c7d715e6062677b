//! The ledger's read model, run on every configured backend: a replayed
//! event changes nothing, running balances over several entries, statement
//! paging, refusals that write nothing, and concurrent entries on one
//! account.

use kausal_store::{
    MAX_STATEMENT_PAGE, ProjectError, Projected, ProjectedEntry, ProjectedLeg, Side, Store, testing,
};

fn leg(account: &str, side: Side, amount: i64) -> ProjectedLeg {
    ProjectedLeg {
        account: account.to_owned(),
        side,
        amount,
    }
}

fn entry(
    event_id: &str,
    entry_id: &str,
    currency: &str,
    legs: Vec<ProjectedLeg>,
) -> ProjectedEntry {
    ProjectedEntry {
        event_id: event_id.to_owned(),
        entry_id: entry_id.to_owned(),
        description: format!("entry {entry_id}"),
        currency: currency.to_owned(),
        order_id: Some(format!("ord-{entry_id}")),
        posted_at: "2026-11-02T10:00:00.000Z".to_owned(),
        legs,
    }
}

/// A customer pays a merchant `amount`.
fn payment(n: u32, amount: i64) -> ProjectedEntry {
    entry(
        &format!("evt-{n}"),
        &format!("e{n}"),
        "EUR",
        vec![
            leg("customer:1", Side::Debit, amount),
            leg("merchant:1", Side::Credit, amount),
        ],
    )
}

/// (balance, debits, credits, postings) of `account`.
async fn sums(store: &Store, account: &str) -> (i64, i64, i64, i64) {
    let a = store
        .read_model_account(account)
        .await
        .expect("read account")
        .unwrap_or_else(|| panic!("account {account} is projected"));
    (a.balance, a.debits, a.credits, a.postings)
}

#[tokio::test]
async fn a_replayed_event_changes_nothing() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let first = payment(1, 1250);
        assert_eq!(
            store.project_entry(&first, 1_000).await.expect(label),
            Projected::Applied { lines: 2 },
            "{label}"
        );
        let before_account = store.read_model_account("customer:1").await.expect(label);
        let before_lines = store
            .read_model_statement("customer:1", 0, 100)
            .await
            .expect(label);
        for _ in 0..3 {
            assert_eq!(
                store.project_entry(&first, 9_999).await.expect(label),
                Projected::Duplicate,
                "{label}: a redelivery inserts nothing"
            );
        }
        assert_eq!(
            store.read_model_account("customer:1").await.expect(label),
            before_account,
            "{label}: sums and updated_at unchanged"
        );
        assert_eq!(
            store
                .read_model_statement("customer:1", 0, 100)
                .await
                .expect(label),
            before_lines,
            "{label}: the statement is unchanged"
        );
        assert_eq!(
            sums(&store, "customer:1").await,
            (1250, 1250, 0, 1),
            "{label}"
        );
        assert_eq!(
            sums(&store, "merchant:1").await,
            (-1250, 0, 1250, 1),
            "{label}"
        );
        // The same entry under another event id is another event: the
        // read model projects events, the ledger refuses double postings.
        let mut again = first.clone();
        again.event_id = "evt-1-bis".into();
        assert_eq!(
            store.project_entry(&again, 2_000).await.expect(label),
            Projected::Applied { lines: 2 },
            "{label}"
        );
        assert_eq!(
            sums(&store, "customer:1").await,
            (2500, 2500, 0, 2),
            "{label}"
        );
    }
}

#[tokio::test]
async fn running_balances_over_several_entries() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        let entries = [
            payment(1, 1000),
            payment(2, 250),
            // A refund: the customer is credited back.
            entry(
                "evt-3",
                "e3",
                "EUR",
                vec![
                    leg("merchant:1", Side::Debit, 400),
                    leg("customer:1", Side::Credit, 400),
                ],
            ),
            // Two legs on one account in one entry, split across accounts.
            entry(
                "evt-4",
                "e4",
                "EUR",
                vec![
                    leg("customer:1", Side::Debit, 70),
                    leg("customer:1", Side::Debit, 30),
                    leg("merchant:1", Side::Credit, 100),
                ],
            ),
        ];
        for (i, e) in entries.iter().enumerate() {
            assert!(
                matches!(
                    store.project_entry(e, 1_000 + i as i64).await.expect(label),
                    Projected::Applied { .. }
                ),
                "{label}: {e:?}"
            );
        }
        let page = store
            .read_model_statement("customer:1", 0, 100)
            .await
            .expect(label);
        let got: Vec<(i64, &str, Side, i64, i64)> = page
            .lines
            .iter()
            .map(|l| {
                (
                    l.seq,
                    l.entry_id.as_str(),
                    l.direction,
                    l.amount,
                    l.balance_after,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "e1", Side::Debit, 1000, 1000),
                (2, "e2", Side::Debit, 250, 1250),
                (3, "e3", Side::Credit, 400, 850),
                (4, "e4", Side::Debit, 70, 920),
                (5, "e4", Side::Debit, 30, 950),
            ],
            "{label}"
        );
        assert_eq!(page.next_after, None, "{label}: one page holds it all");
        let line = &page.lines[2];
        assert_eq!(line.event_id, "evt-3", "{label}");
        assert_eq!(line.leg_index, 1, "{label}");
        assert_eq!(line.description, "entry e3", "{label}");
        assert_eq!(line.order_id.as_deref(), Some("ord-e3"), "{label}");
        assert_eq!(line.posted_at, "2026-11-02T10:00:00.000Z", "{label}");
        assert_eq!(
            sums(&store, "customer:1").await,
            (950, 1350, 400, 5),
            "{label}"
        );
        assert_eq!(
            sums(&store, "merchant:1").await,
            (-950, 400, 1350, 4),
            "{label}"
        );
        let merchant = store
            .read_model_statement("merchant:1", 0, 100)
            .await
            .expect(label);
        let balances: Vec<i64> = merchant.lines.iter().map(|l| l.balance_after).collect();
        assert_eq!(balances, [-1000, -1250, -850, -950], "{label}");
        let account = store
            .read_model_account("customer:1")
            .await
            .expect(label)
            .expect("projected");
        assert_eq!(
            (account.currency.as_str(), account.updated_at_ms),
            ("EUR", 1_003),
            "{label}"
        );
        assert_eq!(
            store.read_model_account("nobody").await.expect(label),
            None,
            "{label}"
        );
    }
}

#[tokio::test]
async fn statements_page_by_cursor() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        for n in 1..=7 {
            store
                .project_entry(&payment(n, i64::from(n)), 1_000)
                .await
                .expect(label);
        }
        let mut after = 0;
        let mut pages = Vec::new();
        loop {
            let page = store
                .read_model_statement("customer:1", after, 3)
                .await
                .expect(label);
            pages.push(page.lines.iter().map(|l| l.seq).collect::<Vec<_>>());
            match page.next_after {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(pages, [vec![1, 2, 3], vec![4, 5, 6], vec![7]], "{label}");
        // Exactly a page's worth left: no cursor to an empty page.
        let page = store
            .read_model_statement("customer:1", 4, 3)
            .await
            .expect(label);
        assert_eq!(page.lines.len(), 3, "{label}");
        assert_eq!(page.next_after, None, "{label}");
        // Past the end, an unknown account: empty, no cursor.
        for (account, after) in [("customer:1", 7), ("nobody", 0)] {
            let page = store
                .read_model_statement(account, after, 3)
                .await
                .expect(label);
            assert!(
                page.lines.is_empty() && page.next_after.is_none(),
                "{label}"
            );
        }
        // Limits are clamped to 1..=MAX_STATEMENT_PAGE.
        let page = store
            .read_model_statement("customer:1", 0, 0)
            .await
            .expect(label);
        assert_eq!((page.lines.len(), page.next_after), (1, Some(1)), "{label}");
        let page = store
            .read_model_statement("customer:1", 0, MAX_STATEMENT_PAGE * 10)
            .await
            .expect(label);
        assert_eq!(page.lines.len(), 7, "{label}");
    }
}

#[tokio::test]
async fn refused_entries_write_nothing() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        store
            .project_entry(&payment(1, 500), 1_000)
            .await
            .expect(label);
        // A new account first in lock order, then one in another currency:
        // neither the new account nor any line is kept.
        let usd = entry(
            "evt-usd",
            "e-usd",
            "USD",
            vec![
                leg("a-new", Side::Debit, 100),
                leg("customer:1", Side::Credit, 100),
            ],
        );
        match store.project_entry(&usd, 2_000).await {
            Err(ProjectError::CurrencyMismatch {
                account,
                account_currency,
                entry_currency,
                ..
            }) => assert_eq!(
                (
                    account.as_str(),
                    account_currency.as_str(),
                    entry_currency.as_str()
                ),
                ("customer:1", "EUR", "USD"),
                "{label}"
            ),
            other => panic!("{label}: {other:?}"),
        }
        assert_eq!(
            store.read_model_account("a-new").await.expect(label),
            None,
            "{label}"
        );
        let zero = entry(
            "evt-0",
            "e0",
            "EUR",
            vec![leg("customer:1", Side::Debit, 0)],
        );
        assert!(
            matches!(
                store.project_entry(&zero, 2_000).await,
                Err(ProjectError::InvalidAmount { index: 0, .. })
            ),
            "{label}"
        );
        let huge = entry(
            "evt-huge",
            "e-huge",
            "EUR",
            vec![
                leg("merchant:1", Side::Credit, i64::MAX),
                leg("customer:1", Side::Debit, i64::MAX),
            ],
        );
        assert!(
            matches!(
                store.project_entry(&huge, 2_000).await,
                Err(ProjectError::Overflow { .. })
            ),
            "{label}"
        );
        assert_eq!(
            sums(&store, "customer:1").await,
            (500, 500, 0, 1),
            "{label}"
        );
        assert_eq!(
            sums(&store, "merchant:1").await,
            (-500, 0, 500, 1),
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_entries_on_one_account_lose_nothing() {
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let label = db.label;
        // Entries touching the same two accounts in both leg orders, from
        // many tasks at once: no lost update, no deadlock, no gap in seq.
        let tasks: Vec<_> = (0..40u32)
            .map(|n| {
                let store = store.clone();
                let (first, second) = if n % 2 == 0 {
                    ("customer:1", "merchant:1")
                } else {
                    ("merchant:1", "customer:1")
                };
                let e = entry(
                    &format!("evt-{n}"),
                    &format!("e{n}"),
                    "EUR",
                    vec![leg(first, Side::Debit, 10), leg(second, Side::Credit, 10)],
                );
                tokio::spawn(async move { store.project_entry(&e, 1_000).await })
            })
            .collect();
        for task in tasks {
            assert!(
                matches!(
                    task.await.expect("joins").expect(label),
                    Projected::Applied { lines: 2 }
                ),
                "{label}"
            );
        }
        assert_eq!(
            sums(&store, "customer:1").await,
            (0, 200, 200, 40),
            "{label}"
        );
        let page = store
            .read_model_statement("customer:1", 0, 100)
            .await
            .expect(label);
        let seqs: Vec<i64> = page.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "{label}");
        // Each line's balance follows from the one before.
        let mut balance = 0;
        for l in &page.lines {
            balance += match l.direction {
                Side::Debit => l.amount,
                Side::Credit => -l.amount,
            };
            assert_eq!(l.balance_after, balance, "{label}: line {}", l.seq);
        }
    }
}
