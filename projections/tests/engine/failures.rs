//! A failing handler stops its projection at the failing event: the checkpoint stays before it,
//! later events are not applied, the status says where and why, and once the fault is fixed the
//! projection resumes from that event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use projections::engine::RebuildError;
use projections::{ProjectionStatus, ProjectorEngine};

use crate::helpers::{as_projection, positions, start, Running, Store, Tally};

/// Waits (bounded) until the engine reports its only projection failed.
async fn failed(running: &Running) -> ProjectionStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = running.engine.statuses().await.unwrap().remove(0);
        if status.state() == "failed" {
            return status;
        }
        assert!(Instant::now() < deadline, "no failure reported: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_handler_stops_at_its_event_and_resumes_from_it_once_fixed() {
    let store = Store::fresh().await;
    Tally::create_table(&store.db).await;
    let tally = Arc::new(Tally::default());
    tally.poison("poison");
    let running = start(ProjectorEngine::new(
        store.db.clone(),
        vec![as_projection(&tally)],
    ))
    .await;
    let before = vec![
        store.append_tally("first").await,
        store.append_tally("second").await,
    ];
    running.settle().await;
    assert_eq!(Tally::rows(&store.db).await, positions(&before));

    let poison = store.append_tally("poison").await;
    running.engine.notify();
    let mut after = vec![store.append_tally("third").await];
    running.engine.notify();
    let status = failed(&running).await;
    assert_eq!(status.failed_position, Some(poison.position));
    assert_eq!(
        status.cursor, before[1],
        "the checkpoint stays before the event"
    );
    assert_eq!(status.events_applied, 2);
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or("")
            .contains("poisoned event"),
        "the handler's error is reported: {status:?}"
    );
    // Nothing after the failing event is applied, however long the log grows.
    after.push(store.append_tally("fourth").await);
    running.engine.notify();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(Tally::rows(&store.db).await, positions(&before));
    match running.engine.catch_up(tally.as_ref()).await {
        Err(RebuildError::Failed(stopped)) => assert_eq!(stopped, status),
        other => panic!("a catch-up went past the failure: {other:?}"),
    }
    running.stop().await;

    // The fix ships: the next start retries from the failing event, and applies each event once.
    tally.heal();
    let running = start(ProjectorEngine::new(
        store.another_handle().await,
        vec![as_projection(&tally)],
    ))
    .await;
    running.settle().await;
    let all: Vec<_> = before
        .iter()
        .chain([&poison])
        .chain(&after)
        .copied()
        .collect();
    assert_eq!(Tally::rows(&store.db).await, positions(&all));
    let status = running.engine.statuses().await.unwrap().remove(0);
    assert_eq!(status.state(), "ok");
    assert_eq!(status.failed_position, None);
    assert_eq!(status.cursor, *after.last().unwrap());
    assert_eq!(status.events_applied, 5);
    running.stop().await;
    store.finish().await;
}
