//! The event repository with the log's personal fields sealed on the way in and opened on the
//! way out (see [`projections::privacy`]): aggregates and commands only ever see plain values,
//! the log only ever holds sealed ones.

use std::collections::BTreeSet;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use projections::privacy::{self, EventRef};
use projections::Db;
use serde_json::Value;

use crate::clock::Clock;

/// `R` with sealing.
pub struct Sealing<R> {
    inner: R,
    db: Db,
    clock: Clock,
}

impl<R> Sealing<R> {
    pub fn new(inner: R, db: Db, clock: Clock) -> Self {
        Self { inner, db, clock }
    }
}

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(error))
}

fn reference(event: &SerializedEvent) -> EventRef<'_> {
    EventRef {
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        event_type: &event.event_type,
    }
}

impl<R: PersistedEventRepository> Sealing<R> {
    /// Opens the sealed fields of `events` in place.
    async fn open(&self, events: &mut [SerializedEvent]) -> Result<(), PersistenceError> {
        let mut subjects = BTreeSet::new();
        for event in events.iter() {
            privacy::sealed_subjects(
                &event.aggregate_type,
                &event.event_type,
                &event.payload,
                &mut subjects,
            );
        }
        if subjects.is_empty() {
            return Ok(());
        }
        let keys = privacy::keys(&self.db, &subjects).await.map_err(failed)?;
        for event in events.iter_mut() {
            let mut payload = std::mem::take(&mut event.payload);
            privacy::open(reference(event), &mut payload, &keys);
            event.payload = payload;
        }
        Ok(())
    }

    /// `events` with their personal fields sealed for their subjects (keys created as needed).
    async fn seal(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let subjects: Vec<Option<String>> = events
            .iter()
            .map(|event| {
                let actor = event.metadata.get("actor_id").and_then(Value::as_str);
                privacy::subject_of(
                    &event.aggregate_type,
                    &event.aggregate_id,
                    &event.event_type,
                    &event.payload,
                    actor.unwrap_or_default(),
                )
            })
            .collect();
        let wanted: BTreeSet<String> = subjects.iter().flatten().cloned().collect();
        let mut sealed = events.to_vec();
        if wanted.is_empty() {
            return Ok(sealed);
        }
        let now = aggregates::timestamp::format(self.clock.now());
        let keys = privacy::ensure_keys(&self.db, &wanted, &now)
            .await
            .map_err(failed)?;
        for (event, subject) in sealed.iter_mut().zip(&subjects) {
            if let Some(subject) = subject {
                let mut payload = std::mem::take(&mut event.payload);
                privacy::seal(reference(event), &mut payload, subject, &keys).map_err(failed)?;
                event.payload = payload;
            }
        }
        Ok(sealed)
    }
}

impl<R: PersistedEventRepository> PersistedEventRepository for Sealing<R> {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut events = self.inner.get_events::<A>(aggregate_id).await?;
        self.open(&mut events).await?;
        Ok(events)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut events = self
            .inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?;
        self.open(&mut events).await?;
        Ok(events)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let sealed = self.seal(events).await?;
        self.inner.persist::<A>(&sealed, snapshot_update).await
    }

    /// As stored (sealed): replays are the projections' path, which opens on its own.
    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}
