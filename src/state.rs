//! What every handler and background job can reach: the store, the keys, the blob store, the
//! search index and the limits, cloned into each request.

use std::sync::Arc;

use cqrs_es::Aggregate;
use tokio::sync::watch;

use crate::auth::Principal;
use crate::blobs::Blobs;
use crate::config::Config;
use crate::error::AppError;
use crate::search::Indexer;
use crate::signing::SigningKey;
use crate::store::{Committed, Store};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub key: SigningKey,
    pub blobs: Blobs,
    pub config: Arc<Config>,
    /// Wakes the background jobs.
    pub jobs: Arc<watch::Sender<u64>>,
    /// Request counters of this instance.
    pub limits: Arc<crate::ratelimit::shared::Limits>,
    /// This instance's search index and its indexer.
    pub search: Indexer,
    /// Uploads being received by this instance's `/storage` routes.
    pub uploads: Arc<crate::blobs::UploadsInFlight>,
    /// The key that signs the audit tree's heads.
    pub audit_key: Arc<crate::notary::AuditKey>,
    /// The SMTP relay that mails invitations (`IPTO_SMTP_URL`), if one is configured.
    pub mailer: Option<Arc<crate::mail::Mailer>>,
}

impl AppState {
    /// Wakes the background jobs (after a change they act on, such as a deletion).
    pub fn wake_jobs(&self) {
        self.jobs.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs `command` on aggregate `id` (one that needs no services) as `principal`.
    pub async fn run<A>(
        &self,
        id: &str,
        command: A::Command,
        principal: &Principal,
    ) -> Result<Committed<A>, AppError>
    where
        A: Aggregate<Services = ()> + 'static,
        A::Command: Clone,
        AppError: From<A::Error>,
    {
        Ok(self
            .store
            .execute::<A>(id, command, &(), &principal.actor())
            .await?)
    }
}
