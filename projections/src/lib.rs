//! The read side of ipto: the projector engine (ordered, checkpointed catch-up over the event log)
//! and every read model, each with its tables, its event handler and its queries.

pub mod accesses;
pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod datasets;
pub mod db;
pub mod engine;
pub mod log;
pub mod members;
pub mod merkle;
pub mod objects;
pub mod payouts;
pub mod privacy;
pub mod rows;
pub mod searches;

pub use db::{Db, Dialect};
pub use engine::{
    Projection, ProjectionError, ProjectionStatus, ProjectorEngine, Reads, RebuildPhase,
    RebuildProgress,
};
pub use log::{EventMetadata, LogPosition, StoredEvent};

use std::sync::Arc;

/// Every projection of the service, in the order they are reported.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(accounts::TenantsProjection),
        Arc::new(accounts::UsersProjection),
        Arc::new(members::MembersProjection),
        Arc::new(datasets::DatasetsProjection),
        Arc::new(datasets::EntitlementsProjection),
        Arc::new(objects::ObjectsProjection),
        Arc::new(api_keys::ApiKeysProjection),
        Arc::new(accesses::AccessesProjection),
        Arc::new(payouts::PayoutsProjection),
        Arc::new(searches::SearchesProjection),
        Arc::new(audit::AuditOrderProjection),
    ]
}
