//! [`Partition`]: the lazy stream of one partition's elements that a task's operations
//! pass along, and the adapters narrow operations build on it.
//!
//! Each operation of a task is its own entry function (see [`entry`](crate::entry)),
//! so the stages of a pipeline meet at trait objects: the executor cannot fuse
//! `text_file → flat_map → map` into one monomorphized loop. Pulled element by element
//! (`next`), every element then crosses each stage's dynamic call and each adapter's
//! state machine (a `FlatMap` re-checks its front iterator on every word). A partition
//! is therefore also *driven*: [`Partition::drive`] pushes every element into a sink,
//! each stage composing its closure onto the sink of the stage after it, so that one
//! dynamic call per stage starts the loop and the elements flow through ordinary
//! closure calls — a flat map's inner items go out by its own iterator's `try_fold`.
//! Word count's map side measured about a quarter faster driven than pulled. Actions
//! and shuffle writes drive their input; `fold`, `for_each`, `count`, `sum` and
//! `reduce` on a `Partition` (in a `map_partitions` closure too) drive it as well.

use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::executor::unwind_if_killed;

/// A sink a partition is driven into: `Break` stops the drive early.
pub(crate) type Sink<'a, T> = &'a mut dyn FnMut(T) -> ControlFlow<()>;

/// What a stage of a partition is: an iterator that can also be driven.
pub(crate) trait Stage<T>: Iterator<Item = T> + Send {
    /// Feeds the remaining elements to `sink` until it breaks or they run out.
    fn drive(&mut self, sink: Sink<'_, T>) -> ControlFlow<()>;
}

/// A partition being computed: a lazy iterator of its elements, as
/// [`Dataset::map_partitions`](crate::Dataset::map_partitions) hands it over.
///
/// ```
/// use flint::{prelude::*, Partition};
/// fn evens(it: Partition<u64>) -> impl Iterator<Item = u64> {
///     it.filter(|x| x % 2 == 0)
/// }
/// # fn main() -> flint::Result<()> {
/// let ctx = Context::builder().master("local[2]").create()?;
/// assert_eq!(ctx.range(0, 6, 2).map_partitions(evens).collect()?, vec![0, 2, 4]);
/// assert_eq!(evens(Partition::new(0..6)).count(), 3);
/// # Ok(()) }
/// ```
pub struct Partition<T> {
    stage: Box<dyn Stage<T>>,
    /// A task's kill flag, on the partition an action consumes: checked once per
    /// element, inside the sink the action drives (no stage of its own, which would
    /// add a dynamic call per element).
    kill: Option<Arc<AtomicBool>>,
}

impl<T> Partition<T> {
    /// Feeds the remaining elements to `sink` until it breaks or they run out.
    pub(crate) fn drive(&mut self, sink: Sink<'_, T>) -> ControlFlow<()> {
        match &self.kill {
            None => self.stage.drive(sink),
            Some(flag) => {
                let flag = &**flag;
                self.stage.drive(&mut |x| {
                    unwind_if_killed(flag);
                    sink(x)
                })
            }
        }
    }

    /// [`drive`](Self::drive) into `f` itself: the kill check is compiled into the one
    /// closure the stages call.
    #[inline]
    fn drive_with(&mut self, mut f: impl FnMut(T) -> ControlFlow<()>) -> ControlFlow<()> {
        match &self.kill {
            None => self.stage.drive(&mut f),
            Some(flag) => {
                let flag = &**flag;
                self.stage.drive(&mut |x| {
                    unwind_if_killed(flag);
                    f(x)
                })
            }
        }
    }

    /// The partition, stopping (by the executor's kill unwind) once `flag` is set.
    pub(crate) fn with_kill_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.kill = Some(flag);
        self
    }
}

impl<T: 'static> Partition<T> {
    /// A partition of the elements of `it` (to call a `map_partitions` function in a
    /// test, say).
    pub fn new(it: impl Iterator<Item = T> + Send + 'static) -> Self {
        Partition::stage(Source(it))
    }

    /// The partition of one stage.
    pub(crate) fn stage(s: impl Stage<T> + 'static) -> Self {
        Partition {
            stage: Box::new(s),
            kill: None,
        }
    }

    /// Each element through `f`.
    pub(crate) fn mapped<U: 'static>(self, f: impl FnMut(T) -> U + Send + 'static) -> Partition<U> {
        Partition::stage(Map { inner: self, f })
    }

    /// The elements for which `f` is true.
    pub(crate) fn filtered(self, f: impl FnMut(&T) -> bool + Send + 'static) -> Partition<T> {
        Partition::stage(Filter { inner: self, f })
    }

    /// Each element to the elements of `f(x)`.
    pub(crate) fn flat_mapped<I>(self, f: impl FnMut(T) -> I + Send + 'static) -> Partition<I::Item>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: 'static,
    {
        Partition::stage(FlatMap {
            inner: self,
            f,
            front: None,
        })
    }

    /// The elements of `parts`, one partition after the other.
    pub(crate) fn concat(parts: Vec<Partition<T>>) -> Partition<T> {
        Partition::stage(Concat {
            parts: parts.into_iter(),
            current: None,
        })
    }

    /// `f` on every element, driven, until it fails.
    pub(crate) fn try_each<E>(mut self, mut f: impl FnMut(T) -> Result<(), E>) -> Result<(), E> {
        let mut failed = None;
        let _ = self.drive_with(|x| match f(x) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        });
        failed.map_or(Ok(()), Err)
    }

    /// Every element, in order, driven.
    pub(crate) fn collect_vec(mut self) -> Vec<T> {
        // Pre-sized from the lower bound, within reason (a source may claim billions).
        let mut v = Vec::with_capacity(self.stage.size_hint().0.min(1 << 16));
        let _ = self.drive_with(|x| {
            v.push(x);
            ControlFlow::Continue(())
        });
        v
    }
}

