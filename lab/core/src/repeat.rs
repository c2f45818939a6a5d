//! `repeat`: the compact form of a run of near-identical steps in a
//! testcase's `workload.steps`, expanded into plain steps when the testcase
//! is parsed.
//!
//! ```yaml
//! - repeat:
//!     count: 32             # copies, 1..=4096
//!     offset_step: 4096     # added to the offset once more for each copy (default 0)
//!     step: { pwrite: { offset: 0, len: 4096, atomic: true } }
//! - repeat:                 # a group: its steps in order, then again, moved
//!     count: 4
//!     offset_step: 65536
//!     steps:
//!       - pwrite: { offset: 0, len: 4096, atomic: true }
//!       - fdatasync: {}       # no offset: repeated as it is
//! ```
//!
//! Copy `k` (from 0) of a step with an offset (pwrite, mmap_write,
//! fallocate, punch_hole, zero_range, sync_file_range, folios) is the step with `offset + k *
//! offset_step`; the other steps repeat unchanged. Everything after parsing
//! (the agent, the model, sweeps, the results' `stepNN` names) sees only
//! the expanded steps. A repeat inside a repeat and a `mark` inside one are
//! refused: marks name one point of the workload each.

use serde::de::{
    self, value::StringDeserializer, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer,
    MapAccess, VariantAccess, Visitor,
};
use serde::Deserialize;

use crate::stamp::SECTOR;
use crate::steps::Step;

/// Copies one repeat may make.
pub const MAX_COUNT: u64 = 4096;
/// Steps a workload may expand to.
pub const MAX_STEPS: usize = 10_000;

/// One item of `workload.steps` as written: a step, or a repeat of some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepItem {
    Step(Step),
    Repeat(Box<Repeat>),
}

/// `repeat: { count, offset_step, step | steps }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// How many copies, 1..=MAX_COUNT.
    pub count: u64,
    /// Added to each copy's offset once more than to the copy before it;
    /// a multiple of 512 (of 4096 for `folios`). None: 0.
    #[serde(default)]
    pub offset_step: Option<u64>,
    /// One step to repeat...
    #[serde(default)]
    pub step: Option<StepItem>,
    /// ...or a group, repeated together in order.
    #[serde(default)]
    pub steps: Option<Vec<StepItem>>,
}

/// Where an expanded step came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The item of `workload.steps` (0-based) as written.
    pub item: usize,
    /// None for a plain step.
    pub copy: Option<Made>,
}

/// A step a repeat made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Made {
    /// Which step of the repeat's `steps:` group (0-based); None for `step:`.
    pub inner: Option<usize>,
    /// Which copy (0-based) of `count`.
    pub index: u64,
    pub count: u64,
}

/// The steps a list of items expands to, each with where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    pub steps: Vec<Step>,
    pub origins: Vec<Origin>,
}

/// Where in an item a mistake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// A plain step (one past the most a workload may have).
    Step,
    /// The `repeat:` item itself.
    Item,
    /// One of its keys (`count`, `offset_step`, `step`, `steps`).
    Key(&'static str),
    /// The i-th step of its `steps:` group.
    Inner(usize),
}

/// A repeat that cannot be expanded: which item of `workload.steps`, where
/// inside it, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("workload.steps item {}: {message}", item + 1)]
pub struct RepeatError {
    pub item: usize,
    pub at: At,
    pub message: String,
    pub hint: Option<String>,
}

impl RepeatError {
    /// The dotted field path (`workload.steps.repeat.count`).
    pub fn field(&self) -> String {
        match self.at {
            At::Step => "workload.steps".into(),
            At::Item => "workload.steps.repeat".into(),
            At::Key(k) => format!("workload.steps.repeat.{k}"),
            At::Inner(_) => "workload.steps.repeat.steps".into(),
        }
    }
}

