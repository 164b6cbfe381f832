//! Task code as entry points: the only `unsafe` in flint.
//!
//! A closure cannot be sent to another process, but the code it compiles to is already
//! there: executors run the driver's own binary. So an operation travels as *which
//! function to call* — an [`EntryPoint`]: the address of one monomorphized entry
//! function minus the address of [`base`], plus a type fingerprint — and its data as
//! serialized captures. Every entry function has the one uniform signature [`EntryFn`];
//! it takes partitions as [`ErasedPartition`]s (`Box<dyn Any + Send>`) and returns one.
//!
//! The executor adds the offset to its own `base` and calls the function. The function
//! first checks that the fingerprint it was sent is its own (a stable hash of the
//! operation's `std::any::type_name` and its `TypeId`), so an offset that resolves to
//! an entry of another type refuses to run; its inputs are downcast to the exact
//! iterator type, so a wrong input is an error, never undefined behaviour.
//!
//! What this module relies on, and who guarantees it, is in the `SAFETY` comments of
//! [`call`] and [`conjure`]. Miri checks the in-process path (only the expected
//! integer-to-pointer note, silenced by the flag):
//!
//! ```text
//! MIRIFLAGS=-Zmiri-permissive-provenance cargo +nightly miri test -p flint --lib -- \
//!     entry:: block_cache:: tests::a_task_round_trips tests::a_tampered tests::garbage
//! ```

use std::any::{Any, TypeId};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::wire::TaskError;

/// A partition with its element type erased: `Box<Partition<T>>` inside.
pub(crate) type ErasedPartition = Box<dyn Any + Send>;

pub use crate::partition::Partition;

/// The one signature of every entry function: fingerprint, captures, input partitions.
pub(crate) type EntryFn =
    fn(u64, &[u8], Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError>;

/// Which monomorphized entry function to run: its offset from [`base`] and the
/// fingerprint of the operation it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct EntryPoint {
    /// Address of the entry function minus the address of [`base`] in this binary.
    pub offset: i64,
    /// [`fingerprint`] of the operation type the entry runs.
    pub fingerprint: u64,
}

/// An operation that can run as a task entry: a marker type naming the closure and
/// element types it was made for.
pub(crate) trait Op: 'static {
    /// Runs the operation on decoded inputs. Called only after the fingerprint matched.
    fn run(captures: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError>;
}

/// The anchor every offset is taken from. It is an entry itself and refuses every call
/// (no operation has fingerprint 0 and it checks none), so offset 0 runs nothing.
#[inline(never)]
fn base(
    _fingerprint: u64,
    _captures: &[u8],
    _inputs: Vec<ErasedPartition>,
) -> Result<ErasedPartition, TaskError> {
    Err(TaskError::Entry(
        "the entry point is flint's base function, which runs no operation".into(),
    ))
}

fn trampoline<O: Op>(
    fingerprint: u64,
    captures: &[u8],
    inputs: Vec<ErasedPartition>,
) -> Result<ErasedPartition, TaskError> {
    let own = self::fingerprint::<O>();
    if fingerprint != own {
        return Err(TaskError::Entry(format!(
            "entry point refused: it runs {} (fingerprint {own:016x}) but the task says {fingerprint:016x}; \
             driver and executor must run the same binary",
            std::any::type_name::<O>()
        )));
    }
    O::run(captures, inputs)
}

fn address(f: EntryFn) -> i64 {
    f as usize as i64
}

