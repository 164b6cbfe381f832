//! Shared variables: [`Broadcast`] (a read-only value sent to each executor once) and
//! [`Accumulator`] (a `u64` sum tasks add to and the driver reads).
//!
//! Both travel inside captures as their id only. Decoding one inside a task looks the
//! id up in the task's context: a broadcast in the executor's broadcast cache (fetched
//! from the driver the first time), an accumulator in the task's own counters, which go
//! back to the driver with the task's result and are added there once per partition.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::executor::with_task;
use crate::Data;

/// A read-only value shipped to each executor once and kept there: `.value()` in tasks.
///
/// Made by [`Context::broadcast`](crate::Context::broadcast) and passed to a `_with`
/// operation. The driver keeps the serialized value until the context stops.
///
/// ```
/// use std::collections::HashSet;
/// use flint::prelude::*;
/// # fn main() -> flint::Result<()> {
/// let ctx = Context::builder().master("local[2]").create()?;
/// let stop = ctx.broadcast(HashSet::from(["the".to_owned()]))?;
/// let words = ctx.parallelize(vec!["the".to_owned(), "cat".to_owned()], 2);
/// let kept = words.filter_with(stop, |s, w| !s.value().contains(w)).collect()?;
/// assert_eq!(kept, vec!["cat".to_owned()]);
/// # Ok(()) }
/// ```
pub struct Broadcast<T> {
    id: u64,
    value: Arc<T>,
}

impl<T> Broadcast<T> {
    pub(crate) fn new(id: u64, value: Arc<T>) -> Self {
        Self { id, value }
    }

    /// The value.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[1]").create()?;
    /// let b = ctx.broadcast(vec![1u32, 2, 3])?;
    /// assert_eq!(b.value().len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The broadcast's id in its application.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[1]").create()?;
    /// let (a, b) = (ctx.broadcast(1u8)?, ctx.broadcast(2u8)?);
    /// assert_ne!(a.id(), b.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<T> Clone for Broadcast<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            value: self.value.clone(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Broadcast<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcast")
            .field("id", &self.id)
            .field("value", &self.value)
            .finish()
    }
}

impl<T> Serialize for Broadcast<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.id)
    }
}

impl<'de, T: Data> Deserialize<'de> for Broadcast<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = u64::deserialize(d)?;
        let value = with_task(|t| t.env.broadcasts.get::<T>(id))
            .ok_or_else(|| D::Error::custom("a Broadcast can only be decoded inside a flint task"))?
            .map_err(D::Error::custom)?;
        Ok(Self { id, value })
    }
}

/// Where an executor fetches a broadcast's serialized value from: in `local` the
/// driver's own store, on a cluster an ask to the driver.
pub(crate) trait BroadcastSource: Send + Sync {
    /// The serialized value of broadcast `id`.
    fn fetch(&self, id: u64) -> Result<Arc<Vec<u8>>, String>;
}

/// The driver's serialized broadcast values, kept until the context stops.
#[derive(Default)]
pub(crate) struct BroadcastStore {
    blobs: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
}

impl BroadcastStore {
    pub fn insert(&self, id: u64, bytes: Vec<u8>) {
        if let Ok(mut m) = self.blobs.lock() {
            m.insert(id, Arc::new(bytes));
        }
    }
}

impl BroadcastSource for BroadcastStore {
    fn fetch(&self, id: u64) -> Result<Arc<Vec<u8>>, String> {
        let m = self
            .blobs
            .lock()
            .map_err(|_| "broadcast store poisoned".to_string())?;
        m.get(&id)
            .cloned()
            .ok_or_else(|| format!("broadcast {id} is not known to the driver"))
    }
}

type Decoded = Arc<dyn Any + Send + Sync>;
/// A broadcast value being fetched or fetched: decoded, or why it could not be.
type Slot = Arc<OnceLock<Result<Decoded, String>>>;

/// An executor's decoded broadcast values: each fetched and decoded once.
pub(crate) struct BroadcastCache {
    source: Arc<dyn BroadcastSource>,
    values: Mutex<HashMap<u64, Slot>>,
    fetches: AtomicU64,
}

impl BroadcastCache {
    pub fn new(source: Arc<dyn BroadcastSource>) -> Self {
        Self {
            source,
            values: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many values were fetched from the driver.
    #[cfg(test)]
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The value of broadcast `id`, fetching and decoding it the first time.
    pub fn get<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        id: u64,
    ) -> Result<Arc<T>, String> {
        let cell = {
            let mut m = self
                .values
                .lock()
                .map_err(|_| "broadcast cache poisoned".to_string())?;
            m.entry(id).or_default().clone()
        };
        let decoded = cell.get_or_init(|| {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            let bytes = self.source.fetch(id)?;
            let v: T = postcard::from_bytes(&bytes).map_err(|e| {
                format!(
                    "broadcast {id} does not decode as {}: {e}",
                    std::any::type_name::<T>()
                )
            })?;
            Ok(Arc::new(v) as Decoded)
        });
        match decoded {
            Ok(v) => v.clone().downcast::<T>().map_err(|_| {
                format!(
                    "broadcast {id} is not of type {}",
                    std::any::type_name::<T>()
                )
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

/// A `u64` sum: tasks `.add(n)`, the driver reads `.value()`.
///
/// Only the first successful attempt of each partition adds to it, so a task that is
/// re-run (after a failure or a lost executor) never counts twice within a job.
///
/// ```
/// # use flint::prelude::*;
/// # fn main() -> flint::Result<()> {
/// let ctx = Context::builder().master("local[2]").create()?;
/// let evens = ctx.accumulator("evens");
/// ctx.range(0, 100, 4).foreach_with(evens.clone(), |acc, x| if x % 2 == 0 { acc.add(1) })?;
/// assert_eq!(evens.value(), 50);
/// # Ok(()) }
/// ```
pub struct Accumulator {
    id: u64,
    name: Arc<str>,
    cell: Arc<AtomicU64>,
}

impl Accumulator {
    pub(crate) fn new(id: u64, name: &str, cell: Arc<AtomicU64>) -> Self {
        Self {
            id,
            name: name.into(),
            cell,
        }
    }

    /// Adds `n`: inside a task to the task's updates, on the driver to the total.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[1]").create()?;
    /// let a = ctx.accumulator("a");
    /// a.add(2);
    /// assert_eq!(a.value(), 2);
    /// # Ok(()) }
    /// ```
    pub fn add(&self, n: u64) {
        self.cell.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum: on the driver, of every counted task; inside a task, of this task's adds.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[1]").create()?;
    /// assert_eq!(ctx.accumulator("none").value(), 0);
    /// # Ok(()) }
    /// ```
    pub fn value(&self) -> u64 {
        self.cell.load(Ordering::Relaxed)
    }

    /// The name it was made with.
    ///
    /// ```
    /// # use flint::prelude::*;
    /// # fn main() -> flint::Result<()> {
    /// let ctx = Context::builder().master("local[1]").create()?;
    /// assert_eq!(ctx.accumulator("empty lines").name(), "empty lines");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Clone for Accumulator {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            name: self.name.clone(),
            cell: self.cell.clone(),
        }
    }
}

impl fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accumulator")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("value", &self.value())
            .finish()
    }
}

impl Serialize for Accumulator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.id, &*self.name).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Accumulator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (id, name): (u64, String) = Deserialize::deserialize(d)?;
        let cell = with_task(|t| t.accumulator(id)).ok_or_else(|| {
            D::Error::custom("an Accumulator can only be decoded inside a flint task")
        })?;
        Ok(Self::new(id, &name, cell))
    }
}
