//! Virtual power cuts: where to cut a recorded run, and what a cut there
//! means. Pure.
//!
//! A real cut at host time T leaves the writes acknowledged by T (durable
//! with FUA, or acknowledged and flushed by T), any subset of the others
//! received by T (torn where not atomic), and nothing received after T:
//! exactly what `Record::cut_at(T)` keeps. The run need not stop at T to
//! know that, because the record says when every write arrived and was
//! acknowledged; so one run gives the states of a cut at every T.
//!
//! Between two consecutive things the disk sees (a write arriving, an
//! acknowledgement, a flush), the contents a cut may leave do not change,
//! while the host keeps seeing operations end, each a promise. The last
//! instant before the next disk event is therefore the most demanding
//! moment of its interval, and a sweep cuts there and nowhere else in it.

use std::time::Duration;

use crate::record::Record;
use crate::states::{seeded_sample, Recipe, State};

/// One virtual cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutPoint {
    /// The host time of the cut, on the disk's clock.
    pub at: Duration,
    /// Writes received by then.
    pub writes_before: u64,
    /// What the disk saw next, which the cut just precedes.
    pub next: NextEvent,
}

/// What a cut point falls just before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextEvent {
    /// The arrival of write `seq`.
    Arrival(u64),
    /// The acknowledgement of write `seq`.
    Ack(u64),
    /// The `n`-th flush (from 0).
    Flush(usize),
    /// Nothing: the record ends here (the real cut, or the run's end).
    End,
}

impl CutPoint {
    /// The point's name in recipes: its time in nanoseconds, so a recipe
    /// names the moment whose op log judges it.
    pub fn recipe_point(&self) -> String {
        format!("t{}", self.at.as_nanos())
    }

    /// The time a recipe point names, if it is a virtual cut's.
    pub fn time_of(recipe: &Recipe) -> Option<Duration> {
        let ns: u64 = recipe.point.strip_prefix('t')?.parse().ok()?;
        Some(Duration::from_nanos(ns))
    }
}

/// One (cut point, state) pair to judge: the state's content occurs at
/// the point, made by `recipe` (which rebuilds the same bytes as the
/// state's own recipe).
#[derive(Debug, Clone)]
pub struct Judgement {
    pub point: usize,
    pub state: usize,
    pub recipe: Recipe,
    /// Planned for another point and judged here too, because this point
    /// allows the same recipe (`SweepPlan::spread`).
    pub spread: bool,
}

/// The states of a sweep.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub points: Vec<CutPoint>,
    /// Recipes made over all points, before duplicates were removed.
    pub generated: usize,
    /// Distinct states of a point beyond `StateLimits::max`, left out of
    /// its judgements (summed over the points).
    pub left_out: usize,
    /// One per distinct content.
    pub states: Vec<State>,
    pub judgements: Vec<Judgement>,
}

impl SweepPlan {
    /// Judgements of a content at a point that did not plan it but allows
    /// its recipe too (`Planner::plan_sweep`): free, as the content is
    /// scanned anyway.
    pub fn spread(&self) -> usize {
        self.judgements.iter().filter(|j| j.spread).count()
    }
}

/// Everything the disk saw up to the record's end, in time order.
fn events(record: &Record) -> Vec<(Duration, NextEvent)> {
    let mut ev: Vec<(Duration, NextEvent)> = Vec::new();
    for w in &record.writes {
        ev.push((w.received, NextEvent::Arrival(w.seq)));
        if let Some(a) = w.acked {
            ev.push((a, NextEvent::Ack(w.seq)));
        }
    }
    ev.extend(
        record
            .flushes
            .iter()
            .enumerate()
            .map(|(i, &f)| (f, NextEvent::Flush(i))),
    );
    ev.retain(|(t, _)| record.cut.as_ref().is_none_or(|c| *t <= c.at));
    ev.sort_by_key(|&(t, _)| t);
    ev
}

/// When the record ends: the cut, or the last thing the disk saw.
fn end(record: &Record, events: &[(Duration, NextEvent)]) -> Duration {
    match &record.cut {
        Some(c) => c.at,
        None => events.last().map_or(Duration::ZERO, |e| e.0),
    }
}

fn point(record: &Record, at: Duration, next: NextEvent) -> CutPoint {
    CutPoint {
        at,
        writes_before: record.writes_received_by(at),
        next,
    }
}

/// The cut just before the first of `events` after `t`, or at the end.
fn point_in(record: &Record, events: &[(Duration, NextEvent)], t: Duration) -> CutPoint {
    match events.get(events.partition_point(|&(e, _)| e <= t)) {
        Some(&(e, next)) => point(record, e - Duration::from_nanos(1), next),
        None => point(record, end(record, events).max(t), NextEvent::End),
    }
}

/// The cut at the end of the interval that holds `t`: just before the
/// first disk event after `t`, or at the record's end.
pub fn point_after(record: &Record, t: Duration) -> CutPoint {
    point_in(record, &events(record), t)
}

/// `every: write`: a cut just before each disk event after `armed`, and
/// one at the end; so every interval of the run is cut at its most
/// demanding instant.
pub fn every_event(record: &Record, armed: Duration) -> Vec<CutPoint> {
    let events = events(record);
    let mut points: Vec<CutPoint> = events
        .iter()
        .filter(|&&(e, _)| e > armed)
        .map(|&(e, next)| point(record, e - Duration::from_nanos(1), next))
        .collect();
    points.push(point(record, end(record, &events), NextEvent::End));
    points.dedup_by_key(|p| p.at);
    points
}

/// The cuts for moments the lab chose (each completed sync the host saw,
/// each mark): each moment's interval cut at its end, once per interval.
pub fn after_each(record: &Record, moments: &[Duration]) -> Vec<CutPoint> {
    let events = events(record);
    let mut points: Vec<CutPoint> = moments
        .iter()
        .map(|&t| point_in(record, &events, t))
        .collect();
    points.sort_by_key(|p| p.at);
    points.dedup_by_key(|p| p.at);
    points
}

/// At most `max` points, a seeded sample in time order; returns how many
/// were left out. The last point (the end) is always kept, so `max` is at
/// least 1.
pub fn sample(points: &mut Vec<CutPoint>, max: usize, seed: u64) -> usize {
    let (n, max) = (points.len(), max.max(1));
    if n <= max {
        return 0;
    }
    let mut keep = seeded_sample(n - 1, max - 1, seed);
    keep.push(n - 1);
    let kept = keep.iter().map(|&i| points[i].clone()).collect();
    *points = kept;
    n - max
}