/// The entry point of operation `O` in this binary.
pub(crate) fn entry_point<O: Op>() -> EntryPoint {
    let f: EntryFn = trampoline::<O>;
    EntryPoint {
        offset: address(f).wrapping_sub(address(base)),
        fingerprint: fingerprint::<O>(),
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every process and every run.
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The fingerprint of operation `O`: FNV-1a of its type name, then of its `TypeId`.
///
/// The name alone is stable across builds but two closures in one function share a
/// name (`main::{{closure}}`); the `TypeId` tells them apart and is the same in every
/// process running this binary, which is all an entry point is valid for anyway.
/// Never 0 (reserved for "no operation").
pub(crate) fn fingerprint<O: 'static>() -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(std::any::type_name::<O>().as_bytes());
    TypeId::of::<O>().hash(&mut h);
    h.finish().max(1)
}

/// Runs the entry function `entry` names, in this binary.
///
/// Returns an error (and runs nothing) when the offset is 0 or when the fingerprint is
/// not that of the entry the offset resolves to.
pub(crate) fn call(
    entry: EntryPoint,
    captures: &[u8],
    inputs: Vec<ErasedPartition>,
) -> Result<ErasedPartition, TaskError> {
    if entry.offset == 0 {
        return base(entry.fingerprint, captures, inputs);
    }
    let addr = address(base).wrapping_add(entry.offset) as usize;
    // In one process (local masters, tests, Miri) `entry_point` exposed the entry's
    // provenance when it measured it (a pointer-to-integer `as` cast exposes), so the
    // pointer rebuilt here carries it. In an executor process the address is valid the
    // way a symbol from `dlsym` is: by the loader's placement of the same image.
    let ptr = std::ptr::with_exposed_provenance::<()>(addr);
    // SAFETY: `addr` must be the address of a function of type `EntryFn` in this
    // binary. Entry points are made only by `entry_point`, which takes the offset of a
    // real `trampoline::<O>` (an `EntryFn`) from `base` in the same binary image;
    // relocation (ASLR) moves the whole image, so the offset is the same in every
    // process of that binary. Tasks reach this function only from a driver of the same
    // binary: in-process for `local`, and on a cluster from a driver that proved its
    // binary's hash at registration over an authenticated connection (a forged task is
    // refused before it is decoded). Within that guarantee an offset can only be
    // *another* entry's, and every entry checks the fingerprint before it touches its
    // inputs or captures, so the wrong entry refuses instead of misreading data.
    let f = unsafe { std::mem::transmute::<*const (), EntryFn>(ptr) };
    f(entry.fingerprint, captures, inputs)
}

/// A value of the zero-sized closure type `F`, made from nothing.
///
/// Closures travel as code: the driver checks (at compile time, see the operations)
/// that `F` is zero-sized, and the executor re-creates it here.
pub(crate) fn conjure<F>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "flint: closures must not capture; use the operation's _with form"
        )
    };
    // SAFETY: `F` is zero-sized (checked above at compile time), so a value of it has
    // no bytes and no bit pattern of it can be invalid. `F` is inhabited: the driver
    // held a value of it when it made the entry point that monomorphized this call.
    // A zero-sized closure captures nothing but zero-sized values, so the value made
    // here behaves exactly as the driver's closure did.
    unsafe { std::mem::zeroed() }
}

/// Wraps a partition for an entry's inputs or output.
pub(crate) fn erase<T: 'static>(p: Partition<T>) -> ErasedPartition {
    Box::new(p)
}

/// Unwraps a partition, or says which type was expected.
pub(crate) fn unerase<T: 'static>(e: ErasedPartition) -> Result<Partition<T>, TaskError> {
    e.downcast::<Partition<T>>().map(|b| *b).map_err(|_| {
        TaskError::Entry(format!(
            "an input partition is not of {}",
            std::any::type_name::<T>()
        ))
    })
}

