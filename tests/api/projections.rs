//! The projector engine against the real log: read models equal a fold of the log under random
//! interleavings, no event skipped or applied twice with a slow committer, failures stop a
//! projection, and a version change rebuilds it.

use std::collections::BTreeMap;
use std::time::Duration;

use aggregates::email_reservation::{EmailReservationCommand, Signup};
use aggregates::user::{UserCommand, UserEvent};
use aggregates::{DisplayName, Email, EmailReservation, TenantId, TenantName, User, UserId};
use ipto::store::{Actor, CommandError, Store};
use projections::log::{self, LogPosition};
use proptest::prelude::*;

use crate::helpers::*;

/// Registers an account through the aggregates (no password: these tests do not log in).
async fn register(store: &Store, n: usize) -> String {
    let signup = Signup {
        email: Email::parse(&format!(
            "fold-{n}-{}@example.com",
            uuid::Uuid::new_v4().simple()
        ))
        .unwrap(),
        user_id: UserId::generate(),
        tenant_id: TenantId::generate(),
        display_name: DisplayName::parse(&format!("User {n}")).unwrap(),
        tenant_name: TenantName::parse(&format!("Tenant {n}")).unwrap(),
    };
    let actor = Actor::system();
    store
        .execute::<EmailReservation>(
            signup.email.as_str(),
            EmailReservationCommand::Reserve(signup.clone()),
            &(),
            &actor,
        )
        .await
        .unwrap();
    ipto::accounts::complete_signup(store, &signup, &actor)
        .await
        .unwrap();
    signup.user_id.to_string()
}

fn erased_field(field: &str, subject: &str) -> String {
    projections::privacy::erased(field, subject)
}

/// The users and tenants read models as a fold of the whole log would have them.
async fn fold_of_the_log(store: &Store) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut tenants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cursor = LogPosition::default();
    loop {
        let batch = log::read_after(&store.db, cursor, 500).await.unwrap();
        let Some(last) = batch.last() else { break };
        cursor = last.cursor;
        for event in &batch {
            let at = event.metadata.occurred_at.clone();
            match event.aggregate_type.as_str() {
                "tenant" => {
                    if let aggregates::tenant::TenantEvent::TenantCreated {
                        tenant_id, name, ..
                    } = event.decode().unwrap()
                    {
                        tenants.insert(
                            tenant_id.to_string(),
                            vec![tenant_id.to_string(), name.to_string(), at],
                        );
                    }
                }
                "user" => match event.decode::<UserEvent>().unwrap() {
                    UserEvent::UserRegistered(p) => {
                        let roles: Vec<_> = p.roles.iter().map(|r| r.as_str()).collect();
                        users.insert(
                            p.user_id.to_string(),
                            vec![
                                p.user_id.to_string(),
                                p.tenant_id.to_string(),
                                p.email.to_string(),
                                p.display_name.to_string(),
                                roles.join(","),
                                "0".into(),
                                "0".into(),
                                "NULL".into(),
                                "NULL".into(),
                                at,
                            ],
                        );
                    }
                    UserEvent::UserLoggedIn {} => {
                        let row = users.get_mut(&event.aggregate_id).unwrap();
                        row[6] = (row[6].parse::<i64>().unwrap() + 1).to_string();
                        row[7] = at;
                    }
                    UserEvent::PasswordChanged {} => {
                        users.get_mut(&event.aggregate_id).unwrap()[8] = at
                    }
                    UserEvent::PlatformAdminGranted {} => {
                        users.get_mut(&event.aggregate_id).unwrap()[5] = "1".into()
                    }
                    UserEvent::UserErased { .. } => {
                        let row = users.get_mut(&event.aggregate_id).unwrap();
                        row[2] = erased_field("email", &event.aggregate_id);
                        row[3] = erased_field("display_name", &event.aggregate_id);
                    }
                    UserEvent::UserLoggedOut {} => {}
                },
                "login" => {
                    if let aggregates::login::LoginEvent::LoggedIn { user_id } =
                        event.decode().unwrap()
                    {
                        let row = users.get_mut(user_id.as_str()).unwrap();
                        row[6] = (row[6].parse::<i64>().unwrap() + 1).to_string();
                        row[7] = at;
                    }
                }
                _ => {}
            }
        }
    }
    (
        users.into_values().collect(),
        tenants.into_values().collect(),
    )
}

