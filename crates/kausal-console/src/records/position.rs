//! Which records one page of a topic holds: the position asked for (the
//! query string), the offsets to read per partition, the records in the
//! page's order, and where the older and the newer page start. Pure: the
//! watermarks and the records read come in as data.

use std::collections::{BTreeMap, VecDeque};

use kausal_kafka::admin::Watermarks;
use kausal_kafka::browse::RecordCopy;
use serde::Deserialize;

/// Most records on one page.
pub const PAGE: usize = 50;
/// The longest `from`/`before` list taken (an offset per partition).
const MAX_CURSORS_LEN: usize = 8192;
/// The longest key searched for: the bound of every id the console takes.
const MAX_KEY_LEN: usize = 256;

/// An offset per partition: where a page starts (`from`) or ends, exclusive
/// (`before`). Written `0:12,1:40` in a link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursors(pub BTreeMap<i32, i64>);

impl Cursors {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "position {:?}: write partition:offset pairs separated by commas, like 0:12,1:40",
                super::shorten_for_error(text)
            )
        };
        if text.len() > MAX_CURSORS_LEN {
            return Err(format!(
                "a position is at most {MAX_CURSORS_LEN} characters"
            ));
        }
        let mut cursors = BTreeMap::new();
        for pair in text.split(',') {
            let (p, o) = pair.split_once(':').ok_or_else(bad)?;
            let p: i32 = p.trim().parse().map_err(|_| bad())?;
            let o: i64 = o.trim().parse().map_err(|_| bad())?;
            if p < 0 || o < 0 {
                return Err(bad());
            }
            cursors.insert(p, o);
        }
        Ok(Self(cursors))
    }

    /// The form a link carries.
    pub fn to_param(&self) -> String {
        self.0
            .iter()
            .map(|(p, o)| format!("{p}:{o}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The query string of `/topics/{name}`, as sent (an empty field is absent).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RecordParams {
    pub partition: Option<String>,
    pub offset: Option<String>,
    pub since: Option<String>,
    pub key: Option<String>,
    pub from: Option<String>,
    pub before: Option<String>,
}

/// Where in the topic to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// The newest records.
    Newest,
    /// Records before these offsets, newest first (an "older" link).
    Before(Cursors),
    /// Records from these offsets on, oldest first (a "newer" link).
    From(Cursors),
    /// Records from this offset on, in every partition shown.
    Offset(i64),
    /// Records from the first one at or after `at_ms` (Kafka's
    /// offsets-for-times); `text` as the user wrote it.
    Since { at_ms: i64, text: String },
    /// The records the lineage store recorded with this key.
    Key(String),
}

/// A parsed query: the partition (`None`: all) and the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordQuery {
    pub partition: Option<i32>,
    pub position: Position,
}

impl RecordQuery {
    /// The query of `params`, with `since` read against `now_ms`; the
    /// reason, for a 400, when it cannot be used.
    pub fn parse(params: &RecordParams, now_ms: i64) -> Result<Self, String> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let partition = match given(&params.partition).as_deref() {
            None | Some("all") => None,
            Some(p) => Some(p.parse::<i32>().ok().filter(|p| *p >= 0).ok_or_else(|| {
                format!(
                    "partition {:?}: choose all or a partition number",
                    super::shorten_for_error(p)
                )
            })?),
        };
        let mut positions = Vec::new();
        if let Some(o) = given(&params.offset) {
            let offset = o.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| {
                format!(
                    "offset {:?}: an offset is a whole number, 0 or more",
                    super::shorten_for_error(&o)
                )
            })?;
            positions.push(Position::Offset(offset));
        }
        if let Some(text) = given(&params.since) {
            let at_ms = crate::dlq::parse_since(&text, now_ms)?;
            positions.push(Position::Since { at_ms, text });
        }
        if let Some(key) = given(&params.key) {
            if key.len() > MAX_KEY_LEN {
                return Err(format!("a key is at most {MAX_KEY_LEN} characters"));
            }
            positions.push(Position::Key(key));
        }
        if let Some(c) = given(&params.from) {
            positions.push(Position::From(Cursors::parse(&c)?));
        }
        if let Some(c) = given(&params.before) {
            positions.push(Position::Before(Cursors::parse(&c)?));
        }
        if positions.len() > 1 {
            return Err(
                "give one position at a time: an offset, a time (since) or a key".to_owned(),
            );
        }
        Ok(Self {
            partition,
            position: positions.pop().unwrap_or(Position::Newest),
        })
    }
}

