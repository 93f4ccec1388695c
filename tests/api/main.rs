//! Black-box API tests: the real application on a random port, each test with a fresh database
//! (SQLite by default, PostgreSQL when `IPTO_TEST_DATABASE_URL` is set).

mod accounts;
mod api_keys;
mod audit;
mod cli;
mod conventions;
mod crash;
mod datasets;
mod helpers;
mod limits;
mod metering;
mod money;
mod objects;
mod openapi;
mod projections;
mod search;
mod security;
