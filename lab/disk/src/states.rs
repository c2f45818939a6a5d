//! Crash states: which disk contents a power cut may leave, planned from
//! the write record. Pure.
//!
//! The rules (DESIGN.md, "Power-cut model"): writes received before the
//! cut and durable at it (completed with FUA, or completed and flushed) are
//! on the media; any subset of the others may be; one that is not atomic by
//! the device's rules may be torn at LBA granularity, an atomic one is all
//! or nothing. Writes land in arrival order, so where in-flight writes
//! overlap the later one wins.
//!
//! A state is a [`Recipe`]: a point (the cut, or a mark for a prefix
//! state), and the writes before it that did *not* fully land. Everything
//! else landed. Its content is the store as the disk left it (every write
//! applied) plus a [`Delta`] of LBAs that differ, each pointing into the
//! record's data: materialising a state copies nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::time::Duration;

use lab_core::powercut::{splitmix, StateLimits};
use serde::{Deserialize, Serialize};

use crate::record::{Record, WriteRecord};
use crate::sweep::{CutPoint, Judgement, SweepPlan};

/// The device's atomicity, in LBAs, as Linux reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicRules {
    pub lba: u32,
    /// Power-fail atomic unit (NAWUPF + 1).
    pub unit_lbas: u32,
    /// Atomic boundary (NABSPF + 1); a write crossing it is not atomic.
    pub boundary_lbas: Option<u32>,
}

impl AtomicRules {
    /// The device's numbers (unit NAWUPF + 1, boundary NABSPF + 1, as Linux
    /// reads them): the crash disk and the model use the same ones.
    pub fn of_device(d: &lab_core::device::DeviceParams) -> AtomicRules {
        AtomicRules {
            lba: d.lba_size,
            unit_lbas: d.atomic_unit_lbas(),
            boundary_lbas: d.atomic_boundary_lbas(),
        }
    }

    /// Whether a write of `len` bytes at byte `offset` is all or nothing
    /// (`DeviceParams::write_is_atomic` in bytes).
    pub fn is_atomic(&self, offset: u64, len: u32) -> bool {
        let lba = u64::from(self.lba);
        lab_core::device::write_is_atomic(
            offset / lba,
            u64::from(len).div_ceil(lba),
            self.unit_lbas,
            self.boundary_lbas,
        )
    }
}

/// How much of one write reached the media, when not all of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Landed {
    Nothing,
    /// These LBAs of the write (indices relative to its first LBA, as
    /// half-open ranges); the rest did not land.
    Lbas(Vec<(u32, u32)>),
}

/// One crash state, small and printable: `cut@37 35:- 38:0..2`, read "the
/// first 37 writes, all landed except 35 (nothing) and 38 (only its LBAs 0
/// and 1)". The prefix state at a mark is `mark:NAME@12`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Recipe {
    pub point: String,
    pub writes_before: u64,
    pub except: BTreeMap<u64, Landed>,
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.point, self.writes_before)?;
        for (seq, l) in &self.except {
            match l {
                Landed::Nothing => write!(f, " {seq}:-")?,
                Landed::Lbas(r) => {
                    let parts: Vec<String> = r.iter().map(|(a, b)| format!("{a}..{b}")).collect();
                    write!(f, " {seq}:{}", parts.join("+"))?
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Recipe, String> {
        let bad = |what: &str| format!("recipe `{s}`: {what}");
        let mut words = s.split_whitespace();
        let head = words.next().ok_or_else(|| bad("empty"))?;
        let (point, n) = head
            .rsplit_once('@')
            .ok_or_else(|| bad("expected POINT@WRITES first"))?;
        let writes_before = n.parse().map_err(|_| bad("WRITES is not a number"))?;
        let mut except = BTreeMap::new();
        for w in words {
            let (seq, l) = w.split_once(':').ok_or_else(|| bad("expected SEQ:-"))?;
            let seq: u64 = seq.parse().map_err(|_| bad("SEQ is not a number"))?;
            let landed = if l == "-" {
                Landed::Nothing
            } else {
                let mut r = Vec::new();
                for part in l.split('+') {
                    let (a, b) = part.split_once("..").ok_or_else(|| bad("expected A..B"))?;
                    let a = a.parse().map_err(|_| bad("LBA is not a number"))?;
                    let b = b.parse().map_err(|_| bad("LBA is not a number"))?;
                    r.push((a, b));
                }
                Landed::Lbas(r)
            };
            except.insert(seq, landed);
        }
        Ok(Recipe {
            point: point.into(),
            writes_before,
            except,
        })
    }
}

impl Recipe {
    fn landed(&self, w: &WriteRecord, rel_lba: u32) -> bool {
        if w.seq >= self.writes_before {
            return false;
        }
        match self.except.get(&w.seq) {
            None => true,
            Some(Landed::Nothing) => false,
            Some(Landed::Lbas(r)) => r.iter().any(|&(a, b)| (a..b).contains(&rel_lba)),
        }
    }
}

/// What one LBA of a state holds: zeroes, or LBA `index` of write `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Zero,
    Write { seq: u64, index: u32 },
}

/// LBAs where a state differs from the store as the disk left it.
pub type Delta = BTreeMap<u64, Source>;

/// The record, indexed for building states.
pub struct Planner<'a> {
    record: &'a Record,
    rules: AtomicRules,
    /// For each LBA ever written, the writes covering it in arrival order.
    by_lba: HashMap<u64, Vec<u64>>,
}