/// The partitions a query shows: the one asked for, or all; the reason
/// when the topic has no such partition.
pub fn chosen(all: &[Watermarks], partition: Option<i32>) -> Result<Vec<Watermarks>, String> {
    match partition {
        None => Ok(all.to_vec()),
        Some(p) => all
            .iter()
            .find(|w| w.partition == p)
            .map(|w| vec![*w])
            .ok_or_else(|| {
                format!(
                    "there is no partition {p}: this topic has {} (0 to {})",
                    all.len(),
                    all.len().saturating_sub(1)
                )
            }),
    }
}

/// Which way a page reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// A page's bounds: the order, and per partition shown its watermarks and
/// where the page ends (newest first: the offset it reads before) or
/// starts (oldest first), within the watermarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub order: Order,
    pub partitions: Vec<(Watermarks, i64)>,
}

/// A page: its records in order, and the positions of the pages around it
/// (`None`: there is nothing there).
#[derive(Debug, Clone, PartialEq)]
pub struct Paged {
    pub records: Vec<RecordCopy>,
    pub older: Option<Cursors>,
    pub newer: Option<Cursors>,
}

impl Window {
    /// The window of `position` over the partitions `shown`. A partition a
    /// `before` or `from` list leaves out is read from its end or its start;
    /// offsets outside the watermarks are brought inside. `Since` is
    /// resolved to a `From` before (offsets-for-times needs Kafka) and
    /// `Key` is not paged: both read as the newest here.
    pub fn of(position: &Position, shown: &[Watermarks]) -> Self {
        let order = match position {
            Position::From(_) | Position::Offset(_) => Order::OldestFirst,
            Position::Newest | Position::Before(_) | Position::Since { .. } | Position::Key(_) => {
                Order::NewestFirst
            }
        };
        let at = |w: &Watermarks| match position {
            Position::Before(c) => c.0.get(&w.partition).copied().unwrap_or(w.high),
            Position::From(c) => c.0.get(&w.partition).copied().unwrap_or(w.low),
            Position::Offset(o) => *o,
            Position::Newest | Position::Since { .. } | Position::Key(_) => w.high,
        };
        Self {
            order,
            partitions: shown
                .iter()
                .map(|w| (*w, at(w).clamp(w.low, w.high.max(w.low))))
                .collect(),
        }
    }

    /// `(partition, from, to)` to read: up to a page of offsets per
    /// partition on the window's side of its position.
    pub fn ranges(&self) -> Vec<(i32, i64, i64)> {
        let page = PAGE as i64;
        self.partitions
            .iter()
            .map(|(w, at)| match self.order {
                Order::NewestFirst => (w.partition, (at - page).max(w.low), *at),
                Order::OldestFirst => (w.partition, *at, (at + page).min(w.high)),
            })
            .filter(|(_, from, to)| from < to)
            .collect()
    }

