//! The causal graph as an inline SVG, laid out on the server: one lane per
//! service (the producer of an event, or the consumer that failed), one
//! column per step of causation, events as nodes and causation as arrows.
//! A hop that failed (a dead letter) or never happened (a group that
//! receives this event type elsewhere but left no receipt) is a red node
//! in the consumer's lane with a red arrow to it, labelled with the error.
//!
//! Geometry is attributes, colours are CSS classes (`console.css`): the
//! pages' Content-Security-Policy allows no inline style.

use std::collections::{BTreeMap, HashMap, HashSet};

use maud::{Markup, html};

use super::shorten;
use crate::query::CorrelationDocument;

/// Width of the lane labels on the left.
const LABEL_W: i64 = 170;
/// Width of one causation step.
const COL_W: i64 = 230;
/// The size of a node's box, in every graph the console draws.
pub(super) const NODE_W: i64 = 196;
const NODE_H: i64 = 42;
/// Vertical room per node stacked in one lane and column.
const SLOT_H: i64 = 54;
const LANE_PAD: i64 = 10;
/// Characters of a label that fit in a node.
pub(super) const LABEL_CHARS: usize = 26;
/// Causation deeper than this is drawn in the last column (lineage walks
/// are capped at depth 64 too).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Event,
    Failed,
    Missing,
}

impl NodeKind {
    fn node_class(self) -> &'static str {
        match self {
            Self::Event => "node event",
            Self::Failed => "node fail",
            Self::Missing => "node fail missing",
        }
    }

    fn edge_class(self) -> &'static str {
        match self {
            Self::Event => "edge",
            Self::Failed => "edge fail",
            Self::Missing => "edge fail missing",
        }
    }
}

#[derive(Debug)]
struct Node {
    kind: NodeKind,
    lane: usize,
    col: usize,
    slot: usize,
    label: String,
    sub: String,
    /// The tooltip: everything the node stands for, unshortened.
    title: String,
    href: String,
}

#[derive(Debug)]
struct Arrow {
    from: usize,
    to: usize,
    kind: NodeKind,
}

/// The graph of `doc`, or a sentence when it has no recorded event.
pub fn causal_graph(doc: &CorrelationDocument) -> Markup {
    if doc.events.is_empty() {
        return html! {
            p.note {
                "No event of this correlation is recorded (only spans): the lineage recorder has "
                "not stored them, or they were pruned."
            }
        };
    }
    let layout = Layout::of(doc);
    layout.render(&doc.correlation_id)
}

#[derive(Debug, Default)]
struct Layout {
    lanes: Vec<String>,
    nodes: Vec<Node>,
    arrows: Vec<Arrow>,
}

