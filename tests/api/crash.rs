//! A server killed with SIGKILL in the middle of a concurrent write load, then restarted on the
//! same data: every write that was answered 2xx is there, and every read model equals a rebuild
//! from the log. The same load through a fleet's balancer, with one instance killed: the others
//! take over its projection workers within seconds and nothing is skipped or applied twice.
//!
//! Eight clients (four sellers, three buyers, one platform admin) create datasets, grant
//! entitlements, edit descriptions, upload and confirm objects, review them, create API keys and
//! grants, log in and buy downloads. The kill comes once a random number of writes has been
//! acknowledged (`IPTO_CRASH_SEED` replays a choice). Each acknowledged write is recorded with the
//! ids its answer carried and checked through the API after the restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{open, run, Server};
use crate::fleet::{slowest_projection, Fleet};
use crate::helpers::*;

const SELLERS: usize = 4;
const BUYERS: usize = 3;
/// Requests per client at most: the load is bounded even if the kill never came.
const REQUESTS_PER_CLIENT: usize = 150;
const ADMIN_EMAIL: &str = "admin@crash.test";
const ADMIN_PASSWORD: &str = "admin password 1";

/// An account the load acts as.
#[derive(Clone, Debug)]
struct Account {
    email: String,
    token: String,
    user_id: String,
    tenant_id: String,
}

/// A write the server answered with a 2xx, with the ids from its answer.
#[derive(Clone, Debug)]
enum Ack {
    Dataset {
        owner: usize,
        dataset: String,
    },
    Described {
        owner: usize,
        dataset: String,
        description: String,
    },
    Entitlement {
        owner: usize,
        dataset: String,
        tenant: String,
    },
    Initiated {
        owner: usize,
        object: String,
    },
    Uploaded,
    Confirmed {
        owner: usize,
        object: String,
    },
    Reviewed {
        owner: usize,
        object: String,
        status: &'static str,
    },
    ApiKey {
        owner: usize,
        key: String,
    },
    Granted {
        owner: usize,
        key: String,
        grant: String,
    },
    Download {
        buyer: usize,
        access: String,
    },
    Login {
        user: String,
    },
}

impl Ack {
    fn kind(&self) -> &'static str {
        match self {
            Ack::Dataset { .. } => "dataset created",
            Ack::Described { .. } => "dataset edited",
            Ack::Entitlement { .. } => "entitlement granted",
            Ack::Initiated { .. } => "upload initiated",
            Ack::Uploaded => "bytes uploaded",
            Ack::Confirmed { .. } => "upload confirmed",
            Ack::Reviewed { .. } => "object reviewed",
            Ack::ApiKey { .. } => "API key created",
            Ack::Granted { .. } => "key grant added",
            Ack::Download { .. } => "download bought",
            Ack::Login { .. } => "login",
        }
    }
}

/// A confirmed object waiting for the admin.
#[derive(Clone, Debug)]
struct Staged {
    owner: usize,
    object: String,
    listed: bool,
}

/// What the clients share.
#[derive(Default)]
struct Load {
    acks: Mutex<Vec<Ack>>,
    acked: AtomicUsize,
    /// Requests sent before the kill that never got an answer.
    in_flight: Mutex<Vec<String>>,
    /// Requests sent after the kill (refused).
    refused: AtomicUsize,
    /// Answers that were not 2xx before the kill.
    refusals: Mutex<Vec<String>>,
    review: Mutex<Vec<Staged>>,
    /// Approved objects in listed datasets: what buyers can download.
    buyable: Mutex<Vec<String>>,
    /// Listed datasets: what allow-list keys can be granted.
    listed: Mutex<Vec<String>>,
    killed_at: OnceLock<Instant>,
}

/// One client's connection to the server under load.
struct Client {
    address: String,
    http: reqwest::Client,
    token: String,
    load: Arc<Load>,
}

