//! A fleet: several `ipto serve` processes on one PostgreSQL database and one blob store, behind
//! a real load balancer (HAProxy, round-robin, health-checked), configured as README's "Operating a
//! fleet" says: one signing key, one audit key, the balancer's URL as the public URL (signed upload
//! URLs reach any instance), the balancer as a trusted proxy, and limits in the database.
//!
//! Tests here need PostgreSQL and `haproxy` (`.ci/run` installs it); without either they say so and
//! return.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use projections::LogPosition;
use reqwest::Method;
use serde_json::json;

use crate::cli::Server;
use crate::helpers::*;

const AUDIT_KEY: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// The instances and the balancer in front of them.
pub(crate) struct Fleet {
    instances: Vec<Option<Server>>,
    balancer: Child,
    /// The balancer's URL: what clients use.
    pub(crate) address: String,
    config: std::path::PathBuf,
}

/// Whether a fleet can run here: PostgreSQL and HAProxy.
pub(crate) fn available() -> bool {
    if !on_postgres() {
        return false;
    }
    let found = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("haproxy is not installed: the fleet is not tested");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Fleet {
    /// Starts `size` instances (the first alone until it serves, so that it holds every
    /// projection's lock) and the balancer, with `env` on every instance.
    pub(crate) async fn start(fresh: &Fresh, size: usize, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let address = format!("http://127.0.0.1:{port}");
        let storage = format!("file://{}", fresh.data_dir.join("blobs").display());
        // The fleet's audit key, also where `ipto` commands on the test's data directory read it.
        let key_file = fresh.data_dir.join("audit-signing.key");
        if !key_file.exists() {
            std::fs::write(&key_file, AUDIT_KEY).unwrap();
            std::fs::set_permissions(
                &key_file,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
        }
        let mut instances = Vec::new();
        for n in 0..size {
            let dir = fresh.data_dir.join(format!("instance-{n}"));
            let dir = dir.display().to_string();
            let mut all: Vec<(&str, &str)> = vec![
                ("IPTO_DATA_DIR", &dir),
                ("IPTO_STORAGE_URL", &storage),
                ("IPTO_PUBLIC_URL", &address),
                ("IPTO_AUDIT_SIGNING_KEY", AUDIT_KEY),
                ("IPTO_TRUSTED_PROXIES", "127.0.0.1"),
            ];
            all.extend_from_slice(env);
            instances.push(Some(Server::start_with(fresh, &all).await));
        }
        let config = fresh.data_dir.join("haproxy.cfg");
        let servers: String = instances
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let backend = s.as_ref().unwrap().address.trim_start_matches("http://");
                format!("    server i{n} {backend} check inter 300ms fall 2 rise 1\n")
            })
            .collect();
        // Connection failures (an instance gone) are retried on another instance: nothing was
        // sent, so no write can run twice; anything else reaches the client as it happened.
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 2048\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
                 timeout server 60s\n    timeout check 5s\n    retries 3\n    option redispatch 1\n    \
                 retry-on conn-failure\n\
                 frontend front\n    bind 127.0.0.1:{port}\n    option forwardfor\n    \
                 default_backend instances\n\
                 backend instances\n    balance roundrobin\n    option httpchk GET /health\n\
                 {servers}"
            ),
        )
        .unwrap();
        let balancer = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let fleet = Self {
            instances,
            balancer,
            address,
            config,
        };
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Every instance is up behind the balancer once round-robin has answered from each.
            let mut answered = 0;
            for _ in 0..size {
                if let Ok(r) = client.get(format!("{}/health", fleet.address)).send().await {
                    answered += usize::from(r.status().is_success());
                }
            }
            if answered == size {
                break;
            }
            assert!(Instant::now() < deadline, "the balancer never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fleet
    }

    /// Instance `n`, while it runs.
    pub(crate) fn instance(&self, n: usize) -> &Server {
        self.instances[n].as_ref().expect("a running instance")
    }

    /// Kills instance `n` with SIGKILL: no shutdown, no drain, its connections and locks gone.
    pub(crate) fn kill(&mut self, n: usize) {
        self.instances[n].take().expect("running").kill();
    }

    /// Stops the balancer and every instance still running.
    pub(crate) fn stop(mut self) {
        for server in self.instances.drain(..).flatten() {
            server.stop();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Drop for Fleet {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        let _ = self.balancer.kill();
        let _ = self.balancer.wait();
        for server in self.instances.drain(..).flatten() {
            server.kill();
        }
    }
}

/// The lowest global position any projection has applied, as instance `server` reports it.
pub(crate) async fn slowest_projection(server: &Server) -> Option<i64> {
    let health = reply(
        server
            .client
            .get(format!("{}/health", server.address))
            .send()
            .await
            .ok()?,
    )
    .await;
    health.data()["projections"]
        .as_object()?
        .values()
        .map(|p| p["position"].as_i64().unwrap_or(0))
        .min()
}

/// Through the balancer, with the consistency header: every write is read back at once whichever
/// instance answers, a dataset approved for sale is found by a search, and the rate limit allows
/// its rate once for the whole fleet.
#[tokio::test]
async fn behind_a_balancer_the_fleet_behaves_as_one_service() {
    if !available() {
        return;
    }
    let one = fresh().await;
    let admin = ("IPTO_BOOTSTRAP_ADMIN_EMAIL", "admin@fleet.test");
    let password = ("IPTO_BOOTSTRAP_ADMIN_PASSWORD", "admin password 1");
    let fleet = Fleet::start(&one, 3, &[admin, password]).await;
    let front = Front::new(&fleet.address);

    // Write→read pairs: each read goes to the next instance in the rotation.
    let seller = front.signup("seller@fleet.test").await;
    for n in 0..12 {
        let created = front
            .call(
                Method::POST,
                "/v1/datasets",
                &seller,
                Some(json!({"name": format!("Fleet {n}"), "visibility": "listed"})),
            )
            .await
            .expect(201);
        let id = created.data()["dataset_id"].as_str().unwrap().to_owned();
        let read = front
            .call(Method::GET, &format!("/v1/datasets/{id}"), &seller, None)
            .await
            .expect(200);
        assert_eq!(read.data()["name"], format!("Fleet {n}"));
        let listed = front
            .call(Method::GET, "/v1/datasets?limit=100", &seller, None)
            .await
            .expect(200);
        assert_eq!(listed.data()["items"].as_array().unwrap().len(), n + 1);
    }
    // Approve→search: the object is uploaded through the balancer and approved by the admin; a
    // search sent with the approval's position finds it on whichever instance answers.
    let dataset = front
        .call(
            Method::POST,
            "/v1/datasets",
            &seller,
            Some(json!({"name": "Tide tables", "visibility": "listed"})),
        )
        .await
        .expect(201)
        .data()["dataset_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin_token = front.login("admin@fleet.test", "admin password 1").await;
    let buyer = front.signup("buyer@fleet.test").await;
    for n in 0..3 {
        let text = format!("harbour tide tables for the estuary, volume {n}");
        let initiated = front
            .call(
                Method::POST,
                &format!("/v1/datasets/{dataset}/objects/upload"),
                &seller,
                Some(
                    json!({"filename": format!("tides-{n}.txt"), "content_type": "text/plain",
                            "size_bytes": text.len()}),
                ),
            )
            .await
            .expect(201);
        let object = initiated.data()["object_id"].as_str().unwrap().to_owned();
        let url = initiated.data()["upload_url"].as_str().unwrap();
        assert!(url.starts_with(&fleet.address), "{url}");
        let put = front.http.put(url).body(text).send().await.unwrap();
        assert!(put.status().is_success(), "{}", put.status());
        front
            .call(
                Method::POST,
                &format!("/v1/objects/{object}/confirm"),
                &seller,
                Some(json!({})),
            )
            .await
            .expect(200);
        let tenant = front.tenant_of(&seller).await;
        front
            .call(
                Method::POST,
                &format!("/v1/admin/review/objects/{tenant}/{object}/approve"),
                &admin_token,
                Some(json!({})),
            )
            .await
            .expect(200);
        // Three searches, one per instance: each must see the approval.
        for _ in 0..3 {
            let found = front
                .call(
                    Method::POST,
                    "/v1/search",
                    &buyer,
                    Some(json!({"query": format!("estuary volume {n}"), "limit": 10})),
                )
                .await
                .expect(200);
            let hits: Vec<&str> = found.data()["results"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r["object_id"].as_str())
                .collect();
            assert!(hits.contains(&object.as_str()), "{}", found.body);
        }
    }

    // An online rebuild against the live fleet: every answer through the balancer stays
    // complete while `rebuild --all` replays and switches, and every instance rebuilds its own
    // search index behind the live one.
    let rebuild = {
        let one = one.clone();
        tokio::task::spawn_blocking(move || {
            crate::cli::run(&one, &["projections", "rebuild", "--all"])
        })
    };
    let reads_during = async |front: &Front| {
        let listed = front
            .call(Method::GET, "/v1/datasets?limit=100", &seller, None)
            .await
            .expect(200);
        assert_eq!(listed.data()["items"].as_array().unwrap().len(), 13);
        let found = front
            .call(
                Method::POST,
                "/v1/search",
                &buyer,
                Some(json!({"query": "estuary", "limit": 10})),
            )
            .await
            .expect(200);
        assert_eq!(
            found.data()["results"].as_array().unwrap().len(),
            3,
            "{}",
            found.body
        );
    };
    while !rebuild.is_finished() {
        reads_during(&front).await;
    }
    let output = rebuild.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0..3 {
        loop {
            reads_during(&front).await;
            let instance = fleet.instance(n);
            let health = reply(
                instance
                    .client
                    .get(format!("{}/health", instance.address))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let search = &health.data()["projections"]["search"];
            if search["state"] == "ok" && health.data()["rebuild"]["phase"] == "done" {
                break;
            }
            assert!(Instant::now() < deadline, "instance {n}: {}", health.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    fleet.stop();

    // The rate limit, once for the fleet: a fleet allowing 3 logins a minute per client (one back
    // every 20 s, longer than the nine attempts take).
    let limited = fresh().await;
    let fleet = Fleet::start(&limited, 3, &[("IPTO_AUTH_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let front = Front::new(&fleet.address);
    let mut answered = 0;
    for _ in 0..9 {
        let r = front
            .post_anonymous(
                "/v1/auth/login",
                json!({"email": email(), "password": "not the password"}),
            )
            .await;
        match r.status.as_u16() {
            401 => answered += 1,
            429 => assert_eq!(r.code(), "rate_limited"),
            other => panic!("login answered {other}: {}", r.body),
        }
    }
    assert_eq!(
        answered, 3,
        "the fleet allowed its rate once, not once per instance"
    );
    fleet.stop();
    drop_database(&limited.database_url).await;
    drop_database(&one.database_url).await;
}

/// A client of the balancer that sends back the furthest log position it has seen, as the `ipto`
/// client does.
pub(crate) struct Front {
    address: String,
    pub(crate) http: reqwest::Client,
    position: std::sync::Mutex<Option<LogPosition>>,
}

impl Front {
    pub(crate) fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            http: http_client(),
            position: std::sync::Mutex::new(None),
        }
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token);
        if let Some(position) = *self.position.lock().unwrap() {
            request = request.header("ipto-log-position", position.to_string());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request).await
    }

    async fn post_anonymous(&self, path: &str, body: serde_json::Value) -> Reply {
        let request = self
            .http
            .post(format!("{}{path}", self.address))
            .json(&body);
        self.answer(request).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Reply {
        let answer = reply(request.send().await.unwrap()).await;
        if let Some(reached) = answer.headers.get("ipto-log-position") {
            let reached: LogPosition = reached.to_str().unwrap().parse().unwrap();
            let mut position = self.position.lock().unwrap();
            *position = (*position).max(Some(reached));
        }
        answer
    }

    pub(crate) async fn signup(&self, email: &str) -> String {
        let body = json!({"email": email, "password": PASSWORD, "display_name": "Fleet",
                          "tenant_name": "Fleet"});
        let r = self
            .post_anonymous("/v1/auth/signup", body)
            .await
            .expect(201);
        r.data()["session_token"].as_str().unwrap().to_owned()
    }

    async fn login(&self, email: &str, password: &str) -> String {
        let body = json!({"email": email, "password": password});
        let r = self
            .post_anonymous("/v1/auth/login", body)
            .await
            .expect(200);
        r.data()["session_token"].as_str().unwrap().to_owned()
    }

    async fn tenant_of(&self, token: &str) -> String {
        let me = self
            .call(Method::GET, "/v1/me", token, None)
            .await
            .expect(200);
        me.data()["tenant_id"].as_str().unwrap().to_owned()
    }
}