impl Layout {
    fn of(doc: &CorrelationDocument) -> Self {
        let depth = depths(doc);
        let mut layout = Self::default();
        let mut slots: HashMap<(usize, usize), usize> = HashMap::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut order: Vec<&kausal_store::LineageEvent> = doc.events.iter().collect();
        order.sort_by_key(|e| (depth[e.event_id.as_str()], e.occurred_at_ms));
        for e in order {
            let lane = layout.lane(e.source_service.as_deref().unwrap_or("(unknown service)"));
            let col = depth[e.event_id.as_str()];
            let event_type = e.event_type.as_deref().unwrap_or("(no event-type)");
            index.insert(e.event_id.as_str(), layout.nodes.len());
            layout.push(
                &mut slots,
                Node {
                    kind: NodeKind::Event,
                    lane,
                    col,
                    slot: 0,
                    label: shorten(event_type, LABEL_CHARS),
                    sub: format!("{} · {}", shorten(&e.event_id, 13), e.topic),
                    title: format!(
                        "{event_type} {} on {}[{}]@{}",
                        e.event_id, e.topic, e.partition, e.offset
                    ),
                    href: super::correlation::event_anchor(&e.event_id).1,
                },
            );
        }
        for edge in &doc.edges {
            if let (Some(&from), Some(&to)) = (
                index.get(edge.cause.as_str()),
                index.get(edge.effect.as_str()),
            ) {
                layout.arrows.push(Arrow {
                    from,
                    to,
                    kind: NodeKind::Event,
                });
            }
        }
        for f in &doc.failures {
            let service = f
                .service
                .as_deref()
                .or(f.consumer_group.as_deref())
                .unwrap_or("(unknown consumer)");
            let error = f.error_type.as_deref().unwrap_or("failed");
            let from = index.get(f.event_id.as_str()).copied();
            let lane = layout.lane(service);
            let col = from.map_or(0, |i| layout.nodes[i].col + 1);
            let to = layout.push(
                &mut slots,
                Node {
                    kind: NodeKind::Failed,
                    lane,
                    col,
                    slot: 0,
                    label: format!("✗ {}", shorten(error, LABEL_CHARS - 2)),
                    sub: match &f.dlq_id {
                        Some(id) => format!("dead letter {}", shorten(id, 13)),
                        None => "failed".to_owned(),
                    },
                    title: format!(
                        "{service} failed on {} {}: {error}{}",
                        f.event_type.as_deref().unwrap_or("event"),
                        f.event_id,
                        f.error_message
                            .as_deref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ),
                    href: match &f.dlq_id {
                        Some(id) => super::correlation::dead_letter_anchor(id).1,
                        None => super::correlation::event_anchor(&f.event_id).1,
                    },
                },
            );
            if let Some(from) = from {
                layout.arrows.push(Arrow {
                    from,
                    to,
                    kind: NodeKind::Failed,
                });
            }
        }
        for m in &doc.missing {
            let Some(&from) = index.get(m.event_id.as_str()) else {
                continue;
            };
            let lane = layout.lane(&m.service);
            let col = layout.nodes[from].col + 1;
            let to = layout.push(
                &mut slots,
                Node {
                    kind: NodeKind::Missing,
                    lane,
                    col,
                    slot: 0,
                    label: "✗ no receipt".to_owned(),
                    sub: shorten(&m.consumer_group, LABEL_CHARS),
                    title: format!(
                        "{} (group {}) has no receipt for {} {}",
                        m.service, m.consumer_group, m.event_type, m.event_id
                    ),
                    href: super::correlation::event_anchor(&m.event_id).1,
                },
            );
            layout.arrows.push(Arrow {
                from,
                to,
                kind: NodeKind::Missing,
            });
        }
        layout
    }

    fn lane(&mut self, service: &str) -> usize {
        match self.lanes.iter().position(|l| l == service) {
            Some(i) => i,
            None => {
                self.lanes.push(service.to_owned());
                self.lanes.len() - 1
            }
        }
    }

    fn push(&mut self, slots: &mut HashMap<(usize, usize), usize>, mut node: Node) -> usize {
        let slot = slots.entry((node.lane, node.col)).or_default();
        node.slot = *slot;
        *slot += 1;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The top of each lane and the total height.
    fn lane_tops(&self) -> (Vec<i64>, i64) {
        let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
        for n in &self.nodes {
            let r = rows.entry(n.lane).or_default();
            *r = (*r).max(n.slot + 1);
        }
        let mut tops = Vec::with_capacity(self.lanes.len());
        let mut y = 0;
        for lane in 0..self.lanes.len() {
            tops.push(y);
            y += rows.get(&lane).copied().unwrap_or(1) as i64 * SLOT_H + 2 * LANE_PAD - 12;
        }
        (tops, y)
    }

    fn render(&self, correlation_id: &str) -> Markup {
        let (tops, height) = self.lane_tops();
        let cols = self.nodes.iter().map(|n| n.col).max().unwrap_or(0) as i64 + 1;
        let width = LABEL_W + cols * COL_W;
        let at = |n: &Node| -> (i64, i64) {
            (
                LABEL_W + n.col as i64 * COL_W + (COL_W - NODE_W) / 2,
                tops[n.lane] + LANE_PAD + n.slot as i64 * SLOT_H,
            )
        };
        let lane_heights: Vec<i64> = (0..self.lanes.len())
            .map(|i| tops.get(i + 1).copied().unwrap_or(height) - tops[i])
            .collect();
        html! {
            svg.graph.causal-graph xmlns="http://www.w3.org/2000/svg" role="img"
                width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) }
                aria-labelledby="graph-title" {
                title #graph-title { "Causal graph of correlation " (correlation_id) }
                (arrowheads())
                @for (i, lane) in self.lanes.iter().enumerate() {
                    g.lane.odd[i % 2 == 1] {
                        rect x="0" y=(tops[i]) width=(width) height=(lane_heights[i]) {}
                        text.lane-label x="10" y=(tops[i] + lane_heights[i] / 2 + 4) {
                            (shorten(lane, 22))
                            title { (lane) }
                        }
                    }
                }
                @for a in &self.arrows {
                    (edge(a.kind.edge_class(), at(&self.nodes[a.from]), at(&self.nodes[a.to]), a.kind != NodeKind::Event, None))
                }
                @for n in &self.nodes {
                    (node(n.kind.node_class(), at(n), &n.label, &n.sub, &n.title, &n.href))
                }
            }
        }
    }
}