impl Client {
    /// Sends a request; `None` once the server is gone (the client stops).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Option<Reply> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.address)
        };
        let mut request = self.http.request(method, url);
        if !path.starts_with("http") {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let sent = Instant::now();
        match request.send().await {
            Ok(response) => {
                let answer = reply(response).await;
                if answer.status.is_success() {
                    Some(answer)
                } else if self.load.killed_at.get().is_none() {
                    self.load
                        .refusals
                        .lock()
                        .unwrap()
                        .push(format!("{what}: {} {}", answer.status, answer.body));
                    Some(answer)
                } else {
                    // An answer completed around the kill; treat it as lost.
                    None
                }
            }
            Err(_) => {
                match self.load.killed_at.get() {
                    Some(killed) if sent >= *killed => {
                        self.load.refused.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => self.load.in_flight.lock().unwrap().push(what.to_owned()),
                }
                None
            }
        }
    }

    fn ack(&self, ack: Ack) {
        self.load.acks.lock().unwrap().push(ack);
        self.load.acked.fetch_add(1, Ordering::SeqCst);
    }
}

/// A seller: datasets, descriptions, entitlements and three-step uploads.
async fn seller(client: Client, owner: usize, first: String, buyers: Vec<String>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // (dataset, visibility, tenants entitled)
    let mut datasets: Vec<(String, &str, BTreeSet<String>)> =
        vec![(first, "listed", BTreeSet::new())];
    let mut requests = 0;
    while requests < REQUESTS_PER_CLIENT {
        let roll = rng.gen_range(0..100);
        let pick = rng.gen_range(0..datasets.len());
        if roll < 20 {
            let visibility = ["listed", "listed", "restricted", "private"][rng.gen_range(0..4)];
            let mut body =
                json!({"name": format!("Crash {owner}-{requests}"), "visibility": visibility});
            if visibility == "listed" {
                body["monetization_mode"] = json!("premium");
            }
            requests += 1;
            let Some(r) = client
                .send(Method::POST, "/v1/datasets", Some(body), "create dataset")
                .await
            else {
                return;
            };
            if let Some(id) = r.data()["dataset_id"].as_str() {
                client.ack(Ack::Dataset {
                    owner,
                    dataset: id.to_owned(),
                });
                if visibility == "listed" {
                    client.load.listed.lock().unwrap().push(id.to_owned());
                }
                datasets.push((id.to_owned(), visibility, BTreeSet::new()));
            }
        } else if roll < 32 {
            let dataset = datasets[pick].0.clone();
            let description = format!("revision {requests}");
            requests += 1;
            let Some(r) = client
                .send(
                    Method::PATCH,
                    &format!("/v1/datasets/{dataset}"),
                    Some(json!({"description": description})),
                    "edit dataset",
                )
                .await
            else {
                return;
            };
            if r.status.is_success() {
                client.ack(Ack::Described {
                    owner,
                    dataset,
                    description,
                });
            }
        } else if roll < 45 {
            let Some((dataset, _, entitled)) = datasets
                .iter_mut()
                .find(|(_, v, e)| *v == "restricted" && e.len() < buyers.len())
            else {
                continue;
            };
            let tenant = buyers
                .iter()
                .find(|t| !entitled.contains(*t))
                .expect("a buyer not yet entitled")
                .clone();
            entitled.insert(tenant.clone());
            requests += 1;
            let Some(r) = client
                .send(
                    Method::POST,
                    &format!("/v1/datasets/{dataset}/entitlements"),
                    Some(json!({"tenant_id": tenant})),
                    "grant entitlement",
                )
                .await
            else {
                return;
            };
            if r.status.is_success() {
                client.ack(Ack::Entitlement {
                    owner,
                    dataset: dataset.clone(),
                    tenant,
                });
            }
        } else {
            let (dataset, visibility, _) = datasets[pick].clone();
            let bytes = format!("object of seller {owner}, request {requests}\n").repeat(20);
            requests += 3;
            let Some(r) = client
                .send(
                    Method::POST,
                    &format!("/v1/datasets/{dataset}/objects/upload"),
                    Some(json!({"filename": "rows.csv", "content_type": "text/csv", "size_bytes": bytes.len()})),
                    "initiate upload",
                )
                .await
            else {
                return;
            };
            let (Some(object), Some(url)) = (
                r.data()["object_id"].as_str().map(str::to_owned),
                r.data()["upload_url"].as_str().map(str::to_owned),
            ) else {
                continue;
            };
            client.ack(Ack::Initiated {
                owner,
                object: object.clone(),
            });
            let put = client.http.put(&url).body(bytes).send().await;
            match put {
                Ok(response) if response.status().is_success() => client.ack(Ack::Uploaded),
                Ok(response) => {
                    client
                        .load
                        .refusals
                        .lock()
                        .unwrap()
                        .push(format!("upload bytes: {}", response.status()));
                    continue;
                }
                Err(_) => {
                    if client.load.killed_at.get().is_none() {
                        client
                            .load
                            .in_flight
                            .lock()
                            .unwrap()
                            .push("upload bytes".into());
                    }
                    return;
                }
            }
            let Some(r) = client
                .send(
                    Method::POST,
                    &format!("/v1/objects/{object}/confirm"),
                    Some(json!({})),
                    "confirm upload",
                )
                .await
            else {
                return;
            };
            if r.status.is_success() {
                client.ack(Ack::Confirmed {
                    owner,
                    object: object.clone(),
                });
                client.load.review.lock().unwrap().push(Staged {
                    owner,
                    object,
                    listed: visibility == "listed",
                });
            }
        }
    }
}