impl<T> Iterator for Partition<T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        if let Some(flag) = &self.kill {
            unwind_if_killed(flag);
        }
        self.stage.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stage.size_hint()
    }

    fn fold<B, F: FnMut(B, T) -> B>(mut self, init: B, mut f: F) -> B {
        let mut acc = Some(init);
        let _ = self.drive_with(|x| {
            if let Some(a) = acc.take() {
                acc = Some(f(a, x));
            }
            ControlFlow::Continue(())
        });
        match acc {
            Some(a) => a,
            // `acc` is only empty while `f` runs; a panic in `f` unwinds past here.
            None => unreachable!("fold's accumulator is put back after every element"),
        }
    }
}

/// Any iterator as the first stage (a source, or what a `map_partitions` returned).
struct Source<I>(I);

impl<I: Iterator + Send> Iterator for Source<I> {
    type Item = I::Item;
    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<I: Iterator + Send> Stage<I::Item> for Source<I> {
    fn drive(&mut self, sink: Sink<'_, I::Item>) -> ControlFlow<()> {
        self.0.try_for_each(sink)
    }
}

struct Map<T, F> {
    inner: Partition<T>,
    f: F,
}

impl<T, U, F: FnMut(T) -> U> Iterator for Map<T, F> {
    type Item = U;
    #[inline]
    fn next(&mut self) -> Option<U> {
        self.inner.next().map(&mut self.f)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<T, U, F: FnMut(T) -> U + Send> Stage<U> for Map<T, F> {
    fn drive(&mut self, sink: Sink<'_, U>) -> ControlFlow<()> {
        let f = &mut self.f;
        self.inner.drive(&mut |x| sink(f(x)))
    }
}

struct Filter<T, F> {
    inner: Partition<T>,
    f: F,
}

impl<T, F: FnMut(&T) -> bool> Iterator for Filter<T, F> {
    type Item = T;
    #[inline]
    fn next(&mut self) -> Option<T> {
        let f = &mut self.f;
        self.inner.find(|x| f(x))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.inner.size_hint().1)
    }
}

impl<T, F: FnMut(&T) -> bool + Send> Stage<T> for Filter<T, F> {
    fn drive(&mut self, sink: Sink<'_, T>) -> ControlFlow<()> {
        let f = &mut self.f;
        self.inner.drive(&mut |x| {
            if f(&x) {
                sink(x)
            } else {
                ControlFlow::Continue(())
            }
        })
    }
}

struct FlatMap<T, F, J> {
    inner: Partition<T>,
    f: F,
    /// The items of the element being expanded, when `next` stopped inside them.
    front: Option<J>,
}

impl<T, I: IntoIterator, F: FnMut(T) -> I> Iterator for FlatMap<T, F, I::IntoIter> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        loop {
            if let Some(j) = &mut self.front {
                if let Some(x) = j.next() {
                    return Some(x);
                }
                self.front = None;
            }
            let x = self.inner.next()?;
            self.front = Some((self.f)(x).into_iter());
        }
    }
}

impl<T, I, F> Stage<I::Item> for FlatMap<T, F, I::IntoIter>
where
    I: IntoIterator,
    I::IntoIter: Send,
    F: FnMut(T) -> I + Send,
{
    fn drive(&mut self, sink: Sink<'_, I::Item>) -> ControlFlow<()> {
        if let Some(j) = &mut self.front {
            j.try_for_each(&mut *sink)?;
            self.front = None;
        }
        let f = &mut self.f;
        let front = &mut self.front;
        self.inner.drive(&mut |x| {
            let mut j = f(x).into_iter();
            let r = j.try_for_each(&mut *sink);
            if r.is_break() {
                // The rest of this element's items stay for a later `next` or drive.
                *front = Some(j);
            }
            r
        })
    }
}

struct Concat<T> {
    parts: std::vec::IntoIter<Partition<T>>,
    current: Option<Partition<T>>,
}