/// Expands every repeat; plain steps are kept as they are.
pub fn expand(items: &[StepItem]) -> Result<Expanded, RepeatError> {
    let mut out = Expanded::default();
    for (item, it) in items.iter().enumerate() {
        let err = |at, message: String, hint: Option<&str>| RepeatError {
            item,
            at,
            message,
            hint: hint.map(str::to_string),
        };
        let r = match it {
            StepItem::Step(s) => {
                if out.steps.len() >= MAX_STEPS {
                    return Err(err(
                        At::Step,
                        format!(
                            "the steps expand to more than the {MAX_STEPS} a workload may have"
                        ),
                        Some("use fewer steps; for long random runs use a `generate` workload"),
                    ));
                }
                out.steps.push(s.clone());
                out.origins.push(Origin { item, copy: None });
                continue;
            }
            StepItem::Repeat(r) => r,
        };
        if !(1..=MAX_COUNT).contains(&r.count) {
            return Err(err(
                At::Key("count"),
                format!("count {} is not between 1 and {MAX_COUNT}", r.count),
                Some("count is how many copies of the step the repeat makes"),
            ));
        }
        let group = r.group().map_err(|(at, m, h)| err(at, m, Some(h)))?;
        let made = r.count * group.len() as u64;
        if out.steps.len() as u64 + made > MAX_STEPS as u64 {
            return Err(err(
                At::Key("count"),
                format!(
                    "the steps expand to {} steps ({} before this repeat, {} x {} here), more than the {MAX_STEPS} a workload may have",
                    out.steps.len() as u64 + made,
                    out.steps.len(),
                    r.count,
                    group.len()
                ),
                Some("use fewer copies; for long random runs use a `generate` workload"),
            ));
        }
        if let Some(by) = r.offset_step {
            check_offset_step(r, &group, by)
                .map_err(|(m, h)| err(At::Key("offset_step"), m, Some(h)))?;
        }
        let by = r.offset_step.unwrap_or(0);
        let grouped = r.steps.is_some();
        for index in 0..r.count {
            for (inner, step) in group.iter().enumerate() {
                let mut s = (*step).clone();
                if let Some(o) = s.offset_mut() {
                    // Checked in check_offset_step for the last copy.
                    *o += index * by;
                }
                out.steps.push(s);
                out.origins.push(Origin {
                    item,
                    copy: Some(Made {
                        inner: grouped.then_some(inner),
                        index,
                        count: r.count,
                    }),
                });
            }
        }
    }
    Ok(out)
}