/// A buyer: downloads, API keys with grants, and logins.
async fn buyer(client: Client, me: usize, account: Account, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut allow_list_keys: Vec<String> = Vec::new();
    let mut requests = 0;
    while requests < REQUESTS_PER_CLIENT {
        let roll = rng.gen_range(0..100);
        let object = {
            let buyable = client.load.buyable.lock().unwrap();
            (!buyable.is_empty()).then(|| buyable[rng.gen_range(0..buyable.len())].clone())
        };
        requests += 1;
        if let (true, Some(object)) = (roll < 55, &object) {
            let Some(r) = client
                .send(
                    Method::GET,
                    &format!("/v1/objects/{object}/download"),
                    None,
                    "buy download",
                )
                .await
            else {
                return;
            };
            if let Some(access) = r.data()["access_id"].as_str() {
                client.ack(Ack::Download {
                    buyer: me,
                    access: access.to_owned(),
                });
            }
        } else if roll < 75 {
            let mode = if rng.gen_bool(0.5) {
                "allow_list"
            } else {
                "all_available"
            };
            let Some(r) = client
                .send(
                    Method::POST,
                    "/v1/api-keys",
                    Some(json!({"name": format!("key {requests}"), "scopes": ["datasets:read"], "dataset_access_mode": mode})),
                    "create API key",
                )
                .await
            else {
                return;
            };
            if let Some(key) = r.data()["api_key_id"].as_str() {
                client.ack(Ack::ApiKey {
                    owner: me,
                    key: key.to_owned(),
                });
                if mode == "allow_list" {
                    allow_list_keys.push(key.to_owned());
                }
            }
        } else if roll < 88 && !allow_list_keys.is_empty() {
            let key = allow_list_keys[rng.gen_range(0..allow_list_keys.len())].clone();
            let dataset = {
                let listed = client.load.listed.lock().unwrap();
                listed[rng.gen_range(0..listed.len())].clone()
            };
            let Some(r) = client
                .send(
                    Method::POST,
                    &format!("/v1/api-keys/{key}/grants"),
                    Some(json!({"dataset_id": dataset})),
                    "grant key",
                )
                .await
            else {
                return;
            };
            if let Some(grant) = r.data()["grant_id"].as_str() {
                client.ack(Ack::Granted {
                    owner: me,
                    key,
                    grant: grant.to_owned(),
                });
            }
        } else {
            let Some(r) = client
                .send(
                    Method::POST,
                    "/v1/auth/login",
                    Some(json!({"email": account.email, "password": PASSWORD})),
                    "log in",
                )
                .await
            else {
                return;
            };
            if r.status.is_success() {
                client.ack(Ack::Login {
                    user: account.user_id.clone(),
                });
            }
        }
    }
}