impl<T> Iterator for Concat<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(c) = &mut self.current {
                if let Some(x) = c.next() {
                    return Some(x);
                }
            }
            self.current = Some(self.parts.next()?);
        }
    }
}

impl<T> Stage<T> for Concat<T> {
    fn drive(&mut self, sink: Sink<'_, T>) -> ControlFlow<()> {
        loop {
            if let Some(c) = &mut self.current {
                c.drive(&mut *sink)?;
            }
            match self.parts.next() {
                Some(p) => self.current = Some(p),
                None => {
                    self.current = None;
                    return ControlFlow::Continue(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driven<T: 'static>(p: Partition<T>) -> Vec<T> {
        p.collect_vec()
    }

    fn pulled<T: 'static>(p: Partition<T>) -> Vec<T> {
        let mut v = Vec::new();
        for x in p {
            v.push(x);
        }
        v
    }

    fn pipeline() -> Partition<(String, u64)> {
        Partition::new(["a b", "", "c", "d e f"].into_iter().map(String::from))
            .flat_mapped(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filtered(|w| w != "e")
            .mapped(|w| (w, 1))
    }

    #[test]
    fn driving_and_pulling_give_the_same_elements() {
        let want: Vec<(String, u64)> = ["a", "b", "c", "d", "f"]
            .into_iter()
            .map(|w| (w.to_string(), 1))
            .collect();
        assert_eq!(driven(pipeline()), want);
        assert_eq!(pulled(pipeline()), want);
        assert_eq!(pipeline().count(), 5);
        assert_eq!(pipeline().map(|(_, n)| n).sum::<u64>(), 5);
        let parts = vec![pipeline(), Partition::new(std::iter::empty()), pipeline()];
        assert_eq!(Partition::concat(parts).count(), 10);
    }

    #[test]
    fn a_set_kill_flag_stops_every_way_of_consuming_a_partition() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        use std::sync::atomic::Ordering;
        let flag = Arc::new(AtomicBool::new(false));
        // Unset, the flag changes nothing.
        let p = || Partition::new(0..10u64).mapped(|x| x * 2);
        assert_eq!(p().with_kill_flag(flag.clone()).collect_vec().len(), 10);
        // Set after three elements: every consumer unwinds at the next element.
        type Consume = Box<dyn Fn(Partition<u64>)>;
        let consumers: Vec<(&str, Consume)> = vec![
            ("collect_vec", Box::new(|p| drop(p.collect_vec()))),
            (
                "try_each",
                Box::new(|p| p.try_each(|_| Ok::<(), ()>(())).unwrap_or(())),
            ),
            (
                "fold",
                Box::new(|p| {
                    let _ = p.fold(0, |a: u64, x| a.max(x));
                }),
            ),
            ("next", Box::new(|mut p| while p.next().is_some() {})),
            (
                "drive",
                Box::new(|mut p| {
                    let _ = p.drive(&mut |_| ControlFlow::Continue(()));
                }),
            ),
        ];
        for (name, consume) in consumers {
            flag.store(false, Ordering::Relaxed);
            let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (f, s) = (flag.clone(), seen.clone());
            let part = Partition::new(0..1_000_000u64)
                .mapped(move |x| {
                    if s.fetch_add(1, Ordering::Relaxed) == 2 {
                        f.store(true, Ordering::Relaxed);
                    }
                    x
                })
                .with_kill_flag(flag.clone());
            let r = catch_unwind(AssertUnwindSafe(|| consume(part)));
            assert!(r.is_err(), "{name}: not stopped");
            assert_eq!(seen.load(Ordering::Relaxed), 3, "{name}");
        }
    }

    #[test]
    fn a_drive_stopped_early_resumes_where_it_stopped() {
        // Stopped inside a flat-mapped element: its remaining items come next.
        let mut p = Partition::new(vec![vec![1, 2, 3], vec![4, 5]].into_iter()).flat_mapped(|v| v);
        let mut seen = Vec::new();
        let r = p.drive(&mut |x| {
            seen.push(x);
            if x == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(r.is_break());
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(p.next(), Some(3));
        assert_eq!(p.collect_vec(), vec![4, 5]);

        let mut c = Partition::concat(vec![Partition::new(0..3), Partition::new(3..6)]);
        let mut n = 0;
        let _ = c.drive(&mut |x| {
            n += 1;
            if x == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(n, 4);
        assert_eq!(c.collect_vec(), vec![4, 5]);
    }

    #[test]
    fn reduce_and_fold_see_every_element() {
        let p = Partition::new(1..=10u64).filtered(|x| x % 2 == 0);
        assert_eq!(p.reduce(|a, b| a + b), Some(30));
        let p = Partition::new(1..=4u64).mapped(|x| x * 10);
        let digits = p.fold(String::new(), |mut s, x| {
            s.push_str(&x.to_string());
            s
        });
        assert_eq!(digits, "10203040");
    }
}
