//! flint's shuffle storage and transport, knowing nothing of datasets or the
//! scheduler: map tasks write sort-based output files ([`ShuffleWriter`]: one data
//! file and one index per map output, blocks checksummed and compressed, spilling
//! beyond a memory budget, committed atomically); reduce tasks decode blocks
//! ([`decode_block`]), merge them by key ([`merge_sorted`]), sort them
//! ([`ReduceSorter`]) or aggregate them ([`ReduceAggregator`]) within a budget; a
//! [`BlockServer`] serves blocks over flint-rpc bulk streams (from an executor, or from
//! the worker as the shuffle service; it also removes a shuffle on request,
//! [`remove_remote_shuffle`]) and a
//! [`BlockFetcher`] fetches them with a cap on bytes in flight, reporting
//! [`FetchFailed`] so the scheduler can re-run lost map output.
//!
//! Files: `<local_dir>/flint-shuffle/<app>/<shuffle>/<map>.data|.index` ([`layout`]).
//! Records are encoded with postcard in batches ([`codec`]).

pub mod codec;
pub mod conf;
pub mod error;
pub mod fetch;
pub mod index;
pub mod layout;
pub mod reader;
mod serial;
pub mod server;
mod sorter;
mod table;
pub mod writer;

pub use codec::BlockMeta;
pub use conf::ShuffleConf;
pub use error::{FetchFailed, ShuffleError};
pub use fetch::{BlockFetcher, FetchRequest, FetchStats, FetchedBlock, MAX_REQUESTS_IN_FLIGHT};
pub use index::{read_map_output, MapOutput};
pub use layout::{remove_app, BlockRef, Layout};
pub use reader::{
    decode_block, merge_sorted, merge_sorted_by_prefix, natural_order, read_local_blocks,
    verify_block, AggregatedRecords, BlockRecords, ReduceAggregator, ReduceSorter,
};
pub use server::{
    remove_remote_shuffle, BlockRequest, BlockServer, RemoveShuffle, ServerStats, BLOCK_SERVER,
    SHUFFLE_REMOVER,
};
pub use sorter::{hash_partition, key_hash, sort_prefix, Combiner, KeyOrdering, RecordIter};
pub use writer::{MapId, MapStatus, Partitioner, ShuffleWriter};
