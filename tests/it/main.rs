//! Integration tests: a real daemon, its real control socket, a real catalog (SQLite, and
//! PostgreSQL when `PIXDEX_TEST_POSTGRES_URL` is set).

mod harness;

mod admission;
mod browser;
mod catalog_suite;
mod clip;
mod config_sessions;
mod connections;
mod duplicates;
mod embed_model;
mod faults;
mod field;
mod pipeline;
mod safe_open;
mod scale;
mod service;
mod sessions_api;
mod watcher;
mod web_api;