    /// The page `read` makes (the records of [`ranges`](Self::ranges), in
    /// offset order per partition): at most [`PAGE`] records, taken across
    /// partitions by timestamp (newest or oldest first), each partition's
    /// share contiguous, so that the next page carries on exactly where
    /// this one stopped in every partition.
    pub fn page(&self, read: Vec<RecordCopy>) -> Paged {
        let ranges = self.ranges();
        let mut queues: BTreeMap<i32, VecDeque<RecordCopy>> = BTreeMap::new();
        for r in read {
            let inside = ranges
                .iter()
                .any(|(p, from, to)| *p == r.partition && (*from..*to).contains(&r.offset));
            if inside {
                queues.entry(r.partition).or_default().push_back(r);
            }
        }
        for q in queues.values_mut() {
            q.make_contiguous().sort_by_key(|r| r.offset);
            let mut seen = None;
            q.retain(|r| seen.replace(r.offset) != Some(r.offset));
        }
        let newest_first = self.order == Order::NewestFirst;
        let mut records = Vec::new();
        while records.len() < PAGE {
            // The next record: the newest of the partitions' newest unshown
            // (or the oldest of their oldest); a tie goes to the lower
            // partition.
            let next = queues
                .iter()
                .filter_map(|(p, q)| {
                    let r = if newest_first { q.back() } else { q.front() }?;
                    Some((*p, r.timestamp_ms.unwrap_or(i64::MIN)))
                })
                .reduce(|best, c| {
                    let better = if newest_first {
                        c.1 > best.1
                    } else {
                        c.1 < best.1
                    };
                    if better { c } else { best }
                });
            let Some((p, _)) = next else { break };
            let q = queues.get_mut(&p).expect("chosen from the queues");
            records.extend(if newest_first {
                q.pop_back()
            } else {
                q.pop_front()
            });
        }
        // Per partition, where the next page in the same direction starts:
        // after the last record shown, or past the whole range read when
        // every record read was shown (so gaps — compacted records,
        // transaction markers — are stepped over).
        let mut onward = BTreeMap::new();
        let mut back = BTreeMap::new();
        let mut more_onward = false;
        let mut more_back = false;
        for (w, at) in &self.partitions {
            let p = w.partition;
            let (from, to) = ranges
                .iter()
                .find(|(rp, _, _)| *rp == p)
                .map_or((*at, *at), |(_, f, t)| (*f, *t));
            let unshown = queues.get(&p).is_some_and(|q| !q.is_empty());
            let shown = records.iter().filter(|r| r.partition == p);
            let next = if newest_first {
                let edge = shown.map(|r| r.offset).min();
                if unshown { edge.unwrap_or(*at) } else { from }
            } else {
                let edge = shown.map(|r| r.offset + 1).max();
                if unshown { edge.unwrap_or(*at) } else { to }
            };
            if newest_first {
                more_onward |= next > w.low;
                more_back |= *at < w.high;
            } else {
                more_onward |= next < w.high;
                more_back |= *at > w.low;
            }
            onward.insert(p, next);
            back.insert(p, *at);
        }
        let onward = more_onward.then_some(Cursors(onward));
        let back = more_back.then_some(Cursors(back));
        let (older, newer) = if newest_first {
            (onward, back)
        } else {
            (back, onward)
        };
        Paged {
            records,
            older,
            newer,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The watermarks of partition `p`.
    pub(in crate::records) fn marks(p: i32, low: i64, high: i64) -> Watermarks {
        Watermarks {
            partition: p,
            low,
            high,
        }
    }

    /// A record at `offset` of partition `p`, at time `ts`.
    fn rec(p: i32, offset: i64, ts: i64) -> RecordCopy {
        RecordCopy {
            partition: p,
            offset,
            timestamp_ms: Some(ts),
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> RecordParams {
        let mut p = RecordParams::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "partition" => p.partition = v,
                "offset" => p.offset = v,
                "since" => p.since = v,
                "key" => p.key = v,
                "from" => p.from = v,
                "before" => p.before = v,
                _ => panic!("{k}"),
            }
        }
        p
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<RecordQuery, String> {
        RecordQuery::parse(&params(pairs), 10_000_000)
    }

    #[test]
    fn queries_parse_and_empty_fields_are_absent() {
        assert_eq!(
            parse(&[]).expect("newest"),
            RecordQuery {
                partition: None,
                position: Position::Newest
            }
        );
        // What the form sends when only the partition and offset are filled.
        let q = parse(&[
            ("partition", "2"),
            ("offset", "17"),
            ("since", ""),
            ("key", " "),
        ])
        .expect("offset");
        assert_eq!(q.partition, Some(2));
        assert_eq!(q.position, Position::Offset(17));
        assert_eq!(
            parse(&[("partition", "all"), ("since", "30m")])
                .expect("since")
                .position,
            Position::Since {
                at_ms: 10_000_000 - 30 * 60_000,
                text: "30m".into()
            }
        );
        assert_eq!(
            parse(&[("since", "2023-11-14T22:13:20Z")])
                .expect("rfc 3339")
                .position,
            Position::Since {
                at_ms: 1_700_000_000_000,
                text: "2023-11-14T22:13:20Z".into()
            }
        );
        assert_eq!(
            parse(&[("key", " ord-1 ")]).expect("key").position,
            Position::Key("ord-1".into())
        );
        assert_eq!(
            parse(&[("before", "0:12,2:40")]).expect("before").position,
            Position::Before(Cursors(BTreeMap::from([(0, 12), (2, 40)])))
        );
    }

    #[test]
    fn bad_queries_say_why() {
        let reason = |pairs: &[(&str, &str)]| parse(pairs).expect_err("refused");
        assert!(reason(&[("partition", "x")]).contains("choose all or a partition number"));
        assert!(reason(&[("partition", "-1")]).contains("partition"));
        assert!(reason(&[("offset", "-3")]).contains("0 or more"));
        assert!(reason(&[("offset", "12a")]).contains("whole number"));
        assert!(reason(&[("since", "yesterday")]).contains("RFC 3339"));
        assert!(reason(&[("offset", "1"), ("key", "k")]).contains("one position at a time"));
        assert!(reason(&[("key", &"k".repeat(257))]).contains("at most 256"));
        assert!(reason(&[("from", "0-12")]).contains("partition:offset pairs"));
        assert!(reason(&[("before", "0:1,")]).contains("partition:offset pairs"));
        assert!(reason(&[("before", &"0:1,".repeat(3000))]).contains("at most"));
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursors::parse("2:40,0:12").expect("parse");
        assert_eq!(c.to_param(), "0:12,2:40");
        assert_eq!(Cursors::parse(&c.to_param()), Ok(c));
    }

    #[test]
    fn a_partition_must_exist() {
        let all = [marks(0, 0, 5), marks(1, 0, 3)];
        assert_eq!(chosen(&all, None).expect("all").len(), 2);
        assert_eq!(chosen(&all, Some(1)).expect("one"), vec![marks(1, 0, 3)]);
        assert_eq!(
            chosen(&all, Some(7)).expect_err("none"),
            "there is no partition 7: this topic has 2 (0 to 1)"
        );
    }

    #[test]
    fn the_newest_page_reads_the_end_of_each_partition_and_links_older_only() {
        let shown = [marks(0, 0, 120), marks(1, 100, 110), marks(2, 0, 0)];
        let w = Window::of(&Position::Newest, &shown);
        assert_eq!(w.order, Order::NewestFirst);
        assert_eq!(w.ranges(), vec![(0, 70, 120), (1, 100, 110)]);
        // Partition 0 written at even ms, partition 1 at odd ms after 100.
        let mut read: Vec<RecordCopy> = (70..120).map(|o| rec(0, o, o * 2)).collect();
        read.extend((100..110).map(|o| rec(1, o, o * 2 + 1)));
        let page = w.page(read);
        assert_eq!(page.records.len(), PAGE);
        let times: Vec<i64> = page
            .records
            .iter()
            .map(|r| r.timestamp_ms.expect("ts"))
            .collect();
        assert!(times.windows(2).all(|t| t[0] >= t[1]), "{times:?}");
        // All 10 of partition 1 are newer than partition 0's oldest 10.
        assert_eq!(page.records.iter().filter(|r| r.partition == 1).count(), 10);
        assert_eq!(
            page.older,
            Some(Cursors(BTreeMap::from([(0, 80), (1, 100), (2, 0)])))
        );
        assert_eq!(page.newer, None, "nothing is newer than the newest");
    }

    #[test]
    fn the_older_page_carries_on_and_links_back_to_where_it_came_from() {
        let shown = [marks(0, 0, 120), marks(1, 100, 110)];
        let before = Cursors(BTreeMap::from([(0, 80), (1, 100)]));
        let w = Window::of(&Position::Before(before.clone()), &shown);
        assert_eq!(w.ranges(), vec![(0, 30, 80)], "partition 1 is done");
        let page = w.page((30..80).map(|o| rec(0, o, o)).collect());
        assert_eq!(page.records.first().map(|r| r.offset), Some(79));
        assert_eq!(page.records.last().map(|r| r.offset), Some(30));
        assert_eq!(
            page.older,
            Some(Cursors(BTreeMap::from([(0, 30), (1, 100)])))
        );
        assert_eq!(page.newer, Some(before), "newer: from where this began");
    }

    #[test]
    fn the_oldest_page_ends_the_older_links() {
        let shown = [marks(0, 0, 20)];
        let w = Window::of(
            &Position::Before(Cursors(BTreeMap::from([(0, 20)]))),
            &shown,
        );
        let page = w.page((0..20).map(|o| rec(0, o, o)).collect());
        assert_eq!(page.records.len(), 20);
        assert_eq!(page.older, None);
        assert_eq!(page.newer, None, "20 is the end");
    }

    #[test]
    fn from_an_offset_reads_forward_and_links_both_ways() {
        let shown = [marks(0, 10, 200)];
        // Below the low watermark: brought up to it.
        assert_eq!(
            Window::of(&Position::Offset(3), &shown).partitions,
            vec![(marks(0, 10, 200), 10)]
        );
        let w = Window::of(&Position::Offset(40), &shown);
        assert_eq!(w.order, Order::OldestFirst);
        assert_eq!(w.ranges(), vec![(0, 40, 90)]);
        let page = w.page((40..90).map(|o| rec(0, o, o)).collect());
        assert_eq!(page.records.first().map(|r| r.offset), Some(40));
        assert_eq!(page.newer, Some(Cursors(BTreeMap::from([(0, 90)]))));
        assert_eq!(page.older, Some(Cursors(BTreeMap::from([(0, 40)]))));
        // At the end: nothing newer.
        let end = Window::of(&Position::Offset(190), &shown);
        let page = end.page((190..200).map(|o| rec(0, o, o)).collect());
        assert_eq!(page.newer, None);
    }

    #[test]
    fn a_page_cut_across_partitions_resumes_each_where_it_stopped() {
        let shown = [marks(0, 0, 60), marks(1, 0, 60)];
        let w = Window::of(&Position::From(Cursors::default()), &shown);
        assert_eq!(w.ranges(), vec![(0, 0, 50), (1, 0, 50)]);
        // Interleaved in time: 0@0, 1@0, 0@1, 1@1, …
        let mut read: Vec<RecordCopy> = (0..50).map(|o| rec(0, o, o * 10)).collect();
        read.extend((0..50).map(|o| rec(1, o, o * 10 + 5)));
        let page = w.page(read);
        assert_eq!(page.records.len(), PAGE);
        assert_eq!(
            page.newer,
            Some(Cursors(BTreeMap::from([(0, 25), (1, 25)])))
        );
        let offsets: Vec<(i32, i64)> = page
            .records
            .iter()
            .take(4)
            .map(|r| (r.partition, r.offset))
            .collect();
        assert_eq!(offsets, vec![(0, 0), (1, 0), (0, 1), (1, 1)]);
    }

    #[test]
    fn gaps_in_the_offsets_are_stepped_over() {
        // Offsets 40–89 hold only two records (compaction): the next page
        // starts after the range, not at the last record + 1 forever.
        let shown = [marks(0, 0, 500)];
        let w = Window::of(&Position::Offset(40), &shown);
        let page = w.page(vec![rec(0, 41, 1), rec(0, 60, 2)]);
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.newer, Some(Cursors(BTreeMap::from([(0, 90)]))));
        // Records outside the ranges asked for, and duplicates, are dropped.
        let page = w.page(vec![
            rec(0, 39, 1),
            rec(0, 41, 1),
            rec(0, 41, 1),
            rec(0, 90, 3),
        ]);
        assert_eq!(
            page.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![41]
        );
    }
}
