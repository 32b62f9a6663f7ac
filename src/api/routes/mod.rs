//! One module per resource.

pub mod categories;
pub mod directories;
pub mod events;
pub mod images;
pub mod library;
pub mod metrics;
pub mod search;
pub mod sessions;
pub mod web;