/// The platform admin: approves (mostly) or rejects what the sellers confirmed.
async fn admin(client: Client, tenants: Vec<String>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut requests = 0;
    while requests < REQUESTS_PER_CLIENT && started.elapsed() < Duration::from_secs(60) {
        let next = client.load.review.lock().unwrap().pop();
        let Some(staged) = next else {
            if client.load.killed_at.get().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let approve = rng.gen_range(0..100) < 80;
        let (verb, body, status) = if approve {
            ("approve", json!({"note": "fine"}), "approved")
        } else {
            ("reject", json!({"reason": "not fine"}), "rejected")
        };
        requests += 1;
        let tenant = &tenants[staged.owner];
        let Some(r) = client
            .send(
                Method::POST,
                &format!("/v1/admin/review/objects/{tenant}/{}/{verb}", staged.object),
                Some(body),
                "review object",
            )
            .await
        else {
            return;
        };
        if r.status.is_success() {
            client.ack(Ack::Reviewed {
                owner: staged.owner,
                object: staged.object.clone(),
                status,
            });
            if approve && staged.listed {
                client.load.buyable.lock().unwrap().push(staged.object);
            }
        }
    }
}

async fn signup(server: &Server, email: &str) -> Account {
    let body = json!({"email": email, "password": PASSWORD, "display_name": "Crash", "tenant_name": "Crash"});
    let r = server
        .post("/v1/auth/signup", body)
        .await
        .unwrap()
        .expect(201);
    Account {
        email: email.to_owned(),
        token: r.data()["session_token"].as_str().unwrap().to_owned(),
        user_id: r.data()["user_id"].as_str().unwrap().to_owned(),
        tenant_id: r.data()["tenant_id"].as_str().unwrap().to_owned(),
    }
}

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.address))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request.send().await.unwrap()).await
}

/// Every page of a listing: the values of `field` in `items_key`.
async fn collect(
    server: &Server,
    path: &str,
    token: &str,
    items_key: &str,
    field: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{separator}limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = call(server, Method::GET, &url, token, None)
            .await
            .expect(200);
        for item in page.data()[items_key].as_array().unwrap() {
            out.insert(item[field].as_str().unwrap().to_owned());
        }
        match page.data()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Every row of every read model (the tables of every projection that is not a reactor), sorted.
async fn read_models(state: &ipto::AppState) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    for projection in state.store.engine.projections() {
        if projection.is_reactor() {
            continue;
        }
        for name in projection.tables() {
            let mut rows = table(state, &format!("SELECT * FROM {name}")).await;
            rows.sort();
            out.insert((*name).to_owned(), rows);
        }
    }
    out
}

/// What the load runs against, and what the kill takes away.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topology {
    /// One server, killed, then restarted on the same data.
    Restart,
    /// Three instances behind HAProxy; the first (which holds the projections' locks) is killed
    /// and the load goes on through the balancer.
    Fleet,
}

#[tokio::test]
async fn a_server_killed_under_a_mixed_write_load_keeps_every_acknowledged_write() {
    killed_under_load(Topology::Restart).await;
}

#[tokio::test]
async fn a_fleet_instance_killed_under_load_hands_its_projections_over_and_loses_nothing() {
    if !crate::fleet::available() {
        return;
    }
    killed_under_load(Topology::Fleet).await;
}

