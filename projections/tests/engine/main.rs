//! The projector engine and its read models against a real store, each test with a fresh database
//! (SQLite by default, PostgreSQL when `IPTO_TEST_DATABASE_URL` is set): projections fed stored
//! events write the rows they describe, a batch is applied at most once however many workers race
//! for it, and a failing handler stops at its event until the fault is fixed.

mod claims;
mod failures;
mod helpers;
mod read_models;
