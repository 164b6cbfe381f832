//! [`Data`]: what elements, captures and results must be — serializable (serde),
//! cloneable and shareable across threads.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value flint can ship: elements of datasets, values of `_with` forms, results.
/// Implemented for every `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`
/// type (serde); postcard is the encoding.
///
/// ```
/// use flint::Data;
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Point { x: f64, y: f64 }
/// fn ships<T: Data>() {}
/// ships::<Point>();
/// ships::<(String, Vec<u64>)>();
/// ```
pub trait Data: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Data for T {}
