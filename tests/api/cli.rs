//! The `ipto` binary: subcommands, `projections rebuild --all` against live read models, and a
//! server killed while it writes.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_ipto");

pub(crate) fn ipto(fresh: &Fresh, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IPTO_DATA_DIR", &fresh.data_dir)
        .env("IPTO_DATABASE_URL", &fresh.database_url)
        .env("IPTO_SIGNING_KEY", "test signing key, at least 32 bytes")
        .env("IPTO_LOG", "warn")
        .env("IPTO_RATE_LIMIT_PER_MINUTE", "100000")
        .env("IPTO_AUTH_RATE_LIMIT_PER_MINUTE", "100000");
    command
}

pub(crate) fn run(fresh: &Fresh, args: &[&str]) -> Output {
    ipto(fresh, args).output().expect("ipto runs")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A server process on a free port (or, without a process, a balancer's front of several).
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) address: String,
    pub(crate) client: reqwest::Client,
}

impl Server {
    pub(crate) async fn start(fresh: &Fresh) -> Self {
        Self::start_logging(fresh, None, &[]).await
    }

    /// Starts the server with these extra environment variables.
    pub(crate) async fn start_with(fresh: &Fresh, env: &[(&str, &str)]) -> Self {
        Self::start_logging(fresh, None, env).await
    }