impl<'a> Planner<'a> {
    pub fn new(record: &'a Record, rules: AtomicRules) -> Planner<'a> {
        let mut by_lba: HashMap<u64, Vec<u64>> = HashMap::new();
        for w in &record.writes {
            for l in lbas(w, rules.lba) {
                by_lba.entry(l).or_default().push(w.seq);
            }
        }
        Planner {
            record,
            rules,
            by_lba,
        }
    }

    pub fn rules(&self) -> AtomicRules {
        self.rules
    }

    fn write(&self, seq: u64) -> &WriteRecord {
        &self.record.writes[seq as usize]
    }

    /// What LBA `l` holds if the writes the recipe says landed are applied
    /// in arrival order over a zeroed disk.
    fn source(&self, recipe: Option<&Recipe>, l: u64) -> Source {
        let mut src = Source::Zero;
        for &seq in self.by_lba.get(&l).map(Vec::as_slice).unwrap_or(&[]) {
            let w = self.write(seq);
            if recipe.is_none_or(|r| r.landed(w, self.index_in(w, l))) {
                src = self.written(seq, l);
            }
        }
        src
    }

    /// LBA `l`'s index inside write `w`.
    fn index_in(&self, w: &WriteRecord, l: u64) -> u32 {
        (l - w.offset / u64::from(self.rules.lba)) as u32
    }

    /// What write `seq` puts in LBA `l`.
    fn written(&self, seq: u64, l: u64) -> Source {
        let w = self.write(seq);
        match w.kind {
            crate::record::WriteKind::Data => Source::Write {
                seq,
                index: self.index_in(w, l),
            },
            _ => Source::Zero,
        }
    }

    /// What LBA `l` holds on the disk as the cut left it: the last write
    /// covering it (no replay needed).
    fn final_source(&self, l: u64) -> Source {
        match self.by_lba.get(&l).and_then(|v| v.last()) {
            Some(&seq) => self.written(seq, l),
            None => Source::Zero,
        }
    }

    /// The LBAs where the recipe's state differs from the final store.
    pub fn delta(&self, recipe: &Recipe) -> Delta {
        let mut touched = BTreeSet::new();
        for w in &self.record.writes {
            if w.seq >= recipe.writes_before || recipe.except.contains_key(&w.seq) {
                touched.extend(lbas(w, self.rules.lba));
            }
        }
        let mut d = Delta::new();
        for l in touched {
            let (got, last) = (self.source(Some(recipe), l), self.final_source(l));
            if self.bytes(got) != self.bytes(last) {
                d.insert(l, got);
            }
        }
        d
    }

    /// The bytes of one LBA source (None: zeroes).
    pub fn bytes(&self, s: Source) -> Option<&[u8]> {
        match s {
            Source::Zero => None,
            Source::Write { seq, index } => self.write(seq).lba_bytes(index, self.rules.lba),
        }
    }

    /// The whole disk image of a recipe, by replay from zeroes: the slow,
    /// obviously right reference for tests and tiny disks.
    pub fn image(&self, recipe: Option<&Recipe>) -> Vec<u8> {
        let mut img = vec![0u8; self.record.size as usize];
        let lba = self.rules.lba as usize;
        for &l in self.by_lba.keys() {
            if let Some(b) = self.bytes(self.source(recipe, l)) {
                img[l as usize * lba..(l as usize + 1) * lba].copy_from_slice(b);
            }
        }
        img
    }

    fn content_hash(&self, d: &Delta) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (l, s) in d {
            l.hash(&mut h);
            self.bytes(*s).unwrap_or(&[]).hash(&mut h);
        }
        h.finish()
    }