/// The arrowheads edges end with: `url(#arrow)`, and `url(#arrow-fail)`
/// for a hop that failed.
pub(super) fn arrowheads() -> Markup {
    html! {
        defs {
            marker #arrow viewBox="0 0 10 10" refX="10" refY="5"
                markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                path.arrowhead d="M0,0 L10,5 L0,10 z" {}
            }
            marker #arrow-fail viewBox="0 0 10 10" refX="10" refY="5"
                markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                path.arrowhead.fail d="M0,0 L10,5 L0,10 z" {}
            }
        }
    }
}

/// A curved arrow from the right side of the node box at `from` to the
/// left side of the one at `to` (their top left corners), red when
/// `failed`, with `title` as its tooltip.
pub(super) fn edge(
    class: &str,
    from: (i64, i64),
    to: (i64, i64),
    failed: bool,
    title: Option<&str>,
) -> Markup {
    let (x1, y1, x2, y2) = (
        from.0 + NODE_W,
        from.1 + NODE_H / 2,
        to.0,
        to.1 + NODE_H / 2,
    );
    let bend = ((x2 - x1).abs() / 2).max(24);
    html! {
        path class=(class)
            d={ "M" (x1) "," (y1) " C" (x1 + bend) "," (y1) " " (x2 - bend) "," (y2) " " (x2) "," (y2) }
            marker-end=(if failed { "url(#arrow-fail)" } else { "url(#arrow)" }) {
            @if let Some(t) = title { title { (t) } }
        }
    }
}

/// A node's box at `at` (its top left corner): a bold label and a small
/// line under it, linked to `href`, with everything it stands for in its
/// tooltip.
pub(super) fn node(
    class: &str,
    at: (i64, i64),
    label: &str,
    sub: &str,
    title: &str,
    href: &str,
) -> Markup {
    let (x, y) = at;
    html! {
        a href=(href) {
            g class=(class) {
                title { (title) }
                rect x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="6" {}
                text.node-label x=(x + 10) y=(y + 17) { (label) }
                text.node-sub x=(x + 10) y=(y + 33) { (sub) }
            }
        }
    }
}