const USERS_SQL: &str =
    "SELECT user_id, tenant_id, email, display_name, roles, is_platform_admin, login_count, \
     last_login_at, password_changed_at, created_at FROM users ORDER BY user_id";
const TENANTS_SQL: &str = "SELECT tenant_id, name, created_at FROM tenants ORDER BY tenant_id";

async fn assert_read_models_equal_the_fold(app: &TestApp) {
    settled(&app.state).await;
    let (users, tenants) = fold_of_the_log(&app.state.store).await;
    assert_eq!(table(&app.state, USERS_SQL).await, users);
    assert_eq!(table(&app.state, TENANTS_SQL).await, tenants);
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&app.state.store.db.pool)
        .await
        .unwrap();
    for status in app.state.store.engine.statuses().await.unwrap() {
        assert_eq!(status.events_applied, count, "{status:?}");
        assert!(status.error.is_none(), "{status:?}");
    }
}

/// Runs one of the commands the interleavings draw from on `user`: a login (its own aggregate,
/// counted on the user's row), a password change or a platform-admin grant (the user's own). A
/// lost optimistic lock is an outcome too; any other failure is not.
async fn command(store: &Store, user: &str, kind: u8) -> Result<(), String> {
    let user_command = match kind {
        0 | 1 => {
            let open = aggregates::login::LoginCommand::Open {
                user_id: UserId::parse(user).unwrap(),
            };
            let login = aggregates::LoginId::generate();
            return match store
                .execute::<aggregates::Login>(login.as_str(), open, &(), &Actor::system())
                .await
            {
                Ok(_) | Err(CommandError::Conflict) => Ok(()),
                Err(other) => Err(other.to_string()),
            };
        }
        2 => UserCommand::RecordPasswordChange,
        _ => UserCommand::GrantPlatformAdmin,
    };
    match store
        .execute::<User>(user, user_command, &(), &Actor::system())
        .await
    {
        Ok(_) | Err(CommandError::Conflict) => Ok(()),
        Err(other) => Err(other.to_string()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn read_models_equal_a_fold_of_the_log_under_random_interleavings(
        users in 1usize..6,
        ops in prop::collection::vec((0usize..6, 0u8..4), 1..60),
        width in 1usize..10,
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let app = spawn_app().await;
            let store = app.state.store.clone();
            let mut ids = Vec::new();
            for n in 0..users {
                ids.push(register(&store, n).await);
            }
            for chunk in ops.chunks(width) {
                let runs = chunk.iter().map(|(user, kind)| {
                    let store = store.clone();
                    let id = ids[user % ids.len()].clone();
                    async move { command(&store, &id, *kind).await }
                });
                for outcome in futures::future::join_all(runs).await {
                    if let Err(error) = outcome {
                        panic!("command failed: {error}");
                    }
                }
            }
            assert_read_models_equal_the_fold(&app).await;
            app.finish().await;
        });
    }
}

#[tokio::test]
async fn no_event_is_skipped_or_applied_twice_with_a_slow_committer() {
    if !on_postgres() {
        return; // SQLite has one writer: commit order is position order.
    }
    use sqlx::Connection;
    let app = spawn_app().await;
    let store = app.state.store.clone();
    let slow_user = register(&store, 0).await;
    let busy: Vec<String> = [register(&store, 1).await, register(&store, 2).await].into();
    settled(&app.state).await;

    // A transaction appends an event, then holds its commit while others commit after it.
    let url = app.config.database_url.clone().unwrap();
    let mut slow = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut tx = slow.begin().await.unwrap();
    let next: i64 = sqlx::query_scalar(
        "SELECT MAX(sequence) + 1 FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(&slow_user)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('user', $1, $2, 'UserLoggedIn', '1.0', '{\"UserLoggedIn\":{}}', $3)",
    )
    .bind(&slow_user)
    .bind(next)
    .bind(serde_json::json!({"actor_type": "system", "actor_id": "system", "occurred_at": "2026-01-01T00:00:00.000000Z"}))
    .execute(&mut *tx)
    .await
    .unwrap();

    let writers = (0..40).map(|i| {
        let store = store.clone();
        let id = busy[i % 2].clone();
        async move {
            store
                .execute::<User>(
                    &id,
                    UserCommand::RecordPasswordChange,
                    &(),
                    &Actor::system(),
                )
                .await
        }
    });
    let results = futures::future::join_all(writers).await;
    let committed = results.iter().filter(|r| r.is_ok()).count();
    assert!(committed > 0);

    // The workers must wait for the slow transaction rather than read past it: every login
    // committed after it began is held back until it commits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held_back = table(
        &app.state,
        "SELECT CAST(SUM(login_count) AS BIGINT) FROM users",
    )
    .await;
    assert_eq!(
        held_back[0][0], "0",
        "events after an uncommitted one were applied"
    );
    tx.commit().await.unwrap();
    store.engine.notify();

    assert_read_models_equal_the_fold(&app).await;
    let logins = table(
        &app.state,
        &format!("SELECT login_count FROM users WHERE user_id = '{slow_user}'"),
    )
    .await;
    assert_eq!(logins[0][0], "1");
    app.finish().await;
}

