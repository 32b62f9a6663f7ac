//! pixdex: a daemon that keeps an image library indexed for search.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod api;
pub mod catalog;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod decode;
pub mod duplicates;
pub mod embed;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod fault;
pub mod heap;
pub mod library;
pub mod logging;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod search;
pub mod sessions;
pub mod switch;
pub mod thumbs;
pub mod vectors;
pub mod watcher;
