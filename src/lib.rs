//! ipto: the backend of a marketplace for private data, as an event-sourced CQRS service.
//!
//! Every change is a command on an aggregate (crate `aggregates`) appended to one log; every read
//! model is a projection of that log (crate `projections`). This crate holds configuration,
//! start-up, the HTTP API, credentials and the operator CLI.

pub mod accounts;
pub mod app;
pub mod audit;
pub mod auth;
pub mod blobs;
pub mod charges;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod history;
pub mod http;
pub mod idempotency;
pub mod jobs;
pub mod mail;
pub mod market;
pub mod metrics;
pub mod notary;
pub mod openapi;
pub mod ratelimit;
pub mod request;
pub mod search;
pub mod server;
pub mod signing;
pub mod state;
pub mod store;
pub mod teams;
pub mod verify;

pub use app::Application;
pub use config::{Cli, Command, Config};
pub use state::AppState;
