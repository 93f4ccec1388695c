//! Black-box API tests: the real application on a random port, each test with a fresh database
//! (SQLite by default, PostgreSQL when `IPTO_TEST_DATABASE_URL` is set).

mod accounts;
mod api_keys;
mod audit;
mod audit_live;
mod blob_integrity;
mod cli;
mod client;
mod consistency;
mod conventions;
mod crash;
mod datasets;
mod erasure;
mod exhaustion;
mod fleet;
mod hardening;
mod helpers;
mod key_limits;
mod limits;
mod mcp;
mod metering;
mod money;
mod objects;
mod openapi;
mod projections;
mod replays;
mod retrieval;
mod search;
mod security;
mod shared_limits;
mod teams;