/// The single input of a one-input operation.
pub(crate) fn single<T: 'static>(
    mut inputs: Vec<ErasedPartition>,
) -> Result<Partition<T>, TaskError> {
    if inputs.len() != 1 {
        return Err(TaskError::Entry(format!(
            "expected one input partition, got {}",
            inputs.len()
        )));
    }
    match inputs.pop() {
        Some(p) => unerase(p),
        None => Err(TaskError::Entry("no input partition".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::marker::PhantomData;

    struct Double<T>(PhantomData<T>);
    impl Op for Double<u64> {
        fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
            let it = single::<u64>(inputs)?;
            Ok(erase::<u64>(it.mapped(|x| x * 2)))
        }
    }
    impl Op for Double<String> {
        fn run(_: &[u8], inputs: Vec<ErasedPartition>) -> Result<ErasedPartition, TaskError> {
            let it = single::<String>(inputs)?;
            Ok(erase::<String>(it.mapped(|s| s.repeat(2))))
        }
    }

    fn input(v: Vec<u64>) -> Vec<ErasedPartition> {
        vec![erase::<u64>(Partition::new(v.into_iter()))]
    }

    #[test]
    fn an_entry_point_round_trips_through_serialization_and_runs() {
        let ep = entry_point::<Double<u64>>();
        assert_ne!(ep.offset, 0);
        let bytes = postcard::to_allocvec(&ep).unwrap();
        let back: EntryPoint = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, ep);
        let out = call(back, &[], input(vec![1, 2, 3])).unwrap();
        let got: Vec<u64> = unerase::<u64>(out).unwrap().collect();
        assert_eq!(got, vec![2, 4, 6]);
    }

    #[test]
    fn a_tampered_fingerprint_is_refused() {
        let mut ep = entry_point::<Double<u64>>();
        ep.fingerprint ^= 1;
        let e = call(ep, &[], input(vec![1])).err().unwrap();
        assert!(e.to_string().contains("entry point refused"), "{e}");
        assert!(e.to_string().contains("Double<u64>"), "{e}");
    }

    #[test]
    fn an_offset_of_another_entry_is_refused_by_that_entry() {
        let wanted = entry_point::<Double<u64>>();
        let other = entry_point::<Double<String>>();
        assert_ne!(wanted.offset, other.offset);
        assert_ne!(wanted.fingerprint, other.fingerprint);
        // The offset of the String entry with the u64 fingerprint: the String entry
        // runs its check and refuses before it looks at the u64 input.
        let forged = EntryPoint {
            offset: other.offset,
            fingerprint: wanted.fingerprint,
        };
        let e = call(forged, &[], input(vec![1])).err().unwrap();
        assert!(
            e.to_string().contains("Double<alloc::string::String>"),
            "{e}"
        );
    }

    #[test]
    fn the_base_offset_runs_nothing_and_a_wrong_input_type_is_an_error() {
        let e = call(
            EntryPoint {
                offset: 0,
                fingerprint: 7,
            },
            &[],
            vec![],
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("base function"), "{e}");
        let ep = entry_point::<Double<String>>();
        let e = call(ep, &[], input(vec![1])).err().unwrap();
        assert!(
            e.to_string().contains("not of alloc::string::String"),
            "{e}"
        );
    }

    #[test]
    fn the_hash_is_fnv_1a_exactly() {
        // Published FNV-1a 64-bit test vectors.
        for (text, want) in [
            ("", 0xcbf2_9ce4_8422_2325u64),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv(0xcbf2_9ce4_8422_2325);
            h.write(text.as_bytes());
            assert_eq!(h.finish(), want, "{text:?}");
        }
    }

    #[test]
    fn closures_of_one_function_have_different_fingerprints() {
        let a = |x: u64| x + 1;
        let b = |x: u64| x + 2;
        fn fp_of<F: 'static>(_: &F) -> u64 {
            fingerprint::<F>()
        }
        assert_ne!(fp_of(&a), fp_of(&b));
        assert_eq!(fp_of(&a), fp_of(&a));
        let c: fn(u64) -> u64 = conjure_call(a);
        assert_eq!(c(1), 2);
    }

    fn conjure_call<F: Fn(u64) -> u64 + 'static>(_: F) -> fn(u64) -> u64 {
        fn run<F: Fn(u64) -> u64>(x: u64) -> u64 {
            conjure::<F>()(x)
        }
        run::<F>
    }
}