async fn killed_under_load(topology: Topology) {
    let seed: u64 = std::env::var("IPTO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let fresh = fresh().await;
    let env = [
        ("IPTO_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL),
        ("IPTO_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
    ];
    let (server, mut fleet) = match topology {
        Topology::Restart => (Server::start_with(&fresh, &env).await, None),
        Topology::Fleet => {
            let fleet = Fleet::start(&fresh, 3, &env).await;
            (Server::front(&fleet.address), Some(fleet))
        }
    };

    // Accounts, and one listed premium dataset with an approved object per seller.
    let admin_token = server
        .post(
            "/v1/auth/login",
            json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        )
        .await
        .unwrap()
        .expect(200)
        .data()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut accounts = Vec::new();
    for n in 0..SELLERS + BUYERS {
        accounts.push(signup(&server, &format!("crash-{n}-{seed}@example.com")).await);
    }
    let load = Arc::new(Load::default());
    let mut first_datasets = Vec::new();
    for (owner, account) in accounts.iter().take(SELLERS).enumerate() {
        let dataset = call(
            &server,
            Method::POST,
            "/v1/datasets",
            &account.token,
            Some(json!({"name": "Seed", "visibility": "listed", "monetization_mode": "premium"})),
        )
        .await
        .expect(201)
        .data()["dataset_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let initiated = call(
            &server,
            Method::POST,
            &format!("/v1/datasets/{dataset}/objects/upload"),
            &account.token,
            Some(json!({"filename": "seed.txt", "content_type": "text/plain", "size_bytes": 4})),
        )
        .await
        .expect(201);
        let object = initiated.data()["object_id"].as_str().unwrap().to_owned();
        let url = initiated.data()["upload_url"].as_str().unwrap();
        assert!(server
            .client
            .put(url)
            .body("seed")
            .send()
            .await
            .unwrap()
            .status()
            .is_success());
        let path = format!("/v1/objects/{object}/confirm");
        call(
            &server,
            Method::POST,
            &path,
            &account.token,
            Some(json!({})),
        )
        .await
        .expect(200);
        let path = format!(
            "/v1/admin/review/objects/{}/{object}/approve",
            account.tenant_id
        );
        call(&server, Method::POST, &path, &admin_token, Some(json!({})))
            .await
            .expect(200);
        load.buyable.lock().unwrap().push(object);
        load.listed.lock().unwrap().push(dataset.clone());
        first_datasets.push((owner, dataset));
    }
    let tenants: Vec<String> = accounts.iter().map(|a| a.tenant_id.clone()).collect();
    let buyer_tenants: Vec<String> = tenants[SELLERS..].to_vec();

    // The load; the kill comes after a random number of acknowledged writes.
    let client = |token: &str| Client {
        address: server.address.clone(),
        http: http_client(),
        token: token.to_owned(),
        load: load.clone(),
    };
    let mut clients = tokio::task::JoinSet::new();
    for (owner, dataset) in first_datasets {
        clients.spawn(seller(
            client(&accounts[owner].token),
            owner,
            dataset,
            buyer_tenants.clone(),
            rng.gen(),
        ));
    }
    for (me, account) in accounts.iter().enumerate().skip(SELLERS) {
        clients.spawn(buyer(
            client(&account.token),
            me,
            account.clone(),
            rng.gen(),
        ));
    }
    clients.spawn(admin(client(&admin_token), tenants.clone(), rng.gen()));
    let kill_after = rng.gen_range(40..300);
    let started = Instant::now();
    while load.acked.load(Ordering::SeqCst) < kill_after
        && !clients.is_empty()
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..5))).await;
    }
    let load_time = started.elapsed();
    let acked_at_kill = load.acked.load(Ordering::SeqCst);
    let (server, failover) = match fleet.as_mut() {
        None => {
            load.killed_at.set(Instant::now()).unwrap();
            server.kill();
            (None, None)
        }
        Some(fleet) => {
            // The log's end as a survivor sees it; then the instance holding the locks dies.
            let survivor = &Server::front(&fleet.instance(1).address);
            let before = slowest_projection(survivor).await.expect("health");
            let head = projections::log::head(&open(&fresh).await.store.db)
                .await
                .unwrap()
                .max(before);
            let killed = Instant::now();
            load.killed_at.set(killed).unwrap();
            fleet.kill(0);
            // A survivor's workers have taken over once every projection applied past the end
            // of the log at the kill (the load, and this signup, append beyond it).
            signup(survivor, &format!("after-kill-{seed}@example.com")).await;
            let deadline = killed + Duration::from_secs(30);
            loop {
                if slowest_projection(survivor).await.is_some_and(|p| p > head) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no instance took the projections over"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (Some(server), Some(killed.elapsed()))
        }
    };
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let acks = load.acks.lock().unwrap().clone();
    let in_flight = load.in_flight.lock().unwrap().clone();
    let refusals = load.refusals.lock().unwrap().clone();
    assert!(
        refusals.is_empty(),
        "writes were refused under load: {refusals:#?}"
    );
    if topology == Topology::Restart {
        assert!(
            !in_flight.is_empty() || load.refused.load(Ordering::SeqCst) > 0,
            "the kill came after the load had ended"
        );
    } else {
        assert!(
            acks.len() > acked_at_kill,
            "no write was acknowledged after the kill: the fleet stopped serving"
        );
    }

    // Restart on the same data, or go on with the survivors: the projections resume from their
    // checkpoints.
    let server = match server {
        Some(front) => front,
        None => Server::start_with(&fresh, &env).await,
    };
    server.settled().await;
    let token = |n: usize| accounts[n].token.as_str();
    let mut descriptions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut logins: BTreeMap<String, i64> = BTreeMap::new();
    let mut accesses: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for ack in &acks {
        match ack {
            Ack::Dataset { owner, dataset } => {
                call(
                    &server,
                    Method::GET,
                    &format!("/v1/datasets/{dataset}"),
                    token(*owner),
                    None,
                )
                .await
                .expect(200);
            }
            Ack::Described {
                dataset,
                description,
                ..
            } => {
                descriptions
                    .entry(dataset.clone())
                    .or_default()
                    .insert(description.clone());
            }
            Ack::Entitlement {
                owner,
                dataset,
                tenant,
            } => {
                let path = format!("/v1/datasets/{dataset}/entitlements");
                let entitled = collect(&server, &path, token(*owner), "items", "tenant_id").await;
                assert!(entitled.contains(tenant), "{ack:?} lost");
            }
            Ack::Initiated { owner, object } => {
                call(
                    &server,
                    Method::GET,
                    &format!("/v1/objects/{object}"),
                    token(*owner),
                    None,
                )
                .await
                .expect(200);
            }
            Ack::Uploaded => {}
            Ack::Confirmed { owner, object } => {
                let r = call(
                    &server,
                    Method::GET,
                    &format!("/v1/objects/{object}"),
                    token(*owner),
                    None,
                )
                .await
                .expect(200);
                let status = r.data()["status"].as_str().unwrap();
                assert!(
                    ["staged", "approved", "rejected"].contains(&status),
                    "{ack:?} lost: {status}"
                );
            }
            Ack::Reviewed {
                owner,
                object,
                status,
            } => {
                let r = call(
                    &server,
                    Method::GET,
                    &format!("/v1/objects/{object}"),
                    token(*owner),
                    None,
                )
                .await
                .expect(200);
                assert_eq!(r.data()["status"], *status, "{ack:?} lost");
            }
            Ack::ApiKey { owner, key } => {
                call(
                    &server,
                    Method::GET,
                    &format!("/v1/api-keys/{key}"),
                    token(*owner),
                    None,
                )
                .await
                .expect(200);
            }
            Ack::Granted { owner, key, grant } => {
                let r = call(
                    &server,
                    Method::GET,
                    &format!("/v1/api-keys/{key}"),
                    token(*owner),
                    None,
                )
                .await
                .expect(200);
                let grants: Vec<&str> = r.data()["grants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|g| g["grant_id"].as_str())
                    .collect();
                assert!(grants.contains(&grant.as_str()), "{ack:?} lost");
            }
            Ack::Download { buyer, access } => {
                accesses.entry(*buyer).or_default().insert(access.clone());
            }
            Ack::Login { user } => *logins.entry(user.clone()).or_default() += 1,
        }
    }
    for (buyer, acked) in &accesses {
        let listed = collect(
            &server,
            "/v1/agent/activity/accesses",
            token(*buyer),
            "accesses",
            "access_id",
        )
        .await;
        let lost: Vec<_> = acked.difference(&listed).collect();
        assert!(lost.is_empty(), "acknowledged downloads lost: {lost:?}");
    }
    for (dataset, acked) in &descriptions {
        let owner = acks
            .iter()
            .find_map(|a| match a {
                Ack::Described {
                    owner, dataset: d, ..
                } if d == dataset => Some(*owner),
                _ => None,
            })
            .unwrap();
        let r = call(
            &server,
            Method::GET,
            &format!("/v1/datasets/{dataset}"),
            token(owner),
            None,
        )
        .await
        .expect(200);
        // The last acknowledged edit, or one that was in flight after it.
        let last = acks
            .iter()
            .rev()
            .find_map(|a| match a {
                Ack::Described {
                    dataset: d,
                    description,
                    ..
                } if d == dataset => Some(description.clone()),
                _ => None,
            })
            .unwrap();
        let shown = r.data()["description"].as_str().unwrap_or("").to_owned();
        assert!(
            shown == last || (!acked.contains(&shown) && shown.starts_with("revision ")),
            "dataset {dataset} shows {shown:?}, last acknowledged {last:?}"
        );
    }
    server.stop();
    if let Some(fleet) = fleet {
        fleet.stop();
    }

    // The log holds every acknowledged login, each counted once; every projection is at the head.
    let state = open(&fresh).await;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&state.store.db.pool)
        .await
        .unwrap();
    let head = projections::log::head(&state.store.db).await.unwrap();
    for status in state.store.engine.statuses().await.unwrap() {
        if state
            .store
            .engine
            .projection(&status.name)
            .is_some_and(|p| !p.is_reactor())
        {
            assert_eq!(status.events_applied, events, "{status:?}");
            assert_eq!(status.position, head, "{status:?}");
        }
    }
    for (user, acked) in &logins {
        let logged: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE event_type = 'LoggedIn' \
             AND CAST(payload AS TEXT) LIKE '%' || $1 || '%'",
        )
        .bind(user)
        .fetch_one(&state.store.db.pool)
        .await
        .unwrap();
        assert!(
            logged >= *acked,
            "{logged} logins logged for {acked} acknowledged"
        );
    }
    let live = read_models(&state).await;
    state.store.close().await;

    // Every read model equals a rebuild from the log.
    let output = run(&fresh, &["projections", "rebuild", "--all"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let state = open(&fresh).await;
    let rebuilt = read_models(&state).await;
    state.store.close().await;
    for (name, rows) in &live {
        assert_eq!(
            rows, &rebuilt[name],
            "read model {name} differs from its rebuild"
        );
    }

    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for ack in &acks {
        *kinds.entry(ack.kind()).or_default() += 1;
    }
    // Writes in flight at the kill that committed all the same: rows beyond the acknowledged ones.
    let beyond = |table: &str, acked: &str, seeded: usize| {
        live[table].len() as i64 - (kinds.get(acked).copied().unwrap_or(0) + seeded) as i64
    };
    let landed = [
        ("datasets", beyond("datasets", "dataset created", SELLERS)),
        ("objects", beyond("objects", "upload initiated", SELLERS)),
        ("api_keys", beyond("api_keys", "API key created", 0)),
        ("accesses", beyond("accesses", "download bought", 0)),
    ];
    println!(
        "crash test ({topology:?}, seed {seed}, failover {failover:?}): killed after {:.2}s of load with {} acknowledged writes {kinds:?}; \
         {} requests in flight at the kill {in_flight:?} (unanswered but committed: {landed:?}), {} refused after it; \
         {events} events in the log; read models: {:?}",
        load_time.as_secs_f64(),
        acks.len(),
        in_flight.len(),
        load.refused.load(Ordering::SeqCst),
        live.iter().map(|(k, v)| (k.as_str(), v.len())).collect::<Vec<_>>(),
    );
    let _ = std::fs::remove_dir_all(&fresh.data_dir);
    drop_database(&fresh.database_url).await;
}