type Refused = (At, String, &'static str);

impl Repeat {
    /// The steps one copy is made of.
    fn group(&self) -> Result<Vec<&Step>, Refused> {
        let (items, single): (&[StepItem], bool) = match (&self.step, &self.steps) {
            (Some(s), None) => (std::slice::from_ref(s), true),
            (None, Some(g)) if !g.is_empty() => (g, false),
            (None, Some(_)) => {
                return Err((
                    At::Key("steps"),
                    "`steps:` is empty: there is nothing to repeat".into(),
                    "list the steps a copy is made of, e.g. `steps: [ { pwrite: { offset: 0, len: 4096 } }, { fsync: {} } ]`",
                ))
            }
            (None, None) => {
                return Err((
                    At::Item,
                    "a repeat needs `step:` (the step to repeat) or `steps:` (a group repeated together)".into(),
                    "e.g. `step: { pwrite: { offset: 0, len: 4096, atomic: true } }`",
                ))
            }
            (Some(_), Some(_)) => {
                return Err((
                    At::Key("steps"),
                    "a repeat takes `step:` or `steps:`, not both".into(),
                    "to repeat several steps together, list them all under `steps:`",
                ))
            }
        };
        let at = |i| {
            if single {
                At::Key("step")
            } else {
                At::Inner(i)
            }
        };
        items
            .iter()
            .enumerate()
            .map(|(i, it)| match it {
                StepItem::Repeat(_) => Err((
                    at(i),
                    "a repeat inside a repeat is not supported: one level keeps every expanded step easy to find in the file".into(),
                    "repeat a group (`steps:` with several steps, each moved by offset_step), or write the outer copies out as repeats of their own",
                )),
                StepItem::Step(Step::Mark(m)) => Err((
                    at(i),
                    format!(
                        "a mark cannot be repeated: every copy would be called {:?}, and a mark names one point of the workload",
                        m.name
                    ),
                    "put the mark before or after the repeat",
                )),
                StepItem::Step(s) => Ok(s),
            })
            .collect()
    }
}

/// `offset_step` must move some step of the group, keep each copy on the
/// same alignment to the 512-byte sectors the stamps are written in (to
/// whole pages for `folios`), and keep the last copy's offset in range.
fn check_offset_step(r: &Repeat, group: &[&Step], by: u64) -> Result<(), (String, &'static str)> {
    let moved: Vec<&&Step> = group.iter().filter(|s| s.offset().is_some()).collect();
    if moved.is_empty() {
        let names: Vec<&str> = group.iter().map(|s| s.name()).collect();
        return Err((
            format!(
                "offset_step moves the offset of the repeated steps, and {} {} none",
                names.join(", "),
                if names.len() == 1 { "has" } else { "have" }
            ),
            "drop offset_step to repeat the step as it is; pwrite, mmap_write, fallocate, punch_hole, zero_range, sync_file_range and folios have an offset",
        ));
    }
    let sector = SECTOR as u64;
    if !by.is_multiple_of(sector) {
        return Err((
            format!(
                "offset_step {by} is not a multiple of {sector}: every copy must keep the step's alignment to the {sector}-byte sectors the write stamps are laid in"
            ),
            "use a multiple of 512, e.g. the write's length for back-to-back copies",
        ));
    }
    let page = crate::folio::PAGE;
    if !by.is_multiple_of(page) && moved.iter().any(|s| matches!(s, Step::Folios(_))) {
        return Err((
            format!(
                "offset_step {by} is not a multiple of {page}: a folios step counts whole pages"
            ),
            "use a multiple of 4096",
        ));
    }
    for s in moved {
        let base = s.offset().unwrap_or(0);
        if (r.count - 1)
            .checked_mul(by)
            .and_then(|d| d.checked_add(base))
            .is_none()
        {
            return Err((
                format!(
                    "the last copy of {} would start at {base} + {} x {by}, beyond 2^64",
                    s.name(),
                    r.count - 1
                ),
                "use a smaller offset_step or fewer copies",
            ));
        }
    }
    Ok(())
}

/// `deserialize_with` for `Workload::Steps`: the items as written,
/// expanded (a repeat that cannot be is an error naming the item).
pub fn deserialize_expanded<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Step>, D::Error> {
    let items = Vec::<StepItem>::deserialize(d)?;
    expand(&items)
        .map(|e| e.steps)
        .map_err(|e| de::Error::custom(e.to_string()))
}

impl<'de> Deserialize<'de> for StepItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = StepItem;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a step (`pwrite: { ... }`, `fsync: {}`, ...) or `repeat: { ... }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StepItem, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let item = if key == "repeat" {
            StepItem::Repeat(Box::new(map.next_value()?))
        } else {
            StepItem::Step(Step::deserialize(OneEntry { key, map: &mut map })?)
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "a step is a map with one key, the operation; `{extra}` is a second one"
            )));
        }
        Ok(item)
    }
}

/// The rest of a one-key map whose key was read already, as the enum it
/// stands for (`pwrite: {...}` is `Step::Pwrite`).
struct OneEntry<'a, A> {
    key: String,
    map: &'a mut A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for OneEntry<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for OneEntry<'_, A> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), A::Error> {
        let key: StringDeserializer<A::Error> = self.key.clone().into_deserializer();
        // "unknown variant `x`, expected one of `open`, ...": the step
        // names, and a repeat.
        let v = seed
            .deserialize(key)
            .map_err(|e| de::Error::custom(format!("{e}, or `repeat`")))?;
        Ok((v, self))
    }
}

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for OneEntry<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.map.next_value()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(Shape::Tuple(len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(Shape::Struct(fields, visitor))
    }
}

/// A variant's content that is a tuple or a struct.
enum Shape<V> {
    Tuple(usize, V),
    Struct(&'static [&'static str], V),
}

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Shape<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        match self {
            Shape::Tuple(len, v) => d.deserialize_tuple(len, v),
            Shape::Struct(fields, v) => d.deserialize_struct("", fields, v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::{Expect, FileOnly, Folios, MarkStep, MmapWrite, Pwrite, Range};

    /// `workload.steps` as a testcase holds it.
    #[derive(Deserialize)]
    struct W {
        #[serde(with = "serde_yaml::with::singleton_map_recursive")]
        steps: Vec<StepItem>,
    }

    fn items(yaml: &str) -> Vec<StepItem> {
        serde_yaml::from_str::<W>(yaml).unwrap().steps
    }

    fn pwrite(offset: u64) -> Step {
        Step::Pwrite(Pwrite {
            expect: Expect::SupportedOrSkip,
            ..Pwrite::new(offset, 4096, true)
        })
    }

    fn fsync() -> Step {
        Step::Fsync(FileOnly::default())
    }

    fn repeat(count: u64, offset_step: Option<u64>, step: Step) -> StepItem {
        StepItem::Repeat(Box::new(Repeat {
            count,
            offset_step,
            step: Some(StepItem::Step(step)),
            steps: None,
        }))
    }

    #[test]
    fn a_repeated_step_moves_by_offset_step_and_keeps_the_rest() {
        let it = items(
            "steps:\n  - fsync: {}\n  - repeat:\n      count: 3\n      offset_step: 4096\n      step: { pwrite: { offset: 8192, len: 4096, atomic: true, expect: supported_or_skip } }\n  - fsync: {}\n",
        );
        let x = expand(&it).unwrap();
        assert_eq!(
            x.steps,
            [fsync(), pwrite(8192), pwrite(12288), pwrite(16384), fsync()]
        );
        let made = |index| {
            Some(Made {
                inner: None,
                index,
                count: 3,
            })
        };
        assert_eq!(
            x.origins,
            [
                Origin {
                    item: 0,
                    copy: None
                },
                Origin {
                    item: 1,
                    copy: made(0)
                },
                Origin {
                    item: 1,
                    copy: made(1)
                },
                Origin {
                    item: 1,
                    copy: made(2)
                },
                Origin {
                    item: 2,
                    copy: None
                },
            ]
        );
    }

    #[test]
    fn without_offset_step_the_copies_are_the_step() {
        let x = expand(&[repeat(4, None, pwrite(0)), repeat(2, None, fsync())]).unwrap();
        assert_eq!(x.steps, [vec![pwrite(0); 4], vec![fsync(); 2]].concat());
    }

    #[test]
    fn a_group_repeats_in_order_and_moves_only_the_steps_with_an_offset() {
        let it = items(
            "steps:\n  - repeat:\n      count: 2\n      offset_step: 65536\n      steps:\n        - pwrite: { offset: 0, len: 4096, atomic: true, expect: supported_or_skip }\n        - fdatasync: {}\n        - sync_file_range: { offset: 4096, len: 8192 }\n",
        );
        let x = expand(&it).unwrap();
        let sfr = |offset| {
            Step::SyncFileRange(Range {
                file: None,
                offset,
                len: 8192,
                expect: Expect::Ok,
            })
        };
        let fdatasync = Step::Fdatasync(FileOnly::default());
        assert_eq!(
            x.steps,
            [
                pwrite(0),
                fdatasync.clone(),
                sfr(4096),
                pwrite(65536),
                fdatasync,
                sfr(69632)
            ]
        );
        let inner: Vec<(Option<usize>, u64)> = x
            .origins
            .iter()
            .map(|o| o.copy.map(|m| (m.inner, m.index)).unwrap())
            .collect();
        assert_eq!(
            inner,
            [
                (Some(0), 0),
                (Some(1), 0),
                (Some(2), 0),
                (Some(0), 1),
                (Some(1), 1),
                (Some(2), 1)
            ]
        );
    }

    fn refused(items: &[StepItem]) -> RepeatError {
        expand(items).unwrap_err()
    }

    #[test]
    fn count_is_1_to_4096() {
        for count in [0, MAX_COUNT + 1, u64::MAX] {
            let e = refused(&[repeat(count, None, fsync())]);
            assert_eq!(e.at, At::Key("count"), "{e}");
            assert!(e.message.contains("not between 1 and 4096"), "{e}");
        }
        assert_eq!(expand(&[repeat(1, None, fsync())]).unwrap().steps.len(), 1);
        assert_eq!(
            expand(&[repeat(MAX_COUNT, None, fsync())])
                .unwrap()
                .steps
                .len(),
            4096
        );
    }

    #[test]
    fn the_expanded_workload_is_capped() {
        // Three repeats of 4096 fit up to the cap; the third crosses it.
        let it = [
            StepItem::Step(fsync()),
            repeat(4096, None, fsync()),
            repeat(4096, None, fsync()),
            repeat(4096, None, fsync()),
        ];
        let e = refused(&it);
        assert_eq!((e.item, e.at), (3, At::Key("count")), "{e}");
        assert!(
            e.message
                .contains("expand to 12289 steps (8193 before this repeat, 4096 x 1 here), more than the 10000"),
            "{e}"
        );
        // Exactly the cap is allowed; one plain step more is not.
        let mut it = vec![
            repeat(4096, None, fsync()),
            repeat(4096, None, fsync()),
            repeat(1808, None, fsync()),
        ];
        assert_eq!(expand(&it).unwrap().steps.len(), MAX_STEPS);
        it.push(StepItem::Step(fsync()));
        let e = refused(&it);
        assert_eq!((e.item, e.at), (3, At::Step), "{e}");
        assert_eq!(e.field(), "workload.steps");
    }

    #[test]
    fn offset_step_needs_a_step_with_an_offset() {
        for step in [
            fsync(),
            Step::Close(FileOnly::default()),
            Step::Verify(FileOnly::default()),
        ] {
            let e = refused(&[repeat(2, Some(4096), step.clone())]);
            assert_eq!(e.at, At::Key("offset_step"), "{e}");
            assert!(
                e.message.contains(&format!("and {} has none", step.name())),
                "{e}"
            );
            assert!(e.hint.unwrap().contains("drop offset_step"));
            // offset_step: 0 says the same thing: refused too.
            assert!(expand(&[repeat(2, Some(0), step)]).is_err());
        }
        // A group with one step that has an offset is fine.
        let it = items(
            "steps:\n  - repeat: { count: 2, offset_step: 512, steps: [ { fsync: {} }, { mmap_write: { offset: 0, len: 512 } } ] }\n",
        );
        let x = expand(&it).unwrap();
        assert!(matches!(
            &x.steps[3],
            Step::MmapWrite(MmapWrite { offset: 512, .. })
        ));
        let it = items(
            "steps:\n  - repeat: { count: 2, offset_step: 512, steps: [ { fsync: {} }, { close: {} } ] }\n",
        );
        assert!(refused(&it).message.contains("fsync, close have none"));
    }

    #[test]
    fn offset_step_keeps_sector_and_page_alignment() {
        for by in [1, 100, 511, 4097] {
            let e = refused(&[repeat(2, Some(by), pwrite(0))]);
            assert_eq!(e.at, At::Key("offset_step"), "{e}");
            assert!(e.message.contains("not a multiple of 512"), "{e}");
        }
        let folios = Step::Folios(Folios {
            file: None,
            offset: 0,
            len: Some(4096),
            expect: Expect::Ok,
        });
        let e = refused(&[repeat(2, Some(512), folios.clone())]);
        assert!(e.message.contains("not a multiple of 4096"), "{e}");
        assert_eq!(
            expand(&[repeat(2, Some(8192), folios)])
                .unwrap()
                .steps
                .len(),
            2
        );
        // A misaligned template stays misaligned the same way in every copy.
        let x = expand(&[repeat(3, Some(1024), pwrite(1))]).unwrap();
        let offsets: Vec<_> = x.steps.iter().map(|s| s.offset().unwrap()).collect();
        assert_eq!(offsets, [1, 1025, 2049]);
    }

    #[test]
    fn the_last_copy_must_stay_below_2_pow_64() {
        let e = refused(&[repeat(3, Some(1 << 63), pwrite(0))]);
        assert_eq!(e.at, At::Key("offset_step"), "{e}");
        assert!(e.message.contains("beyond 2^64"), "{e}");
        expand(&[repeat(2, Some(1 << 63), pwrite(0))]).unwrap();
    }

    #[test]
    fn marks_and_nested_repeats_are_refused_where_they_are() {
        let mark = Step::Mark(MarkStep {
            name: "m".into(),
            expect: Expect::Ok,
        });
        let e = refused(&[repeat(2, None, mark)]);
        assert_eq!(e.at, At::Key("step"), "{e}");
        assert!(
            e.message.contains("every copy would be called \"m\""),
            "{e}"
        );
        let it = items(
            "steps:\n  - fsync: {}\n  - repeat:\n      count: 2\n      steps:\n        - fsync: {}\n        - mark: { name: m }\n",
        );
        let e = refused(&it);
        assert_eq!((e.item, e.at), (1, At::Inner(1)), "{e}");
        assert_eq!(e.field(), "workload.steps.repeat.steps");
        let nested = repeat(2, None, fsync());
        let it = [StepItem::Repeat(Box::new(Repeat {
            count: 2,
            offset_step: None,
            step: Some(nested),
            steps: None,
        }))];
        let e = refused(&it);
        assert_eq!(e.at, At::Key("step"), "{e}");
        assert!(e.message.contains("a repeat inside a repeat"), "{e}");
    }

    #[test]
    fn a_repeat_has_step_or_steps() {
        let it = items("steps:\n  - repeat: { count: 2 }\n");
        assert_eq!(refused(&it).at, At::Item);
        let it = items("steps:\n  - repeat: { count: 2, steps: [] }\n");
        assert_eq!(refused(&it).at, At::Key("steps"));
        let it = items(
            "steps:\n  - repeat: { count: 2, step: { fsync: {} }, steps: [ { fsync: {} } ] }\n",
        );
        let e = refused(&it);
        assert_eq!(e.at, At::Key("steps"));
        assert!(e.message.contains("not both"), "{e}");
    }

    #[test]
    fn unknown_fields_and_steps_are_named() {
        let e = serde_yaml::from_str::<W>(
            "steps:\n  - repeat: { count: 2, step: { fsync: {} }, ofset_step: 512 }\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("unknown field `ofset_step`"), "{e}");
        let e = serde_yaml::from_str::<W>("steps:\n  - repaet: { count: 2 }\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown variant `repaet`"), "{e}");
        assert!(e.contains("`folios`, or `repeat`"), "{e}");
        let e = serde_yaml::from_str::<W>("steps:\n  - { fsync: {}, close: {} }\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`close` is a second one"), "{e}");
    }

    #[test]
    fn expanded_steps_serialise_and_read_back_as_plain_steps() {
        #[derive(Deserialize, serde::Serialize)]
        struct Plain {
            #[serde(with = "serde_yaml::with::singleton_map_recursive")]
            steps: Vec<Step>,
        }
        let it = items(
            "steps:\n  - repeat: { count: 3, offset_step: 4096, step: { pwrite: { offset: 0, len: 4096 } } }\n",
        );
        let steps = expand(&it).unwrap().steps;
        let yaml = serde_yaml::to_string(&Plain {
            steps: steps.clone(),
        })
        .unwrap();
        assert!(!yaml.contains("repeat"), "{yaml}");
        assert_eq!(expand(&items(&yaml)).unwrap().steps, steps);
        let json = serde_json::to_string(&steps).unwrap();
        let back: Vec<StepItem> = serde_json::from_str(&json).unwrap();
        assert_eq!(expand(&back).unwrap().steps, steps);
    }

    fn template() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let off = 0u64..1 << 30;
        let len = 1u64..1 << 20;
        prop_oneof![
            (off.clone(), len.clone(), any::<bool>(), any::<bool>()).prop_map(|(o, l, a, d)| {
                Step::Pwrite(Pwrite {
                    dsync: d,
                    ..Pwrite::new(o, l, a)
                })
            }),
            (off.clone(), len.clone(), any::<bool>()).prop_map(|(offset, len, msync)| {
                Step::MmapWrite(MmapWrite {
                    file: Some("g".into()),
                    offset,
                    len,
                    msync,
                    expect: Expect::Ok,
                })
            }),
            (off.clone(), len.clone()).prop_map(|(offset, len)| Step::Fallocate(Range {
                file: None,
                offset,
                len,
                expect: Expect::Errno("ENOSPC".into()),
            })),
            (off.clone(), len).prop_map(|(offset, len)| Step::SyncFileRange(Range {
                file: None,
                offset,
                len,
                expect: Expect::Ok,
            })),
            off.prop_map(|o| Step::Folios(Folios {
                file: None,
                offset: o / 4096 * 4096,
                len: None,
                expect: Expect::SupportedOrSkip,
            })),
        ]
    }

    fn without_offset() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            Just(fsync()),
            Just(Step::Fdatasync(FileOnly {
                file: Some("g".into()),
                expect: Expect::Ok
            })),
            Just(Step::Verify(FileOnly::default())),
            Just(Step::Close(FileOnly::default())),
            (0u64..1 << 30).prop_map(|len| Step::Ftruncate(crate::steps::Ftruncate {
                file: None,
                len,
                expect: Expect::Ok
            })),
            Just(Step::Open(crate::steps::Open {
                file: "f".into(),
                direct: true,
                sync: false,
                dsync: false,
                expect: Expect::Ok
            })),
        ]
    }

    proptest::proptest! {
        /// A step without an offset is copied as it is.
        #[test]
        fn expansion_copies_a_step_without_an_offset(
            template in without_offset(),
            count in 1u64..=MAX_COUNT,
        ) {
            proptest::prop_assert_eq!(template.offset(), None);
            let x = expand(&[repeat(count, None, template.clone())]).unwrap();
            proptest::prop_assert_eq!(x.steps, vec![template; count as usize]);
        }

        /// `count` copies; copy i is the template at offset + i * offset_step.
        #[test]
        fn expansion_moves_each_copy_by_offset_step(
            template in template(),
            count in 1u64..=MAX_COUNT,
            pages in 0u64..1 << 20,
            sectors in 0u64..8,
            given in proptest::prelude::any::<bool>(),
        ) {
            let sectors = if matches!(template, Step::Folios(_)) { 0 } else { sectors };
            let by = pages * 4096 + sectors * 512;
            let offset_step = (given || by != 0).then_some(by);
            let x = expand(&[repeat(count, offset_step, template.clone())]).unwrap();
            proptest::prop_assert_eq!(x.steps.len() as u64, count);
            let base = template.offset().unwrap();
            for (i, (s, o)) in x.steps.iter().zip(&x.origins).enumerate() {
                let mut want = template.clone();
                *want.offset_mut().unwrap() = base + i as u64 * by;
                proptest::prop_assert_eq!(s, &want);
                proptest::prop_assert_eq!(o.copy.map(|m| (m.index, m.count)), Some((i as u64, count)));
            }
        }
    }
}