    fn same_content(&self, a: &Delta, b: &Delta) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|((la, sa), (lb, sb))| la == lb && self.bytes(*sa) == self.bytes(*sb))
    }

    /// The crash states of the cut and of every mark before it, duplicates
    /// (same bytes) removed, first occurrence kept.
    pub fn plan(&self, limits: &StateLimits) -> StatePlan {
        let mut candidates = Vec::new();
        let mut in_flight_at_cut = 0;
        if let Some(cut) = &self.record.cut {
            let pending = self.record.in_flight(cut.writes_before, cut.at);
            in_flight_at_cut = pending.len();
            candidates.extend(self.point_states("cut", cut.writes_before, &pending, limits));
        }
        let end = self
            .record
            .cut
            .as_ref()
            .map_or(self.record.writes.len() as u64, |c| c.writes_before);
        for m in &self.record.marks {
            if m.writes_before <= end {
                candidates.push(Recipe {
                    point: format!("mark:{}", m.name),
                    writes_before: m.writes_before,
                    except: BTreeMap::new(),
                });
            }
        }
        let generated = candidates.len();
        let mut distinct = Distinct::default();
        for recipe in candidates {
            distinct.add(self, recipe);
        }
        StatePlan {
            generated,
            in_flight_at_cut,
            states: distinct.states,
        }
    }

    /// The states of a power cut at each of `points` (virtual cuts of one
    /// recorded run), one state per distinct content across all points,
    /// and one judgement per (point, state) pair: the expensive part of a
    /// state (mount, scan) runs once per content, the model's verdict once
    /// per point it occurs at.
    pub fn plan_sweep(&self, points: &[CutPoint], limits: &StateLimits) -> SweepPlan {
        let mut distinct = Distinct::default();
        let mut judgements = Vec::new();
        let (mut generated, mut left_out) = (0, 0);
        // Each point's in-flight writes, in arrival (`seq`) order.
        let pending: Vec<Vec<u64>> = points
            .iter()
            .map(|p| self.record.in_flight(p.writes_before, p.at))
            .collect();
        for (i, (p, pending)) in points.iter().zip(&pending).enumerate() {
            // The point's own distinct contents, sampled to `limits.max`,
            // then merged with every other point's. The sample is chosen
            // by content (the seeded hash of the bytes, smallest first), not
            // by position: a content two points can both leave is kept at
            // both or at neither, so neighbouring points share their
            // contents and each one verified is judged at many points.
            let mut here = Distinct::default();
            for recipe in self.point_states(&p.recipe_point(), p.writes_before, pending, limits) {
                generated += 1;
                here.add(self, recipe);
            }
            let mut keyed: Vec<(u64, usize)> = here
                .states
                .iter()
                .enumerate()
                .map(|(k, st)| {
                    let mut h = self.content_hash(&st.delta) ^ limits.seed;
                    (splitmix(&mut h), k)
                })
                .collect();
            keyed.sort_unstable();
            keyed.truncate(limits.max as usize);
            let mut keep: Vec<usize> = keyed.into_iter().map(|(_, k)| k).collect();
            keep.sort_unstable();
            left_out += here.states.len() - keep.len();
            for k in keep {
                let st = &here.states[k];
                let state = distinct.add_made(self, st.recipe.clone(), st.delta.clone());
                judgements.push(Judgement {
                    point: i,
                    state,
                    recipe: st.recipe.clone(),
                    spread: false,
                });
            }
        }
        spread(points, &pending, &mut judgements);
        SweepPlan {
            points: points.to_vec(),
            generated,
            left_out,
            states: distinct.states,
            judgements,
        }
    }

    /// Writes this recipe lands only partly.
    fn torn_writes(&self, r: &Recipe) -> Vec<u64> {
        r.except
            .iter()
            .filter(|(_, l)| matches!(l, Landed::Lbas(_)))
            .map(|(s, _)| *s)
            .collect()
    }

    /// The states of one point: subsets of the in-flight writes (all of
    /// them when few, else none/all/each dropped alone/seeded random), then
    /// each non-atomic one torn at its tear points, head or tail landing
    /// alone.
    fn point_states(
        &self,
        point: &str,
        writes_before: u64,
        pending: &[u64],
        limits: &StateLimits,
    ) -> Vec<Recipe> {
        let mk = |except: BTreeMap<u64, Landed>| Recipe {
            point: point.into(),
            writes_before,
            except,
        };
        let dropped = |keep: &dyn Fn(usize) -> bool| {
            pending
                .iter()
                .enumerate()
                .filter(|(i, _)| !keep(*i))
                .map(|(_, &s)| (s, Landed::Nothing))
                .collect::<BTreeMap<_, _>>()
        };
        let n = pending.len();
        let mut out = Vec::new();
        if n as u32 <= limits.all_subsets_up_to {
            for mask in 0u64..(1u64 << n) {
                out.push(mk(dropped(&|i| mask & (1 << i) != 0)));
            }
        } else {
            out.push(mk(dropped(&|_| true)));
            out.push(mk(dropped(&|_| false)));
            for skip in 0..n {
                out.push(mk(dropped(&|i| i != skip)));
            }
            let mut rng = limits.seed ^ writes_before;
            for _ in 0..limits.random_subsets {
                let bits: Vec<bool> = (0..n).map(|_| splitmix(&mut rng) & 1 == 1).collect();
                out.push(mk(dropped(&|i| bits[i])));
            }
        }
        for &seq in pending {
            let w = self.write(seq);
            if self.rules.is_atomic(w.offset, w.len) {
                continue;
            }
            let n_lbas = w.len.div_ceil(self.rules.lba);
            for x in tear_points(n_lbas, limits.tear_points) {
                for part in [(0, x), (x, n_lbas)] {
                    let mut except = dropped(&|_| false);
                    except.insert(seq, Landed::Lbas(vec![part]));
                    out.push(mk(except));
                }
            }
        }
        out
    }
}

