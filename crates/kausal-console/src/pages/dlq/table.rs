//! Dead letters as a table, the one shape every page lists them in (the
//! list on `/dlq`, the dead letters of a correlation page): one row per
//! entry with its detail link, status, where and why it failed, and the
//! Replay and Discard controls `assets/actions.js` drives — a
//! `tr[data-dlq-id]` with a `[data-status]`, `button[data-action]`s, an
//! `input.reason` and an `output.result`.

use maud::{Markup, html};

use super::{date_time, settled};
use crate::dlq::DeadLetterSummary;
use crate::pages::correlation::{dead_letter_anchor, event_anchor};
use crate::pages::{clock_ms, correlation_href, dead_letter_href, layout, rfc3339_ms, shorten};

/// The page a table stands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Around {
    /// A correlation's page: every row is of this correlation, events link
    /// to their receipts on the page, times are clock times.
    Correlation,
    /// The ledger's list: rows of any correlation, each linked, dates in full.
    Ledger,
}

/// The token form for the rows' buttons, and what to do without JavaScript.
pub(crate) fn action_forms() -> Markup {
    html! {
        (layout::token_form())
        noscript {
            p.note {
                "Replay and discard need JavaScript; without it use "
                code { "kausal dlq replay <id>" } " and " code { "kausal dlq discard <id>" } "."
            }
        }
    }
}

/// `entries` as a table.
pub(crate) fn dead_letter_table(entries: &[DeadLetterSummary], around: Around) -> Markup {
    html! {
        div.scroll {
            table.dead-letters {
                thead {
                    tr {
                        th scope="col" { "dead letter" }
                        th scope="col" { "status" }
                        th scope="col" { "failed in" }
                        th scope="col" { "event" }
                        @if around == Around::Ledger { th scope="col" { "correlation" } }
                        th scope="col" { "error" }
                        th.num scope="col" { "attempts" }
                        th scope="col" { "failed at (UTC)" }
                        th.num scope="col" { "replays" }
                        th scope="col" { "actions" }
                    }
                }
                tbody {
                    @for d in entries { (row(d, around)) }
                }
            }
        }
    }
}

fn row(d: &DeadLetterSummary, around: Around) -> Markup {
    let event_type = d.event_type.as_deref().unwrap_or("(no event-type)");
    html! {
        tr id=(dead_letter_anchor(&d.id).0) data-dlq-id=(d.id) data-topic=(d.source_topic) {
            td { a.id href=(dead_letter_href(&d.id)) { (d.id) } }
            td { span class={ "status " (d.status) } data-status { (d.status) } }
            td {
                (d.service.as_deref().unwrap_or("?"))
                // The group, when it is not named like its service.
                @if let Some(g) = d.consumer_group.as_ref().filter(|g| Some(*g) != d.service.as_ref()) {
                    br; code { (g) }
                }
            }
            td {
                @match around {
                    Around::Correlation => { a href=(event_anchor(&d.event_id).1) { (event_type) } },
                    Around::Ledger => (event_type),
                }
                br; code { (d.source_topic)
                    @if let (Some(p), Some(o)) = (d.source_partition, d.source_offset) { "[" (p) "]@" (o) } }
            }
            @if around == Around::Ledger {
                td {
                    @if let Some(c) = &d.correlation_id {
                        a.id href=(correlation_href(c)) title=(c) { (shorten(c, 28)) }
                    } @else {
                        span.meta { "—" }
                    }
                }
            }
            td {
                @if let Some(t) = &d.error_type { code.err { (t) } }
                @if let Some(m) = &d.error_message { br; span.error-message { (shorten(m, 300)) } }
            }
            td.num { (d.attempts.map(|a| a.to_string()).unwrap_or_default()) }
            td.time {
                time datetime=(rfc3339_ms(d.failed_at_ms)) {
                    @match around {
                        Around::Correlation => (clock_ms(d.failed_at_ms)),
                        Around::Ledger => (date_time(d.failed_at_ms)),
                    }
                }
            }
            td.num data-replays { (d.replay_count) }
            (actions_cell(d))
        }
    }
}

/// The Replay and Discard controls of one entry, or who settled it, when
/// and why.
pub(crate) fn actions_cell(d: &DeadLetterSummary) -> Markup {
    html! {
        td.actions {
            @if d.status == "pending" {
                div.buttons {
                    button type="button" data-action="replay-dry" { "Replay (dry run)" }
                    button.primary type="button" data-action="replay" hidden { "Replay now" }
                }
                div.buttons {
                    label.visually-hidden for={ "reason-" (d.id) } { "Reason to discard" }
                    input.reason id={ "reason-" (d.id) } type="text" maxlength="1000"
                        placeholder="reason to discard";
                    button type="button" data-action="discard-dry" { "Discard (dry run)" }
                    button.danger type="button" data-action="discard" hidden { "Discard now" }
                }
            } @else {
                span.meta { (settled(d)) }
            }
            output.result aria-live="polite" {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::correlation::tests::summary;

    #[test]
    fn a_pending_entry_has_the_buttons_a_settled_one_says_who_and_why() {
        let html = actions_cell(&summary("dlq-1", "e1", "pending")).into_string();
        for action in ["replay-dry", "replay", "discard-dry", "discard"] {
            assert!(
                html.contains(&format!(r#"data-action="{action}""#)),
                "{action}: {html}"
            );
        }
        assert!(
            html.contains(r#"<input class="reason" id="reason-dlq-1""#),
            "{html}"
        );
        let mut done = summary("dlq-2", "e1", "discarded");
        done.status_changed_at = Some("2023-11-14T22:15:00Z".into());
        done.status_reason = Some("customer <cancelled>".into());
        let html = actions_cell(&done).into_string();
        assert!(!html.contains("data-action"), "{html}");
        assert!(
            html.contains(
                "discarded by console:alice at 2023-11-14T22:15:00Z: customer &lt;cancelled&gt;"
            ),
            "{html}"
        );
    }

    #[test]
    fn the_ledger_links_correlations_a_correlation_page_links_its_events() {
        let entries = [summary("dlq-1", "e1", "pending")];
        let ledger = dead_letter_table(&entries, Around::Ledger).into_string();
        assert!(
            ledger.contains(r#"<tr id="dlq-dlq-1" data-dlq-id="dlq-1" data-topic="payments">"#),
            "{ledger}"
        );
        assert!(
            ledger.contains(r#"<a class="id" href="/dlq/dlq-1">dlq-1</a>"#),
            "{ledger}"
        );
        assert!(
            ledger
                .contains(r#"<a class="id" href="/correlations/corr-1" title="corr-1">corr-1</a>"#),
            "{ledger}"
        );
        assert!(ledger.contains("2023-11-14 22:13:20"), "{ledger}");
        assert!(
            !ledger.contains("<br><code>notification-service</code>"),
            "the group is not repeated when named like its service: {ledger}"
        );
        let page = dead_letter_table(&entries, Around::Correlation).into_string();
        assert!(
            page.contains(r##"<a href="#event-e1">PaymentProcessed</a>"##),
            "{page}"
        );
        assert!(!page.contains(">correlation</th>"), "{page}");
        assert!(page.contains("22:13:20.100"), "{page}");
    }
}