#[tokio::test]
async fn a_failing_handler_stops_its_projection_at_the_event_and_is_reported() {
    let app = spawn_app().await;
    let store = app.state.store.clone();
    let user = register(&store, 0).await;
    settled(&app.state).await;
    // An event the users projection cannot apply: a login for a user it has never seen.
    let ghost = UserId::generate().to_string();
    let cast = if on_postgres() { "::jsonb" } else { "" };
    sqlx::query(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('user', $1, 1, 'UserLoggedIn', '1.0', $2{cast}, $3{cast})"
    ))
    .bind(&ghost)
    .bind(r#"{"UserLoggedIn":{}}"#)
    .bind(r#"{"actor_type":"system","actor_id":"system","occurred_at":"2026-01-01T00:00:00.000000Z"}"#)
    .execute(&store.db.pool)
    .await
    .unwrap();
    store.engine.notify();
    // Later events are not applied past the failure.
    store
        .execute::<User>(
            &user,
            UserCommand::RecordPasswordChange,
            &(),
            &Actor::system(),
        )
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let reply = app.get("/health", None).await.expect(200);
        if reply.data()["projections"]["users"]["state"] == "failed" {
            break reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure reported: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health.data()["status"], "degraded");
    let failed_at = health.data()["projections"]["users"]["failed_position"]
        .as_i64()
        .unwrap();
    let ghost_position: i64 =
        sqlx::query_scalar("SELECT global_position FROM events WHERE aggregate_id = $1")
            .bind(&ghost)
            .fetch_one(&store.db.pool)
            .await
            .unwrap();
    assert_eq!(failed_at, ghost_position);
    assert_eq!(health.data()["projections"]["tenants"]["state"], "ok");
    let logins = table(
        &app.state,
        &format!("SELECT login_count FROM users WHERE user_id = '{user}'"),
    )
    .await;
    assert_eq!(logins[0][0], "0", "an event after the failure was applied");
    let config = app.config.clone();
    app.stop().await;

    // After a restart it tries again, and still does not skip.
    let app = spawn_with(config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app.get("/health", None).await.expect(200);
        let users = &reply.data()["projections"]["users"];
        assert!(
            users["position"].as_i64().unwrap() < ghost_position,
            "the failing event was skipped: {}",
            reply.body
        );
        if users["state"] == "failed" {
            assert_eq!(users["failed_position"], ghost_position);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure after the restart: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.finish().await;
}

#[tokio::test]
async fn a_changed_projection_version_rebuilds_it_at_start_up() {
    let app = spawn_app().await;
    let store = app.state.store.clone();
    for n in 0..3 {
        register(&store, n).await;
    }
    settled(&app.state).await;
    let config = app.config.clone();
    let live = table(&app.state, USERS_SQL).await;
    app.stop().await;

    let (store, _) = ipto::app::open_store(&config).await.unwrap();
    sqlx::query("UPDATE users SET display_name = 'tampered'")
        .execute(&store.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE projection_checkpoints SET version = 0 WHERE name = 'users'")
        .execute(&store.db.pool)
        .await
        .unwrap();
    store.close().await;

    // The new version is rebuilt behind the previous one, which serves meanwhile (here the
    // tampered rows: never an empty or partial table), and then switched in.
    let app = spawn_with(config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !app.state.store.engine.rebuilding().is_empty() {
        assert_eq!(table(&app.state, USERS_SQL).await.len(), live.len());
        assert!(
            std::time::Instant::now() < deadline,
            "the new version never went live"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    settled(&app.state).await;
    assert_eq!(table(&app.state, USERS_SQL).await, live);
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = 'users'")
            .fetch_one(&app.state.store.db.pool)
            .await
            .unwrap();
    assert!(version > 0, "the checkpoint carries the new version");
    // Users keep being applied by the new version's worker.
    register(&app.state.store, 9).await;
    settled(&app.state).await;
    assert_eq!(table(&app.state, USERS_SQL).await.len(), live.len() + 1);
    app.finish().await;
}

#[tokio::test]
async fn two_instances_on_one_database_apply_every_event_exactly_once() {
    let first = spawn_app().await;
    let mut config = first.config.clone();
    config.index_dir = Some(config.data_dir.join("second-index"));
    let second = spawn_with(config).await;
    for n in 0..4 {
        let app = if n % 2 == 0 { &first } else { &second };
        app.signup(&email()).await;
    }
    let stores = [first.state.store.clone(), second.state.store.clone()];
    let ids: Vec<String> = table(&first.state, "SELECT user_id FROM users")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let writes = (0..40).map(|i| {
        let store = stores[i % 2].clone();
        let id = ids[i % ids.len()].clone();
        async move {
            store
                .execute::<User>(
                    &id,
                    UserCommand::RecordPasswordChange,
                    &(),
                    &Actor::system(),
                )
                .await
        }
    });
    for outcome in futures::future::join_all(writes).await {
        match outcome {
            Ok(_) | Err(CommandError::Conflict) => {}
            Err(other) => panic!("command failed: {other}"),
        }
    }
    assert_read_models_equal_the_fold(&first).await;
    assert_read_models_equal_the_fold(&second).await;
    second.stop().await;
    first.finish().await;
}

#[tokio::test]
async fn every_event_carries_its_metadata() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/v1/auth/signup",
            None,
            serde_json::json!({"email": email(), "password": PASSWORD, "display_name": "M", "tenant_name": "M"}),
        )
        .await
        .expect(201);
    let request_id = reply.body["request_id"].as_str().unwrap().to_owned();
    let user_id = reply.data()["user_id"].as_str().unwrap().to_owned();
    let tenant_id = reply.data()["tenant_id"].as_str().unwrap().to_owned();
    settled(&app.state).await;
    let events = log::read_after(&app.state.store.db, LogPosition::default(), 100)
        .await
        .unwrap();
    let reserved = events
        .iter()
        .find(|e| e.event_type == "EmailReserved")
        .unwrap();
    assert_eq!(reserved.metadata.actor_type, "user");
    assert_eq!(reserved.metadata.actor_id, user_id);
    assert_eq!(
        reserved.metadata.tenant_id.as_deref(),
        Some(tenant_id.as_str())
    );
    assert_eq!(
        reserved.metadata.request_id.as_deref(),
        Some(request_id.as_str())
    );
    for event in &events {
        assert!(
            aggregates::timestamp::parse(&event.metadata.occurred_at).is_some(),
            "{event:?}"
        );
        assert!(!event.metadata.actor_id.is_empty() && !event.metadata.actor_type.is_empty());
    }
    app.finish().await;
}

#[tokio::test]
async fn racing_commands_on_one_aggregate_never_lose_an_update() {
    let app = spawn_app().await;
    let store = app.state.store.clone();
    let user = register(&store, 0).await;
    let races = (0..30).map(|_| {
        let store = store.clone();
        let user = user.clone();
        async move {
            store
                .execute::<User>(
                    &user,
                    UserCommand::RecordPasswordChange,
                    &(),
                    &Actor::system(),
                )
                .await
        }
    });
    let outcomes = futures::future::join_all(races).await;
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Ok(_) | Err(CommandError::Conflict)),
            "{:?}",
            outcome.as_ref().err()
        );
    }
    // Every acknowledged command is in the log exactly once; a refused one left nothing.
    let logged = table(
        &app.state,
        &format!("SELECT COUNT(*) FROM events WHERE aggregate_id = '{user}' AND event_type = 'PasswordChanged'"),
    )
    .await;
    assert_eq!(logged[0][0], succeeded.to_string());
    assert!(
        succeeded >= 4,
        "retries should let most racers through, got {succeeded}"
    );
    let sequences = table(
        &app.state,
        &format!("SELECT sequence FROM events WHERE aggregate_id = '{user}' ORDER BY sequence"),
    )
    .await;
    let expected: Vec<Vec<String>> = (1..=sequences.len()).map(|n| vec![n.to_string()]).collect();
    assert_eq!(sequences, expected, "sequences must be gapless");
    assert_read_models_equal_the_fold(&app).await;
    app.finish().await;
}

/// A projection that reads user events and remembers the aggregate types it was handed.
struct UserReader {
    seen: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl projections::Projection for UserReader {
    fn name(&self) -> &'static str {
        "user_reader"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    fn reads(&self) -> projections::Reads {
        projections::Reads::Aggregates(&["user"])
    }
    async fn apply(
        &self,
        _: &mut sqlx::AnyConnection,
        event: &projections::StoredEvent,
    ) -> Result<(), projections::ProjectionError> {
        self.seen.lock().unwrap().push(event.aggregate_type.clone());
        Ok(())
    }
}

/// A projection that reads tenant events, registered without a worker: it never moves.
struct StalledTenantReader;

#[async_trait::async_trait]
impl projections::Projection for StalledTenantReader {
    fn name(&self) -> &'static str {
        "stalled_tenant_reader"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    fn reads(&self) -> projections::Reads {
        projections::Reads::Aggregates(&["tenant"])
    }
    async fn apply(
        &self,
        _: &mut sqlx::AnyConnection,
        _: &projections::StoredEvent,
    ) -> Result<(), projections::ProjectionError> {
        Ok(())
    }
}

async fn append_raw(db: &projections::Db, aggregate_type: &str) -> LogPosition {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let cast = if on_postgres() { "::jsonb" } else { "" };
    sqlx::query(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ($1, $2, 1, 'Happened', '1.0', $3{cast}, $4{cast})"
    ))
    .bind(aggregate_type)
    .bind(&id)
    .bind(r#"{"Happened":{}}"#)
    .bind(r#"{"actor_type":"system","actor_id":"system","occurred_at":"2026-01-01T00:00:00.000000Z"}"#)
    .execute(&db.pool)
    .await
    .unwrap();
    let tail = log::tail(db).await.unwrap().unwrap();
    assert!(tail.position > 0);
    tail
}

#[tokio::test]
async fn projections_see_only_what_they_read_and_waits_only_for_those_that_read_it() {
    use std::sync::Arc;
    let fresh = fresh().await;
    let (events, db) = ipto::store::connect(&fresh.database_url).await.unwrap();
    ipto::store::migrate(&events).await.unwrap();
    let reader = Arc::new(UserReader {
        seen: Default::default(),
    });
    let engine = projections::ProjectorEngine::new(db.clone(), vec![reader.clone()]);
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut workers = engine.start(shutdown_rx).await.unwrap();
    // Registered after the start: no worker ever applies anything to it.
    engine.register(Arc::new(StalledTenantReader));
    engine.prepare().await.unwrap();

    append_raw(&db, "tenant").await;
    let user = append_raw(&db, "user").await;
    let last = append_raw(&db, "tenant").await;
    engine.notify();

    // A wait for what a user event changes does not wait for the stalled tenant reader …
    assert!(
        engine
            .wait_for(user, Some(&["user"]), Duration::from_secs(10))
            .await
    );
    // … but a wait for tenant events, or for everything, does.
    assert!(
        !engine
            .wait_for(user, Some(&["tenant"]), Duration::from_millis(300))
            .await
    );
    assert!(
        !engine
            .wait_for(user, None, Duration::from_millis(300))
            .await
    );
    // The reader was handed the user event only, and still passed the tenant events: at once as
    // this instance reports it, and in the stored checkpoint after an idle second.
    assert!(
        engine
            .wait_for(last, Some(&["user"]), Duration::from_secs(10))
            .await
    );
    assert_eq!(*reader.seen.lock().unwrap(), vec!["user".to_owned()]);
    let status = engine
        .statuses()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == "user_reader")
        .unwrap();
    assert_eq!((status.cursor, status.events_applied), (last, 3));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored: (i64, i64) = sqlx::query_as(
            "SELECT cursor_position, events_applied FROM projection_checkpoints WHERE name = 'user_reader'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if stored == (last.position, 3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stored checkpoint {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.send(true).unwrap();
    while workers.join_next().await.is_some() {}
    engine.shut_down().await;
    db.pool.close().await;
    drop_database(&fresh.database_url).await;
}