/// Steps of causation from the first recorded ancestor: 0 for an event
/// whose cause is not in the chain (a root).
fn depths(doc: &CorrelationDocument) -> HashMap<&str, usize> {
    let known: HashSet<&str> = doc.events.iter().map(|e| e.event_id.as_str()).collect();
    let cause: HashMap<&str, &str> = doc
        .events
        .iter()
        .filter_map(|e| Some((e.event_id.as_str(), e.causation_id.as_deref()?)))
        .collect();
    doc.events
        .iter()
        .map(|e| {
            let mut id = e.event_id.as_str();
            let mut depth = 0;
            while let Some(parent) = cause.get(id).copied() {
                if depth == MAX_DEPTH || !known.contains(parent) {
                    break;
                }
                depth += 1;
                id = parent;
            }
            (e.event_id.as_str(), depth)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::correlation::tests::{document, event};

    #[test]
    fn events_sit_in_their_producers_lane_one_column_per_step() {
        let doc = document(
            vec![
                event("e1", None, "OrderPlaced", "order-service"),
                event("e2", Some("e1"), "PaymentProcessed", "payment-service"),
                event("e3", Some("e2"), "InventoryReserved", "inventory-service"),
            ],
            vec![],
            vec![],
        );
        let layout = Layout::of(&doc);
        assert_eq!(
            layout.lanes,
            ["order-service", "payment-service", "inventory-service"]
        );
        let cols: Vec<(usize, usize)> = layout.nodes.iter().map(|n| (n.lane, n.col)).collect();
        assert_eq!(cols, [(0, 0), (1, 1), (2, 2)]);
        assert_eq!(layout.arrows.len(), 2);
        let svg = causal_graph(&doc).into_string();
        assert!(
            svg.starts_with("<svg class=\"graph causal-graph\""),
            "{svg}"
        );
        assert!(!svg.contains("node fail"), "nothing failed: {svg}");
        assert!(!svg.contains("edge fail"), "nothing failed: {svg}");
        assert!(svg.contains("marker-end=\"url(#arrow)\""), "{svg}");
    }

    #[test]
    fn a_failed_hop_is_a_red_node_in_the_consumers_lane_with_its_error() {
        let mut doc = document(
            vec![
                event("e1", None, "OrderPlaced", "order-service"),
                event("e2", Some("e1"), "PaymentProcessed", "payment-service"),
            ],
            vec![],
            vec![],
        );
        doc.failures.push(kausal_lineage::report::Failure {
            service: Some("notification-service".into()),
            consumer_group: Some("notification-service".into()),
            event_type: Some("PaymentProcessed".into()),
            event_id: "e2".into(),
            error_type: Some("MissingCustomerEmail".into()),
            error_message: Some("no <email>".into()),
            dlq_id: Some("dlq-1".into()),
        });
        let layout = Layout::of(&doc);
        let failed = layout.nodes.last().expect("node");
        assert_eq!(failed.kind, NodeKind::Failed);
        assert_eq!(layout.lanes[failed.lane], "notification-service");
        assert_eq!(failed.col, 2, "one step after the event it failed on");
        let svg = causal_graph(&doc).into_string();
        assert!(svg.contains(r#"<g class="node fail">"#), "{svg}");
        assert!(svg.contains(r#"class="edge fail""#), "{svg}");
        assert!(svg.contains("✗ MissingCustomerEmail"), "{svg}");
        assert!(svg.contains("(no &lt;email&gt;)"), "escaped: {svg}");
        assert!(svg.contains(r##"href="#dlq-dlq-1""##), "{svg}");
    }

    #[test]
    fn a_missing_hop_is_red_and_dashed() {
        let mut doc = document(
            vec![event("e1", None, "OrderPlaced", "order-service")],
            vec![],
            vec![],
        );
        doc.missing.push(crate::query::Missing {
            event_id: "e1".into(),
            event_type: "OrderPlaced".into(),
            consumer_group: "inventory-service".into(),
            service: "inventory-service".into(),
        });
        let svg = causal_graph(&doc).into_string();
        assert!(svg.contains(r#"<g class="node fail missing">"#), "{svg}");
        assert!(svg.contains(r#"class="edge fail missing""#), "{svg}");
        assert!(svg.contains("✗ no receipt"), "{svg}");
    }

    #[test]
    fn siblings_stack_in_their_lane() {
        let doc = document(
            vec![
                event("e1", None, "OrderPlaced", "order-service"),
                event("e2", None, "OrderPlaced", "order-service"),
            ],
            vec![],
            vec![],
        );
        let layout = Layout::of(&doc);
        let slots: Vec<usize> = layout.nodes.iter().map(|n| n.slot).collect();
        assert_eq!(slots, [0, 1]);
        let (_, height) = layout.lane_tops();
        assert_eq!(height, 2 * SLOT_H + 2 * LANE_PAD - 12);
    }
}
