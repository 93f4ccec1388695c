//! Where each projection stands: its stored [`ProjectionStatus`], the progress workers publish in
//! process, and the bounded wait for read-your-writes.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use tokio::time::Instant;

use super::worker::Lead;
use super::{highest, ProjectorEngine};
use crate::log::{LogPosition, StoredEvent};

/// A projection's state as stored with its checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Highest global position applied.
    pub position: i64,
    /// Where the next batch starts.
    pub cursor: LogPosition,
    /// Events applied since the last reset; equals the number of events read.
    pub events_applied: i64,
    /// The position of the event the projection stopped at, if its handler failed.
    pub failed_position: Option<i64>,
    /// The handler's error, if it failed.
    pub error: Option<String>,
}

impl ProjectionStatus {
    /// The checkpoint once `events` (and the skipped `lead` before them) are applied.
    pub(super) fn past(&self, events: &[StoredEvent], lead: Option<&Lead>) -> ProjectionStatus {
        let (skipped, skipped_highest) = lead.map_or((0, 0), |l| (l.events, l.highest));
        ProjectionStatus {
            cursor: events.last().map_or(self.cursor, |e| e.cursor),
            position: self.position.max(highest(events)).max(skipped_highest),
            events_applied: self.events_applied + skipped + events.len() as i64,
            ..self.clone()
        }
    }

    /// `ok` or `failed`.
    pub fn state(&self) -> &'static str {
        if self.error.is_some() {
            "failed"
        } else {
            "ok"
        }
    }
}

/// How far a projection has got, as published to waiters in this process.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Progress {
    /// The cursor it has reached.
    pub(super) cursor: LogPosition,
    /// Whether it stopped on an error.
    pub(super) failed: bool,
}

impl ProjectorEngine {
    /// Where a local read model has got to, and whether it stopped on an error.
    pub fn report_local(&self, name: &'static str, cursor: LogPosition, failed: bool) {
        self.publish(name, cursor, failed);
    }

    /// Tells waiters in this process where a projection has got to.
    pub(super) fn publish(&self, name: &'static str, cursor: LogPosition, failed: bool) {
        self.inner.progress.send_modify(|map| {
            map.insert(name, Progress { cursor, failed });
        });
    }

    /// Where this instance last saw projection `name` get to (the start if it has not seen it).
    pub fn published(&self, name: &str) -> LogPosition {
        self.inner
            .progress
            .borrow()
            .get(name)
            .map(|p| p.cursor)
            .unwrap_or_default()
    }

    /// Waits until this instance sees projection `name` get past `seen`, and returns where it got
    /// to. Workers of another instance are seen only when something refreshes the progress, so a
    /// follower of the log also polls.
    pub async fn moved_past(&self, name: &str, seen: LogPosition) -> LogPosition {
        let mut progress = self.inner.progress.subscribe();
        let moved = progress
            .wait_for(|map| map.get(name).is_some_and(|p| p.cursor > seen))
            .await
            .map(|map| map.get(name).map_or(seen, |p| p.cursor));
        match moved {
            Ok(cursor) => cursor,
            // The engine is gone (shutdown): nothing more will move.
            Err(_) => std::future::pending().await,
        }
    }

    /// Takes the progress of projections from the checkpoint table (their workers may run in
    /// another instance). A checkpoint behind what this instance saw is a worker's lead not yet
    /// stored, so progress only moves forward here; resets publish their own.
    pub(super) async fn refresh_progress(&self) -> Result<(), sqlx::Error> {
        for status in self.statuses().await? {
            if let Some(p) = self.projection(&status.name) {
                let seen = self.inner.progress.borrow().get(p.name()).map(|s| s.cursor);
                let cursor = seen.map_or(status.cursor, |seen| seen.max(status.cursor));
                self.publish(p.name(), cursor, status.error.is_some());
            }
        }
        Ok(())
    }

    /// Waits (bounded) until every projection that reads events of `aggregate_types` (`None`:
    /// every projection) has applied the event at `target`, or has failed. Returns false on
    /// timeout.
    pub async fn wait_for(
        &self,
        target: LogPosition,
        aggregate_types: Option<&[&str]>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut progress = self.inner.progress.subscribe();
        let mut awaited: Vec<&'static str> = self
            .projections()
            .iter()
            .filter(|p| p.reads().any_of(aggregate_types))
            .map(|p| p.name())
            .collect();
        awaited.extend(
            self.inner
                .locals
                .read()
                .expect("lock poisoned")
                .iter()
                .filter(|(_, reads)| reads.any_of(aggregate_types))
                .map(|(name, _)| *name),
        );
        loop {
            let reached = {
                let map = progress.borrow_and_update();
                awaited.iter().all(|name| {
                    map.get(name)
                        .is_some_and(|s| s.failed || s.cursor >= target)
                })
            };
            if reached {
                return true;
            }
            tokio::select! {
                _ = progress.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    // Workers of another instance may hold the projections: read the table.
                    let _ = self.refresh_progress().await;
                }
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Every projection's checkpoint, in report order: as stored, moved past the events a worker
    /// of this instance has read beyond it without finding any its projection reads.
    pub async fn statuses(&self) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
        let mut out = Vec::new();
        for projection in &self.projections() {
            let mut status = self.status_of(projection.name()).await?;
            let lead = self
                .inner
                .leads
                .lock()
                .expect("lock poisoned")
                .get(projection.name())
                .copied();
            if let Some(lead) = lead.filter(|l| l.base == status.cursor && status.error.is_none()) {
                status.cursor = lead.to;
                status.position = status.position.max(lead.highest);
                status.events_applied += lead.events;
            }
            out.push(status);
        }
        Ok(out)
    }

    /// A projection's checkpoint as stored; a projection without one stands at the start.
    pub(super) async fn status_of(&self, name: &str) -> Result<ProjectionStatus, sqlx::Error> {
        let mut conn = self.inner.db.pool.acquire().await?;
        Ok(checkpoint_on(&mut conn, name)
            .await?
            .unwrap_or_else(|| ProjectionStatus {
                name: name.to_owned(),
                position: 0,
                cursor: LogPosition::default(),
                events_applied: 0,
                failed_position: None,
                error: None,
            }))
    }
}

/// A projection's checkpoint as `conn` sees it (a shadow's connection sees the shadow's).
pub(super) async fn checkpoint_on(
    conn: &mut sqlx::AnyConnection,
    name: &str,
) -> Result<Option<ProjectionStatus>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT name, cursor_tx, cursor_position, position, events_applied, failed_position, error \
         FROM projection_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(ProjectionStatus {
        name: row.try_get("name")?,
        position: row.try_get("position")?,
        cursor: LogPosition {
            tx: row.try_get("cursor_tx")?,
            position: row.try_get("cursor_position")?,
        },
        events_applied: row.try_get("events_applied")?,
        failed_position: row.try_get("failed_position")?,
        error: row.try_get("error")?,
    }))
}
