//! The claim rule: a batch is claimed by moving the checkpoint it was read after, in the
//! transaction that applies it, so it is applied once however many workers, instances and
//! catch-ups race for it, and a restart resumes after the stored checkpoint.

use std::sync::Arc;

use projections::ProjectorEngine;

use crate::helpers::{as_projection, positions, start, Store, Tally};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_racing_for_the_same_projection_apply_each_event_once() {
    let store = Store::fresh().await;
    Tally::create_table(&store.db).await;
    let tally = Arc::new(Tally::default());
    // One instance's live worker, and three other instances catching up by hand at the same time
    // (as `ipto projections rebuild` does), each on a pool of its own.
    let live = start(ProjectorEngine::new(
        store.db.clone(),
        vec![as_projection(&tally)],
    ))
    .await;
    let mut others = Vec::new();
    for _ in 0..3 {
        let db = store.another_handle().await;
        others.push(ProjectorEngine::new(db, vec![as_projection(&tally)]));
    }
    let mut appended = Vec::new();
    for round in 0..8 {
        for n in 0..5 {
            appended.push(store.append_tally(&format!("t-{round}-{n}")).await);
        }
        live.engine.notify();
        let counts =
            futures::future::join_all(others.iter().map(|e| e.catch_up(tally.as_ref()))).await;
        for count in counts {
            // Each catch-up ends with the checkpoint past every event, counted once.
            assert_eq!(count.unwrap(), appended.len() as u64);
        }
    }
    live.settle().await;
    assert_eq!(Tally::rows(&store.db).await, positions(&appended));
    let status = &live.engine.statuses().await.unwrap()[0];
    assert_eq!(status.events_applied, appended.len() as i64);
    assert_eq!(status.cursor, *appended.last().unwrap());
    live.stop().await;
    store.finish().await;
}

#[tokio::test]
async fn a_restarted_instance_resumes_after_its_checkpoint_without_applying_anything_twice() {
    let store = Store::fresh().await;
    Tally::create_table(&store.db).await;
    let tally = Arc::new(Tally::default());
    let first = start(ProjectorEngine::new(
        store.db.clone(),
        vec![as_projection(&tally)],
    ))
    .await;
    let mut appended = Vec::new();
    for n in 0..10 {
        appended.push(store.append_tally(&format!("before-{n}")).await);
    }
    first.settle().await;
    first.stop().await;
    assert_eq!(Tally::rows(&store.db).await, positions(&appended));

    // Events appended while no worker runs are applied by the next instance, and only those.
    for n in 0..5 {
        appended.push(store.append_tally(&format!("between-{n}")).await);
    }
    let engine = ProjectorEngine::new(store.another_handle().await, vec![as_projection(&tally)]);
    let second = start(engine.clone()).await;
    second.settle().await;
    second.stop().await;
    assert_eq!(Tally::rows(&store.db).await, positions(&appended));

    // A catch-up over a checkpoint at the end of the log applies nothing.
    assert_eq!(engine.catch_up(tally.as_ref()).await.unwrap(), 15);
    assert_eq!(Tally::rows(&store.db).await, positions(&appended));
    store.finish().await;
}