    /// Starts the server; with `log`, its stderr goes to that file at debug level.
    async fn start_logging(
        fresh: &Fresh,
        log: Option<&std::path::Path>,
        env: &[(&str, &str)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = ipto(fresh, &["serve"]);
        command
            .env("IPTO_BIND", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        match log {
            Some(path) => {
                command
                    .env("IPTO_LOG", "debug")
                    .stderr(std::fs::File::create(path).unwrap());
            }
            None => {
                command.stderr(Stdio::null());
            }
        }
        let child = command.spawn().unwrap();
        let server = Self {
            child: Some(child),
            address: format!("http://127.0.0.1:{port}"),
            client: http_client(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .client
            .get(format!("{}/health", server.address))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Reply, reqwest::Error> {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await?;
        Ok(reply(response).await)
    }

    /// Waits until every projection has caught up with the head.
    pub(crate) async fn settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = reply(
                self.client
                    .get(format!("{}/health", self.address))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let projections = health.data()["projections"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if !projections.is_empty() && projections.values().all(|p| p["lag"] == 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "projections did not catch up: {}",
                health.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The address of servers that run elsewhere (a balancer in front of a fleet).
    pub(crate) fn front(address: &str) -> Self {
        Self {
            child: None,
            address: address.to_owned(),
            client: http_client(),
        }
    }

    /// The server process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("a server process").id()
    }

    pub(crate) fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL: no shutdown, no drain.
            child.wait().unwrap();
        }
    }

    pub(crate) fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn signup(server: &Server, email: &str) {
    let body =
        json!({"email": email, "password": PASSWORD, "display_name": "U", "tenant_name": "T"});
    server
        .post("/v1/auth/signup", body)
        .await
        .unwrap()
        .expect(201);
}

/// Opens the store the way the CLI does, for assertions.
pub(crate) async fn open(fresh: &Fresh) -> ipto::AppState {
    let config = config(fresh);
    let (store, key) = ipto::app::open_store(&config).await.unwrap();
    let blobs = ipto::app::open_blobs(&config, &key, config.bind).unwrap();
    // An index of its own (one per call: several may be open at once); the server's, or the
    // CLI's, holds the default directory.
    let dir = fresh.data_dir.join(format!(
        "inspection-index-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let index = ipto::search::SearchIndex::open(&dir, None).unwrap();
    let search = ipto::search::Indexer::new(
        std::sync::Arc::new(index),
        store.db.clone(),
        blobs.clone(),
        store.engine.clone(),
        ipto::search::extract::PdfExtractor::from_config(&config),
    );
    ipto::AppState {
        store,
        key,
        blobs,
        config: std::sync::Arc::new(config),
        jobs: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
        limits: std::sync::Arc::default(),
        search,
        uploads: std::sync::Arc::default(),
        audit_key: std::sync::Arc::new(
            ipto::notary::AuditKey::load(None, &fresh.data_dir).unwrap(),
        ),
        mailer: None,
    }
}

const READ_MODELS: [&str; 2] = [
    "SELECT user_id, tenant_id, email, display_name, roles, is_platform_admin, login_count, last_login_at, \
     password_changed_at, created_at, updated_at FROM users ORDER BY user_id",
    "SELECT tenant_id, name, created_at FROM tenants ORDER BY tenant_id",
];

async fn read_models(state: &ipto::AppState) -> Vec<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for sql in READ_MODELS {
        out.push(table(state, sql).await);
    }
    out
}

#[tokio::test]
async fn usage_and_configuration_errors_have_their_exit_codes() {
    let fresh = fresh().await;
    assert_eq!(run(&fresh, &["frobnicate"]).status.code(), Some(2));
    let bad = ipto(&fresh, &["migrate"])
        .env("IPTO_PLATFORM_FEE_BPS", "20001")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let bad = ipto(&fresh, &["migrate"])
        .env("IPTO_DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(run(&fresh, &["migrate"]).status.success());
    assert!(
        run(&fresh, &["migrate"]).status.success(),
        "migrate is idempotent"
    );
    let unknown = run(&fresh, &["projections", "rebuild", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    for embedder in [
        "magic",
        "openai:http://127.0.0.1:9",
        "openai:ftp://host/v1#m",
    ] {
        let bad = ipto(&fresh, &["serve"])
            .env("IPTO_BIND", "127.0.0.1:0")
            .env("IPTO_EMBEDDER", embedder)
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(1), "{embedder}");
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("embedder"),
            "{embedder}: {}",
            String::from_utf8_lossy(&bad.stderr)
        );
    }
}

#[tokio::test]
async fn admin_promote_grants_once_and_refuses_unknown_emails() {
    let fresh = fresh().await;
    let server = Server::start(&fresh).await;
    signup(&server, "boss@example.com").await;
    server.stop();

    assert_eq!(
        run(&fresh, &["admin", "promote", "nobody@example.com"])
            .status
            .code(),
        Some(1)
    );
    let first = run(&fresh, &["admin", "promote", "BOSS@example.com"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = run(&fresh, &["admin", "promote", "boss@example.com"]);
    assert!(again.status.success());
    assert!(stdout(&again).contains("already"));

    let state = open(&fresh).await;
    let granted = table(
        &state,
        "SELECT COUNT(*) FROM events WHERE event_type = 'PlatformAdminGranted'",
    )
    .await;
    assert_eq!(granted[0][0], "1");
    let server = Server::start(&fresh).await;
    server.settled().await;
    let login = server
        .post(
            "/v1/auth/login",
            json!({"email": "boss@example.com", "password": PASSWORD}),
        )
        .await
        .unwrap();
    let token = login.data()["session_token"].as_str().unwrap().to_owned();
    let me = reply(
        server
            .client
            .get(format!("{}/v1/me", server.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me.data()["is_platform_admin"], true);
    server.stop();
}

#[tokio::test]
async fn rebuild_all_gives_read_models_identical_to_the_live_ones() {
    let fresh = fresh().await;
    let server = Server::start(&fresh).await;
    for n in 0..4 {
        signup(&server, &format!("r{n}@example.com")).await;
        server
            .post(
                "/v1/auth/login",
                json!({"email": format!("r{n}@example.com"), "password": PASSWORD}),
            )
            .await
            .unwrap()
            .expect(200);
    }
    // One is erased: a rebuild must read the destroyed key's fields as erased, as live did.
    let erased = run(&fresh, &["admin", "erase", "r0@example.com"]);
    assert!(
        erased.status.success(),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
    server.settled().await;
    let state = open(&fresh).await;
    let live = read_models(&state).await;
    assert!(
        live.iter()
            .flatten()
            .flatten()
            .any(|c| c.contains("@erased.invalid")),
        "the erasure reached the read models"
    );
    assert_eq!(live[0].len(), 4);

    let output = run(&fresh, &["projections", "rebuild", "--all"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout(&output).contains("events/s"));
    assert_eq!(read_models(&state).await, live);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("requested a rebuild of search"),
        "a running server rebuilds its own index: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The index belongs to the running server: it is asked to rebuild it.
    let asked = run(&fresh, &["projections", "rebuild", "search"]);
    assert!(asked.status.success());
    assert!(String::from_utf8_lossy(&asked.stderr).contains("each running instance"));
    let statuses = run(&fresh, &["projections", "status"]);
    let text = stdout(&statuses);
    for name in ["NAME", "tenants", "users", "signup_completion", "search"] {
        assert!(text.contains(name), "{text}");
    }
    assert!(
        text.contains("audit order: ") && text.contains("not global positions"),
        "{text}"
    );
    server.stop();
}

#[tokio::test]
async fn events_export_prints_the_log_as_ndjson_in_order_without_secrets() {
    let fresh = fresh().await;
    let server = Server::start(&fresh).await;
    signup(&server, "export@example.com").await;
    server.stop();
    let output = run(&fresh, &["events", "export"]);
    assert!(output.status.success());
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The reservation, the tenant, the user, and the login of signup's session.
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["event_type"], "LoggedIn");
    let positions: Vec<i64> = lines
        .iter()
        .map(|l| l["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(lines[0]["event_type"], "EmailReserved");
    assert_eq!(lines[0]["sequence"], 1);
    assert!(lines[0]["metadata"]["actor"]
        .as_str()
        .unwrap()
        .starts_with("usr_"));
    assert!(!stdout(&output).contains(PASSWORD));
    let users = run(&fresh, &["events", "export", "--aggregate-type", "user"]);
    assert_eq!(stdout(&users).lines().count(), 1);
    let after = run(
        &fresh,
        &["events", "export", "--after", &positions[1].to_string()],
    );
    assert_eq!(stdout(&after).lines().count(), 2);
}

/// The admin endpoint's events, following `next_after`.
async fn endpoint_events(app: &TestApp, admin: &str, filter: &str) -> Vec<Value> {
    let mut after = 0;
    let mut out = Vec::new();
    loop {
        let page = app
            .get(
                &format!("/v1/admin/events?after={after}&limit=100{filter}"),
                Some(admin),
            )
            .await
            .expect(200);
        let events = page.data()["events"].as_array().unwrap().clone();
        after = page.data()["next_after"].as_i64().unwrap();
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
}

fn export(fresh: &Fresh, args: &[&str]) -> Vec<Value> {
    let output = run(fresh, &[&["events", "export"], args].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn events_export_matches_the_admin_endpoint_and_numbers_new_events_itself() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, seller_user, _) = app.signup(&email()).await;
    let dataset = app.dataset(&seller, json!({})).await;
    app.staged_object(&seller, &dataset, b"exported").await;
    settled(&app.state).await;
    let everything = endpoint_events(&app, &admin, "").await;
    let datasets = endpoint_events(&app, &admin, "&aggregate_type=dataset").await;
    assert!(everything.len() > 5 && !datasets.is_empty());
    app.stop().await;

    assert_eq!(export(&fresh, &[]), everything);
    assert_eq!(export(&fresh, &["--aggregate-type", "dataset"]), datasets);
    let middle = everything[4]["position"].as_i64().unwrap().to_string();
    assert_eq!(export(&fresh, &["--after", &middle]), everything[5..]);
    for bad in [
        &["--aggregate-type", "nope"][..],
        &["--after=-1"],
        &["--after", "x"],
    ] {
        // Invalid values exit 1, like invalid configuration.
        let output = run(&fresh, &[&["events", "export"], bad].concat());
        assert_eq!(output.status.code(), Some(1), "{bad:?}");
        assert!(output.stdout.is_empty());
    }

    // An event appended while no server runs is numbered by the export itself, after the rest.
    let state = open(&fresh).await;
    state
        .store
        .execute::<aggregates::User>(
            &seller_user,
            aggregates::user::UserCommand::RecordPasswordChange,
            &(),
            &ipto::store::Actor::system(),
        )
        .await
        .unwrap();
    state.store.close().await;
    let exported = export(&fresh, &[]);
    assert_eq!(exported.len(), everything.len() + 1);
    assert_eq!(exported[..everything.len()], everything);
    let last = exported.last().unwrap();
    assert_eq!(last["event_type"], "PasswordChanged");
    assert_eq!(last["aggregate_id"], seller_user.as_str());
    assert!(
        last["position"].as_i64().unwrap()
            > everything.last().unwrap()["position"].as_i64().unwrap()
    );
    assert_eq!(export(&fresh, &[]), exported, "the numbering is stable");
    let _ = std::fs::remove_dir_all(&fresh.data_dir);
    drop_database(&fresh.database_url).await;
}

#[tokio::test]
async fn exporting_while_the_server_writes_leaves_the_audit_order_whole() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (_, user, _) = app.signup(&email()).await;
    // The export numbers events itself while the server's worker does the same: whichever loses a
    // batch must give it up, not fail the projection or number an event twice.
    let store = app.state.store.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..300 {
            store
                .execute::<aggregates::User>(
                    &user,
                    aggregates::user::UserCommand::RecordPasswordChange,
                    &(),
                    &ipto::store::Actor::system(),
                )
                .await
                .unwrap();
        }
    });
    let target = Fresh {
        data_dir: fresh.data_dir.clone(),
        database_url: fresh.database_url.clone(),
    };
    let exports = tokio::task::spawn_blocking(move || {
        (0..6)
            .map(|_| run(&target, &["events", "export"]).status.success())
            .collect::<Vec<_>>()
    });
    writer.await.unwrap();
    assert!(exports.await.unwrap().into_iter().all(|ok| ok));
    settled(&app.state).await;
    let health = app.get("/health", None).await.expect(200);
    assert_eq!(
        health.data()["projections"]["audit_order"]["state"],
        "ok",
        "{}",
        health.body
    );
    let events = table(&app.state, "SELECT COUNT(*) FROM events").await[0][0].clone();
    let numbered = table(
        &app.state,
        "SELECT COUNT(*), COUNT(DISTINCT global_position), MIN(position), MAX(position) FROM audit_order",
    )
    .await;
    assert_eq!(
        numbered[0],
        [events.clone(), events.clone(), "1".into(), events]
    );
    let everything = endpoint_events(&app, &admin, "").await;
    app.stop().await;
    assert_eq!(export(&fresh, &[]), everything);
    let _ = std::fs::remove_dir_all(&fresh.data_dir);
    drop_database(&fresh.database_url).await;
}

#[tokio::test]
async fn a_server_killed_while_writing_catches_up_exactly_after_restart() {
    let fresh = fresh().await;
    let server = Server::start(&fresh).await;
    let emails: Vec<String> = (0..3).map(|n| format!("crash{n}@example.com")).collect();
    for email in &emails {
        signup(&server, email).await;
    }
    // A bounded login load from four clients; the server dies under it.
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let email = emails[i % emails.len()].clone();
            let address = server.address.clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                let client = http_client();
                for _ in 0..200 {
                    let sent = client
                        .post(format!("{address}/v1/auth/login"))
                        .json(&json!({"email": email, "password": PASSWORD}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Kill it once the load is under way (a loaded machine may take a while for the first).
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    for task in load {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acknowledged > 0, "the load never got through");

    let server = Server::start(&fresh).await;
    server.settled().await;
    let state = open(&fresh).await;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&state.store.db.pool)
        .await
        .unwrap();
    // The stored checkpoints reach the head too: a worker whose projection reads none of the
    // last events stores its checkpoint after an idle second.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let statuses = state.store.engine.statuses().await.unwrap();
        if statuses.iter().all(|s| s.events_applied == events) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{statuses:?} for {events} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every acknowledged login is in the log, and each login event is counted exactly once.
    let logged: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'LoggedIn'")
            .fetch_one(&state.store.db.pool)
            .await
            .unwrap();
    assert!(
        logged as usize >= acknowledged,
        "{logged} events for {acknowledged} acknowledged logins"
    );
    let counted: i64 = sqlx::query_scalar("SELECT CAST(SUM(login_count) AS BIGINT) FROM users")
        .fetch_one(&state.store.db.pool)
        .await
        .unwrap();
    assert_eq!(counted, logged);
    let live = read_models(&state).await;
    server.stop();
    assert!(run(&fresh, &["projections", "rebuild", "--all"])
        .status
        .success());
    assert_eq!(read_models(&state).await, live);
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let fresh = fresh().await;
    let log = fresh.data_dir.join("server.log");
    let server = Server::start_logging(&fresh, Some(&log), &[]).await;
    let password = "unique password 7f3a";
    let signup = server
        .post("/v1/auth/signup", json!({"email": "logs@example.com", "password": password, "display_name": "L", "tenant_name": "L"}))
        .await
        .unwrap()
        .expect(201);
    let token = signup.data()["session_token"].as_str().unwrap().to_owned();
    let login = server
        .post(
            "/v1/auth/login",
            json!({"email": "logs@example.com", "password": password}),
        )
        .await
        .unwrap()
        .expect(200);
    let second = login.data()["session_token"].as_str().unwrap().to_owned();
    server
        .post(
            "/v1/auth/login",
            json!({"email": "logs@example.com", "password": "wrong password 9"}),
        )
        .await
        .unwrap()
        .expect(401);
    let created = reply(
        server
            .client
            .post(format!("{}/v1/api-keys", server.address))
            .bearer_auth(&token)
            .json(&json!({"name": "k", "scopes": ["datasets:read"]}))
            .send()
            .await
            .unwrap(),
    )
    .await
    .expect(201);
    let key = created.data()["key"].as_str().unwrap().to_owned();
    reply(
        server
            .client
            .get(format!("{}/v1/me", server.address))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap(),
    )
    .await
    .expect(200);
    reply(
        server
            .client
            .post(format!("{}/v1/auth/logout", server.address))
            .bearer_auth(&second)
            .send()
            .await
            .unwrap(),
    )
    .await
    .expect(200);
    server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("served"), "the log was captured");
    let secret = key.rsplit('_').next().unwrap();
    for needle in [
        password,
        "wrong password 9",
        token.as_str(),
        second.as_str(),
        key.as_str(),
        secret,
    ] {
        assert!(
            !text.contains(needle),
            "the log contains a secret: {needle}"
        );
    }
}

#[tokio::test]
async fn the_log_has_no_colour_off_a_terminal_and_is_json_lines_when_asked() {
    for format in ["text", "json"] {
        let fresh = fresh().await;
        let log = fresh.data_dir.join("server.log");
        let server =
            Server::start_logging(&fresh, Some(&log), &[("IPTO_LOG_FORMAT", format)]).await;
        let signup = server
            .post("/v1/auth/signup", json!({"email": "json@example.com", "password": "a long password 1", "display_name": "J", "tenant_name": "J"}))
            .await
            .unwrap()
            .expect(201);
        let token = signup.data()["session_token"].as_str().unwrap();
        let tenant = signup.data()["tenant_id"].as_str().unwrap();
        let me = server
            .client
            .get(format!("{}/v1/me", server.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200);
        let request_id = me.headers()["x-request-id"].to_str().unwrap().to_owned();
        server.stop();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains('\u{1b}'), "{format}: ANSI escapes in a file");
        if format == "text" {
            assert!(
                text.lines()
                    .any(|l| l.contains("served") && l.contains(&request_id)),
                "{text}"
            );
            continue;
        }
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let served = lines
            .iter()
            .find(|l| l["message"] == "served" && l["request_id"] == request_id.as_str())
            .unwrap_or_else(|| panic!("no served line for {request_id}: {text}"));
        assert_eq!(served["level"], "INFO");
        assert_eq!(served["route"], "/v1/me");
        assert_eq!(served["status"], 200);
        assert_eq!(served["tenant"], tenant);
        assert!(served["latency_ms"].as_f64().unwrap() >= 0.0);
        assert!(
            chrono::DateTime::parse_from_rfc3339(served["timestamp"].as_str().unwrap()).is_ok()
        );
        assert_eq!(served["span"]["method"], "GET");
    }
}

/// Every read model, whole, in key order.
const ALL_READ_MODELS: [&str; 15] = [
    "SELECT * FROM tenants ORDER BY tenant_id",
    "SELECT * FROM users ORDER BY user_id",
    "SELECT * FROM members ORDER BY user_id",
    "SELECT * FROM invitations ORDER BY invitation_id",
    "SELECT * FROM datasets ORDER BY dataset_id",
    "SELECT * FROM entitlements ORDER BY dataset_id, tenant_id",
    "SELECT * FROM objects ORDER BY object_id",
    "SELECT * FROM api_keys ORDER BY api_key_id",
    "SELECT * FROM api_key_grants ORDER BY grant_id",
    "SELECT * FROM accesses ORDER BY access_id",
    "SELECT * FROM payout_statements ORDER BY statement_id",
    "SELECT * FROM search_activities ORDER BY search_activity_id",
    "SELECT * FROM search_appearances ORDER BY search_activity_id, dataset_id",
    "SELECT * FROM audit_order ORDER BY position",
    "SELECT * FROM audit_tree ORDER BY level, idx",
];

#[tokio::test]
async fn rebuild_all_reproduces_every_read_model_after_a_full_workload() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, buyer_tenant) = app.signup(&email()).await;
    let listed = app
        .dataset(
            &seller,
            json!({"visibility": "listed", "monetization_mode": "premium"}),
        )
        .await;
    let restricted = app
        .dataset(&seller, json!({"visibility": "restricted"}))
        .await;
    let doomed = app.dataset(&seller, json!({"name": "Doomed"})).await;
    app.post(
        &format!("/v1/datasets/{restricted}/entitlements"),
        Some(&seller),
        json!({"tenant_id": buyer_tenant}),
    )
    .await
    .expect(201);
    let approved = app.staged_object(&seller, &listed, b"approved").await;
    let rejected = app.staged_object(&seller, &listed, b"rejected").await;
    let removed = app.staged_object(&seller, &restricted, b"removed").await;
    app.staged_object(&seller, &doomed, b"doomed").await;
    let review = |object: &str, verb: &str| {
        format!("/v1/admin/review/objects/{seller_tenant}/{object}/{verb}")
    };
    app.post(
        &review(&approved, "approve"),
        Some(&admin),
        json!({"note": "ok"}),
    )
    .await
    .expect(200);
    app.post(
        &review(&rejected, "reject"),
        Some(&admin),
        json!({"reason": "no"}),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/objects/{removed}"), Some(&seller))
        .await
        .expect(200);
    app.patch(
        &format!("/v1/datasets/{listed}"),
        Some(&seller),
        json!({"description": "changed"}),
    )
    .await
    .expect(200);
    // The seller's team: members joined, re-roled and removed, invitations revoked and pending,
    // ownership handed over.
    let (_, manager, _) = crate::teams::member(&app, &seller, &["admin"]).await;
    let (_, leaver, _) = crate::teams::member(&app, &seller, &["viewer"]).await;
    app.patch(
        &format!("/v1/tenant/members/{leaver}"),
        Some(&seller),
        json!({"roles": ["operator", "seller_manager"]}),
    )
    .await
    .expect(200);
    app.delete(&format!("/v1/tenant/members/{leaver}"), Some(&seller))
        .await
        .expect(200);
    let (withdrawn, _) = crate::teams::invite(&app, &seller, &email(), &["viewer"]).await;
    app.delete(
        &format!("/v1/tenant/invitations/{withdrawn}"),
        Some(&seller),
    )
    .await
    .expect(200);
    crate::teams::invite(&app, &seller, &email(), &["buyer_manager"]).await;
    app.post(
        "/v1/tenant/ownership",
        Some(&seller),
        json!({"user_id": manager}),
    )
    .await
    .expect(200);
    let key = app
        .post("/v1/api-keys", Some(&buyer), json!({"name": "agent", "scopes": ["datasets:read"], "dataset_access_mode": "allow_list"}))
        .await
        .expect(201);
    let (key_id, key_secret) = (
        key.data()["api_key_id"].as_str().unwrap().to_owned(),
        key.data()["key"].as_str().unwrap().to_owned(),
    );
    app.post(
        &format!("/v1/api-keys/{key_id}/grants"),
        Some(&buyer),
        json!({"dataset_id": listed}),
    )
    .await
    .expect(201);
    app.get(
        &format!("/v1/objects/{approved}/download"),
        Some(&key_secret),
    )
    .await
    .expect(200);
    app.get(&format!("/v1/objects/{approved}/download"), Some(&buyer))
        .await
        .expect(200);
    let searched = app
        .post(
            "/v1/search",
            Some(&buyer),
            json!({"query": "approved OR removed"}),
        )
        .await
        .expect(200);
    assert_eq!(
        searched.data()["results"][0]["object_id"],
        approved.as_str()
    );
    app.post("/v1/search", Some(&seller), json!({"query": "approved"}))
        .await
        .expect(200);
    app.delete(&format!("/v1/datasets/{doomed}"), Some(&seller))
        .await
        .expect(200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .get(&format!("/v1/datasets/{doomed}"), Some(&seller))
        .await
        .status
        != 404
    {
        assert!(Instant::now() < deadline, "cleanup did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    settled(&app.state).await;
    let mut live = Vec::new();
    for sql in ALL_READ_MODELS {
        live.push(table(&app.state, sql).await);
    }
    assert!(
        live.iter().all(|rows| !rows.is_empty()),
        "every read model has rows: {live:?}"
    );
    app.stop().await;

    let output = run(&fresh, &["projections", "rebuild", "--all"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("rebuilt search"),
        "the stopped server's index is rebuilt too"
    );
    let state = open(&fresh).await;
    for (sql, before) in ALL_READ_MODELS.iter().zip(&live) {
        assert_eq!(&table(&state, sql).await, before, "{sql}");
    }
    state.store.close().await;
    drop(state);
    // The rebuilt index answers as the live one did.
    let app = spawn_with(config(&fresh)).await;
    let again = app
        .post(
            "/v1/search",
            Some(&buyer),
            json!({"query": "approved OR removed"}),
        )
        .await
        .expect(200);
    assert_eq!(again.data()["results"], {
        let mut results = searched.data()["results"].clone();
        for (old, new) in results
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip(again.data()["results"].as_array().unwrap())
        {
            old["retrieval_event_id"] = new["retrieval_event_id"].clone();
        }
        results
    });
    app.finish().await;
}

/// What a provider and a buyer read, as they read it: a dataset, its objects, the provider's
/// dashboard, a search.
async fn reader_view(
    app: &TestApp,
    seller: &str,
    buyer: &str,
    dataset: &str,
) -> (Vec<(&'static str, Value)>, f64) {
    let mut view = Vec::new();
    for (name, path, token) in [
        ("dataset", format!("/v1/datasets/{dataset}"), seller),
        ("objects", format!("/v1/datasets/{dataset}/objects"), seller),
        ("dashboard", "/v1/provider/dashboard".to_owned(), seller),
    ] {
        let answer = app.get(&path, Some(token)).await;
        assert_eq!(answer.status, 200, "{name}: {:?}", answer.body);
        view.push((name, answer.data().clone()));
    }
    let searched = app
        .post(
            "/v1/search",
            Some(buyer),
            json!({"query": "lighthouse tides", "dataset_ids": [dataset]}),
        )
        .await;
    assert_eq!(searched.status, 200, "search: {:?}", searched.body);
    // A buyer's search earns the provider revenue, so the dashboard's revenue is newer at each
    // read: it is compared apart (it may only grow).
    let mut revenue = 0.0;
    if let Some((_, dashboard)) = view.iter_mut().find(|(name, _)| *name == "dashboard") {
        revenue = dashboard["total_revenue"].as_f64().unwrap();
        for field in ["total_revenue", "revenue_last_30_days"] {
            dashboard[field] = Value::Null;
        }
    }
    let mut found: Vec<String> = searched.data()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["object_id"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    view.push(("search", json!(found)));
    (view, revenue)
}

#[tokio::test]
async fn an_online_rebuild_under_load_never_shows_a_reader_partial_read_models() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, _) = app.signup(&email()).await;
    let (writer, _, _) = app.signup(&email()).await;
    let dataset = app
        .dataset(
            &seller,
            json!({"visibility": "listed", "monetization_mode": "premium"}),
        )
        .await;
    for n in 0..6 {
        let text = format!("the lighthouse keeper logs the tides, entry {n}");
        let object = app.staged_object(&seller, &dataset, text.as_bytes()).await;
        if n % 2 == 0 {
            app.post(
                &format!("/v1/admin/review/objects/{seller_tenant}/{object}/approve"),
                Some(&admin),
                json!({"note": "ok"}),
            )
            .await
            .expect(200);
        }
    }
    // A longer log, so that the replay takes a while.
    for n in 0..60 {
        app.dataset(&writer, json!({"name": format!("Filler {n}")}))
            .await;
    }
    settled(&app.state).await;
    let (before, mut revenue) = reader_view(&app, &seller, &buyer, &dataset).await;
    assert_eq!(before[3].1.as_array().unwrap().len(), 3, "{before:?}");
    // Each read is complete and equal to the one before the rebuild, or newer.
    let mut check = async |what: &str| {
        let (view, now) = reader_view(&app, &seller, &buyer, &dataset).await;
        assert_eq!(view, before, "a reader saw {what}");
        assert!(
            now > revenue,
            "revenue went from {revenue} to {now} during {what}"
        );
        revenue = now;
    };

    // `ipto projections rebuild --all` against the running service, while readers read and a
    // writer writes.
    let rebuild = {
        let fresh = fresh.clone();
        tokio::task::spawn_blocking(move || run(&fresh, &["projections", "rebuild", "--all"]))
    };
    let mut reads = 0;
    let mut written = Vec::new();
    let mut phases = std::collections::BTreeSet::new();
    while !rebuild.is_finished() {
        check("the read models change during the rebuild").await;
        reads += 1;
        written.push(
            app.dataset(&writer, json!({"name": format!("During {reads}")}))
                .await,
        );
        let health = app.get("/health", None).await;
        if let Some(phase) = health.data()["rebuild"]["phase"].as_str() {
            phases.insert(phase.to_owned());
        }
    }
    let output = rebuild.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("switched"), "{stderr}");
    assert!(stderr.contains("requested a rebuild of search"), "{stderr}");
    assert!(reads > 0, "the readers ran during the rebuild");

    // The running server rebuilds its own index behind the live one; searches go on meanwhile.
    let request = ipto::search::indexer::latest_request(&app.state.store.db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.state.search.index.rebuilt() < request {
        check("the search index change during its rebuild").await;
        assert!(Instant::now() < deadline, "the index was not rebuilt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check("the rebuilt index").await;

    // Every write made during the rebuild is in the rebuilt read models, which the live workers
    // keep following, and which equal an offline rebuild from the log.
    let last = app
        .dataset(&writer, json!({"name": "After the switch"}))
        .await;
    for id in written.iter().chain([&last]) {
        app.get(&format!("/v1/datasets/{id}"), Some(&writer))
            .await
            .expect(200);
    }
    let health = app.get("/health", None).await;
    assert_eq!(
        health.data()["rebuild"]["phase"],
        "done",
        "{:?}",
        health.body
    );
    assert!(
        phases
            .iter()
            .all(|p| ["replaying", "switching", "done"].contains(&p.as_str())),
        "{phases:?}"
    );
    assert!(
        health.data()["rebuild"]["done"].as_u64().unwrap() > 0,
        "{:?}",
        health.body
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("ipto_projection_rebuild_running{rebuild=\"read_models\"} 0")
            && metrics.contains("ipto_projection_rebuild_events_done{rebuild=\"read_models\"}"),
        "{metrics}"
    );
    settled(&app.state).await;
    let mut live = Vec::new();
    for sql in ALL_READ_MODELS {
        live.push(table(&app.state, sql).await);
    }
    app.stop().await;
    let offline = run(&fresh, &["projections", "rebuild", "--all", "--offline"]);
    assert!(offline.status.success());
    let state = open(&fresh).await;
    for (sql, online) in ALL_READ_MODELS.iter().zip(&live) {
        assert_eq!(&table(&state, sql).await, online, "{sql}");
    }
    state.store.close().await;
}