/// Judges each planned content at every other point that allows its
/// recipe too. A content costs a verifier mount, scan and repair; a
/// judgement costs a model run against the point's op log. So once a
/// content is scanned, every point a real cut could have left it at
/// should judge it: each of those pairs is a state of a virtual cut
/// there, checked against what the host had been promised by then.
///
/// The points that allow a recipe made at point `o` form an interval
/// around `o`: going later, each point needs more writes still in
/// flight, and a write once durable stays durable; going earlier, each
/// needs more of the recipe's dropped writes not yet received. So the
/// scan walks outwards from each planned judgement's point and stops at
/// the first point either way that does not allow its recipe.
fn spread(points: &[CutPoint], pending: &[Vec<u64>], judgements: &mut Vec<Judgement>) {
    let mut judged: HashSet<(usize, usize)> =
        judgements.iter().map(|j| (j.point, j.state)).collect();
    let planned: Vec<(usize, usize, Recipe)> = judgements
        .iter()
        .map(|j| (j.point, j.state, j.recipe.clone()))
        .collect();
    for (o, state, recipe) in planned {
        let at = |i: usize| recipe_at(&recipe, &points[i], &pending[i]).map(|r| (i, r));
        let later: Vec<_> = (o + 1..points.len()).map_while(at).collect();
        let earlier: Vec<_> = (0..o).rev().map_while(at).collect();
        for (point, recipe) in later.into_iter().chain(earlier) {
            if judged.insert((point, state)) {
                judgements.push(Judgement {
                    point,
                    state,
                    recipe,
                    spread: true,
                });
            }
        }
    }
    judgements.sort_by_key(|j| j.point);
}

