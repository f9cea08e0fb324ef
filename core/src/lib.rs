//! retrywatch's compiled core: the per-line path (framing, wrappers, head parse, keys,
//! window, eviction), called from Python with whole chunks of bytes.
#![forbid(unsafe_code)]

pub mod assemble;
pub mod engine;
pub mod event;
pub mod framing;
pub mod head;
pub mod pipeline;
#[cfg(feature = "python")]
mod py;
pub mod snapshot;
pub mod text;
pub mod tracker;
pub mod upstreams;
pub mod window;
pub mod wrappers;