/// The same landed writes as `recipe`, as a cut at `p` would leave them,
/// if the rules allow that there: every write it does not land whole was
/// received by `p` and not yet durable (`pending`), and every write it
/// lands was received by `p`. None otherwise. `pending` is sorted.
fn recipe_at(recipe: &Recipe, p: &CutPoint, pending: &[u64]) -> Option<Recipe> {
    let (b, here) = (recipe.writes_before, p.writes_before);
    let mut except = BTreeMap::new();
    for (&seq, landed) in &recipe.except {
        if seq >= here {
            // Not received at `p`: allowed only if the recipe drops it.
            (*landed == Landed::Nothing).then_some(())?;
        } else {
            pending.binary_search(&seq).ok()?;
            except.insert(seq, landed.clone());
        }
    }
    // Received by `p` but not by the recipe's point: not landed, so they
    // must still be in flight.
    for seq in b..here {
        pending.binary_search(&seq).ok()?;
        except.insert(seq, Landed::Nothing);
    }
    // Landed by the recipe but not received by `p`: not allowed.
    for seq in here..b {
        (recipe.except.get(&seq) == Some(&Landed::Nothing)).then_some(())?;
    }
    Some(Recipe {
        point: p.recipe_point(),
        writes_before: here,
        except,
    })
}

/// Interior LBA boundaries to tear an `n`-LBA write at: the midpoint
/// first, then evenly spread ones, at most `max`.
pub fn tear_points(n: u32, max: u32) -> Vec<u32> {
    if n < 2 || max == 0 {
        return Vec::new();
    }
    let interior = n - 1;
    let mut pts = vec![n / 2];
    if interior <= max {
        pts.extend((1..n).filter(|&x| x != n / 2));
    } else {
        for i in 1..max {
            let x = 1 + (u64::from(i) * u64::from(interior - 1) / u64::from(max - 1)) as u32;
            if !pts.contains(&x) {
                pts.push(x);
            }
        }
    }
    pts
}

fn lbas(w: &WriteRecord, lba: u32) -> impl Iterator<Item = u64> {
    let lba = u64::from(lba);
    (w.offset / lba)..w.end().div_ceil(lba)
}

/// States kept once per content, in the order first seen.
#[derive(Default)]
struct Distinct {
    by_hash: HashMap<u64, Vec<usize>>,
    states: Vec<State>,
}

impl Distinct {
    /// The index of the state with this recipe's content, added if new.
    fn add(&mut self, planner: &Planner, recipe: Recipe) -> usize {
        let delta = planner.delta(&recipe);
        self.add_made(planner, recipe, delta)
    }

    /// The same, for a recipe whose delta is already made.
    fn add_made(&mut self, planner: &Planner, recipe: Recipe, delta: Delta) -> usize {
        let h = planner.content_hash(&delta);
        let ids = self.by_hash.entry(h).or_default();
        if let Some(&i) = ids
            .iter()
            .find(|&&i| planner.same_content(&self.states[i].delta, &delta))
        {
            return i;
        }
        ids.push(self.states.len());
        let torn = planner.torn_writes(&recipe);
        self.states.push(State {
            recipe,
            delta,
            torn,
        });
        self.states.len() - 1
    }
}

/// One crash state, planned.
#[derive(Debug, Clone)]
pub struct State {
    pub recipe: Recipe,
    pub delta: Delta,
    /// Writes landed only in part (non-atomic, torn).
    pub torn: Vec<u64>,
}

/// All states of a cut.
#[derive(Debug, Clone)]
pub struct StatePlan {
    /// Before duplicates were removed.
    pub generated: usize,
    pub in_flight_at_cut: usize,
    pub states: Vec<State>,
}

impl StatePlan {
    /// Keeps at most `max` states, a seeded sample in their original
    /// order; returns how many were left out.
    pub fn sample(&mut self, max: usize, seed: u64) -> usize {
        let n = self.states.len();
        if n <= max {
            return 0;
        }
        let mut keep = seeded_sample(n, max, seed).into_iter().peekable();
        let mut i = 0;
        self.states.retain(|_| {
            let k = keep.peek() == Some(&i);
            if k {
                keep.next();
            }
            i += 1;
            k
        });
        n - max
    }
}

/// `max` of the indices `0..n` (all when `n <= max`), chosen by the seed,
/// in ascending order: the same seed picks the same ones.
pub(crate) fn seeded_sample(n: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut rng = seed;
    let mut keys: Vec<(u64, usize)> = (0..n).map(|i| (splitmix(&mut rng), i)).collect();
    keys.sort_unstable();
    let mut keep: Vec<usize> = keys.iter().take(max).map(|&(_, i)| i).collect();
    keep.sort_unstable();
    keep
}

/// When `t` falls, for printing.
pub fn ms(t: Duration) -> f64 {
    t.as_secs_f64() * 1000.0
}
