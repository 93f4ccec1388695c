//! The `ipto` client, black-box: the real binary against a server on a random port, with its own
//! configuration file.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_ipto");

/// A client's home: its configuration file and environment.
struct Client {
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// Whether dropping it removes `dir`.
    owned: bool,
}

impl Client {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ipto-client-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            env: Vec::new(),
            owned: true,
        }
    }

    /// The same home with other environment variables.
    fn sharing(&self, env: &[(&str, &str)]) -> Self {
        Self {
            dir: self.dir.clone(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owned: false,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs `ipto ARGS` with `stdin` piped in.
    async fn run_with_input(&self, args: &[&str], stdin: &str) -> Output {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("IPTO_CONFIG", self.config())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("ipto runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        child.wait_with_output().await.unwrap()
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, "").await
    }

    /// Runs `ipto ARGS`; what it printed.
    async fn stdout(&self, args: &[&str]) -> String {
        text(&self.run(args).await.stdout)
    }

    /// Runs `ipto ARGS --output json`, which must succeed; its document.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = self.run(&all).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&output.stdout)))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn each_credential_form_logs_in_and_whoami_tells_who() {
    let app = spawn_app().await;
    let email = email();
    let (token, user_id, tenant_id) = app.signup(&email).await;
    let client = Client::new();
    let url = app.address.clone();
    assert!(client
        .run(&["config", "set", "api_url", &url])
        .await
        .status
        .success());

    // E-mail and password, the password piped on standard input (never an argument).
    let output = client
        .run_with_input(&["login", "--email", &email], &format!("{PASSWORD}\n"))
        .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains(&email));
    assert_eq!(mode(&client.config()), 0o600);
    let stored = std::fs::read_to_string(client.config()).unwrap();
    assert!(stored.contains("session_token") && !stored.contains(PASSWORD));

    let me = client.json(&["whoami"]).await;
    assert_eq!(me["user_id"], json!(user_id));
    assert_eq!(me["tenant_id"], json!(tenant_id));
    assert_eq!(me["principal_type"], "user");
    let table = client.stdout(&["whoami"]).await;
    for part in [
        email.as_str(),
        tenant_id.as_str(),
        "owner",
        "datasets:read",
        "user",
    ] {
        assert!(table.contains(part), "whoami shows {part}: {table}");
    }

    // Logout ends the session on the server, then forgets it.
    let session = stored
        .lines()
        .find_map(|l| l.strip_prefix("session_token = \""))
        .map(|s| s.trim_end_matches('"').to_owned())
        .unwrap();
    assert!(client.run(&["logout"]).await.status.success());
    app.get("/v1/me", Some(&session)).await.expect(401);
    let output = client.run(&["whoami"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("not logged in"));

    // A session token, and an API key (into another profile).
    let login = client.json(&["login", "--token", &token]).await;
    assert_eq!(login["user_id"], json!(user_id));
    let key = app
        .post(
            "/v1/api-keys",
            Some(&token),
            json!({"name": "cli", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201);
    let key_id = key.data()["api_key_id"].as_str().unwrap().to_owned();
    let full = key.data()["key"].as_str().unwrap().to_owned();
    let output = client
        .run(&["login", "--profile", "ci", "--api-key", &full])
        .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let me = client.json(&["whoami", "--profile", "ci"]).await;
    assert_eq!(me["principal_type"], "api_key");
    assert_eq!(me["api_key_id"], json!(key_id));
    assert_eq!(me["scopes"], json!(["datasets:read"]));
    // Logging out of a key forgets it without revoking it.
    assert!(client
        .run(&["logout", "--profile", "ci"])
        .await
        .status
        .success());
    let revoked = app
        .get(&format!("/v1/api-keys/{key_id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(revoked.data()["status"], "active");

    // A credential the server refuses is not kept; the API's code and request id are printed.
    let output = client.run(&["login", "--api-key", "ipto_not_a_key"]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("unauthorized") && stderr.contains("req_"),
        "{stderr}"
    );
    let wrong = client
        .run_with_input(&["login", "--email", &email], "wrong password\n")
        .await;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong.stderr).contains("invalid_credentials"));
    assert_eq!(client.json(&["whoami"]).await["user_id"], json!(user_id));
    app.finish().await;
}

#[tokio::test]
async fn the_environment_wins_over_the_file_and_the_flag_over_the_environment() {
    let app = spawn_app().await;
    let (token, user_id, _) = app.signup(&email()).await;
    let key = app
        .post(
            "/v1/api-keys",
            Some(&token),
            json!({"name": "env", "scopes": ["datasets:read"]}),
        )
        .await
        .expect(201);
    let full = key.data()["key"].as_str().unwrap().to_owned();
    let client = Client::new();
    let url = app.address.clone();
    for (key, value) in [
        ("profiles.work.api_url", url.as_str()),
        ("profiles.work.session_token", token.as_str()),
        ("profiles.dead.api_url", "http://127.0.0.1:9"),
        ("profiles.dead.api_key", "ipto_unused"),
        ("default_profile", "work"),
    ] {
        let output = client.run(&["config", "set", key, value]).await;
        assert!(output.status.success(), "{key}: {}", text(&output.stderr));
        // A secret is never printed back.
        assert!(!text(&output.stdout).contains(&token));
    }
    assert_eq!(client.json(&["whoami"]).await["user_id"], json!(user_id));

    // IPTO_API_KEY wins over the profile's session; IPTO_API_URL over its server.
    let with_key = client.sharing(&[("IPTO_API_KEY", &full)]);
    assert_eq!(
        with_key.json(&["whoami"]).await["principal_type"],
        "api_key"
    );
    let elsewhere = Client::new()
        .with("IPTO_API_URL", &url)
        .with("IPTO_API_KEY", &full);
    assert_eq!(
        elsewhere.json(&["whoami"]).await["principal_type"],
        "api_key"
    );

    // IPTO_PROFILE names the profile, and --profile wins over it.
    let dead = client.sharing(&[("IPTO_PROFILE", "dead")]);
    let output = dead.run(&["whoami"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("cannot reach"));
    assert_eq!(
        dead.json(&["whoami", "--profile", "work"]).await["user_id"],
        json!(user_id)
    );

    let profiles = client.json(&["config", "profiles"]).await;
    assert_eq!(
        profiles,
        json!([{"name": "work", "active": true}, {"name": "dead", "active": false}])
    );
    let all = client.json(&["config", "get"]).await;
    assert_eq!(all["profiles"]["work"]["session_token"], "(set)");
    assert_eq!(all["profiles"]["work"]["api_url"], json!(url));
    assert!(!all.to_string().contains(&token));
    let one = client
        .json(&["config", "get", "profiles.work.session_token"])
        .await;
    assert_eq!(one["profiles.work.session_token"], "(set)");

    // Usage errors exit 2: an unknown key, two credential forms at once.
    let output = client.run(&["config", "set", "colour", "blue"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("unknown key"));
    let output = client
        .run(&["login", "--api-key", "a", "--token", "b"])
        .await;
    assert_eq!(output.status.code(), Some(2));
    app.finish().await;
}

#[tokio::test]
async fn datasets_round_trip_through_the_client() {
    let app = spawn_app().await;
    let (token, _, tenant_id) = app.signup(&email()).await;
    let client = Client::new()
        .with("IPTO_API_URL", &app.address)
        .with("IPTO_PROFILE", "p");
    assert!(client
        .run(&["login", "--token", &token])
        .await
        .status
        .success());

    let created = client
        .json(&[
            "datasets",
            "create",
            "--name",
            "Invoices",
            "--description",
            "2025",
            "--modality",
            "document",
            "--pricing",
            "fixed",
            "--price",
            "0.05",
            "--visibility",
            "listed",
        ])
        .await;
    let id = created["dataset_id"].as_str().unwrap().to_owned();
    assert_eq!(created["tenant_id"], json!(tenant_id));
    assert_eq!(created["price_per_result"], json!(0.05));
    assert_eq!(created["visibility"], "listed");
    for name in ["Second", "Third"] {
        client.json(&["datasets", "create", "--name", name]).await;
    }
    let table = client.stdout(&["datasets", "list"]).await;
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("NAME") && header.contains("OBJECTS"));
    assert!(table.contains(&id) && table.contains("Invoices"), "{table}");
    // --all follows the cursor; without it, one page.
    let page = client.json(&["datasets", "list", "--limit", "2"]).await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    let all = client
        .json(&["datasets", "list", "--limit", "2", "--all"])
        .await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Third", "Second", "Invoices"]);

    let updated = client
        .json(&[
            "datasets", "update", &id, "--status", "active", "--price", "1.5",
        ])
        .await;
    assert_eq!(updated["status"], "active");
    assert_eq!(updated["price_per_result"], json!(1.5));
    assert_eq!(client.json(&["datasets", "get", &id]).await, updated);
    let shown = client.stdout(&["datasets", "get", &id]).await;
    assert!(shown.contains("status: active"), "{shown}");

    // The server's 422 reaches the user with its code; nothing changed.
    let output = client
        .run(&["datasets", "update", &id, "--price", "0.1234567"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("validation_failed"),
        "{}",
        text(&output.stderr)
    );
    // Another tenant's dataset, or an id that tries another route, is 404.
    let (other, _, _) = app.signup(&email()).await;
    let theirs = app.dataset(&other, json!({"name": "Theirs"})).await;
    for bad in [theirs.as_str(), "../auth/logout", "x?status=active"] {
        let output = client.run(&["datasets", "get", bad]).await;
        assert_eq!(output.status.code(), Some(1), "{bad}");
        assert!(
            text(&output.stderr).contains("not_found"),
            "{bad}: {}",
            text(&output.stderr)
        );
    }

    // No terminal to ask on: deleting needs --confirm.
    let output = client.run(&["datasets", "delete", &id]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        client.json(&["datasets", "get", &id]).await["status"],
        "active"
    );
    let deleted = client.json(&["datasets", "delete", &id, "--confirm"]).await;
    assert_eq!(deleted["status"], "pending_deletion");
    app.finish().await;
}

#[tokio::test]
async fn a_directory_tree_uploads_once_and_a_rerun_uploads_nothing() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.max_object_bytes = 4096;
    let app = spawn_with(config).await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset = app.dataset(&token, json!({"name": "Tree"})).await;
    let client = Client::new().with("IPTO_API_URL", &app.address);
    assert!(client
        .run(&["login", "--token", &token])
        .await
        .status
        .success());

    let tree = client.dir.join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    let files = [
        ("one.txt", "first file\n".to_owned()),
        ("a/two.json", "{\"n\": 2}".to_owned()),
        ("a/b/three.csv", "x,y\n1,2\n".to_owned()),
        ("a/b/four.md", "# four".to_owned()),
    ];
    for (name, body) in &files {
        std::fs::write(tree.join(name), body).unwrap();
    }
    let tree_arg = tree.display().to_string();

    // A directory needs --recursive.
    let output = client
        .run(&["objects", "upload", &dataset, &tree_arg])
        .await;
    assert_eq!(output.status.code(), Some(2));

    let summary = client
        .json(&[
            "objects",
            "upload",
            &dataset,
            &tree_arg,
            "--recursive",
            "--metadata",
            "batch=1",
        ])
        .await;
    assert_eq!(
        summary["uploaded"].as_array().unwrap().len(),
        4,
        "{summary}"
    );
    assert_eq!(summary["failed"], json!([]));
    let listed = app
        .get(&format!("/v1/datasets/{dataset}/objects"), Some(&token))
        .await
        .expect(200);
    let objects = listed.data()["items"].as_array().unwrap().clone();
    assert_eq!(objects.len(), 4);
    for (name, body) in &files {
        let filename = name.rsplit('/').next().unwrap();
        let object = objects.iter().find(|o| o["filename"] == *filename).unwrap();
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        assert_eq!(object["checksum_sha256"], json!(sha), "{name}");
        assert_eq!(object["status"], "staged");
        assert_eq!(object["metadata"]["batch"], "1");
        assert_eq!(
            object["metadata"]["path"],
            json!(tree.join(name).display().to_string())
        );
        let expected_type = match filename.rsplit('.').next().unwrap() {
            "txt" => "text/plain",
            "json" => "application/json",
            "csv" => "text/csv",
            _ => "text/markdown",
        };
        assert_eq!(object["content_type"], expected_type, "{name}");
    }

    // Again: every checksum is in the dataset, nothing is uploaded.
    let again = client
        .json(&["objects", "upload", &dataset, &tree_arg, "--recursive"])
        .await;
    assert_eq!(again["uploaded"], json!([]));
    assert_eq!(again["skipped"].as_array().unwrap().len(), 4);

    // One file over the server's limit fails alone; the others go up and the exit is 1.
    std::fs::write(tree.join("big.bin"), vec![7u8; 5000]).unwrap();
    std::fs::write(tree.join("new.txt"), "new").unwrap();
    let output = client
        .run(&["objects", "upload", &dataset, &tree_arg, "--recursive"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let out = text(&output.stdout);
    assert!(
        out.contains("1 uploaded, 4 skipped") && out.contains("1 failed"),
        "{out}"
    );
    assert!(
        out.contains("big.bin") && out.contains("validation_failed"),
        "{out}"
    );

    let table = client.stdout(&["objects", "list", &dataset]).await;
    assert!(
        table.starts_with("ID") && table.contains("new.txt"),
        "{table}"
    );
    let id = objects[0]["object_id"].as_str().unwrap();
    assert_eq!(
        client.json(&["objects", "get", id]).await["object_id"],
        json!(id)
    );
    assert_eq!(
        client.json(&["objects", "delete", id]).await["status"],
        "deleted"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_key_made_with_the_client_searches_and_is_charged() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let fields = json!({"name": "Regions", "visibility": "listed", "monetization_mode": "premium",
        "price_per_result": "0.05", "status": "active"});
    let dataset = app.dataset(&seller, fields).await;
    let object = app
        .staged_object(
            &seller,
            &dataset,
            b"the quarterly invoices of the northern region",
        )
        .await;
    app.post(
        &format!("/v1/admin/review/objects/{seller_tenant}/{object}/approve"),
        Some(&admin),
        json!({}),
    )
    .await
    .expect(200);
    settled(&app.state).await;

    let (buyer, _, _) = app.signup(&email()).await;
    let client = Client::new().with("IPTO_API_URL", &app.address);
    assert!(client
        .run(&["login", "--token", &buyer])
        .await
        .status
        .success());
    let output = client
        .run(&[
            "keys",
            "create",
            "--name",
            "agent",
            "--scopes",
            "search:query,datasets:read",
        ])
        .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = text(&output.stdout);
    let key = shown
        .lines()
        .find(|l| l.starts_with("ipto_"))
        .unwrap_or_else(|| panic!("the key is printed once: {shown}"))
        .to_owned();
    assert!(shown.contains("shown once"));
    let listed = client.stdout(&["keys", "list"]).await;
    assert!(
        listed.contains("agent") && listed.contains("datasets:read,search:query"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "a listing never shows the secret");

    assert!(client
        .run(&["login", "--profile", "agent", "--api-key", &key])
        .await
        .status
        .success());
    let answer = client
        .json(&[
            "search",
            "northern invoices",
            "--profile",
            "agent",
            "--mode",
            "lexical",
        ])
        .await;
    assert_eq!(answer["result_count"], 1, "{answer}");
    assert_eq!(answer["results"][0]["object_id"], json!(object));
    assert_eq!(answer["charged_amount"], json!(0.05));
    let table = client
        .stdout(&[
            "search",
            "northern invoices",
            "--profile",
            "agent",
            "--mode",
            "lexical",
        ])
        .await;
    assert!(
        table.starts_with("SCORE") && table.contains("Regions"),
        "{table}"
    );
    assert!(table.contains("0.05 USD charged in all"), "{table}");

    let passages = client
        .json(&[
            "retrieve",
            "northern invoices",
            "--profile",
            "agent",
            "--mode",
            "lexical",
            "--top-k",
            "3",
        ])
        .await;
    let units = passages["units"].as_array().unwrap();
    assert!(!units.is_empty() && units.len() <= 3, "{passages}");
    assert_eq!(units[0]["object_id"], json!(object));
    assert!(units[0]["text"].as_str().unwrap().contains("northern"));
    let table = client
        .stdout(&[
            "retrieve",
            "northern invoices",
            "--profile",
            "agent",
            "--mode",
            "lexical",
        ])
        .await;
    assert!(
        table.starts_with("SCORE") && table.contains("USD charged in all"),
        "{table}"
    );

    // The reports answer what the API answers, for the buyer and for the seller.
    assert!(client
        .run(&["login", "--profile", "seller", "--token", &seller])
        .await
        .status
        .success());
    let since = (chrono::Utc::now() - chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let spend_path = format!("/v1/agent/spend?from={since}");
    let reports: [(&[&str], &str, &str); 7] = [
        (&["dashboard", "--buyer"], "/v1/buyer/dashboard", "buyer"),
        (&["spend", "--from", &since], &spend_path, "buyer"),
        (
            &["activity", "searches"],
            "/v1/agent/activity/searches",
            "buyer",
        ),
        (
            &["activity", "accesses"],
            "/v1/agent/activity/accesses",
            "buyer",
        ),
        (
            &["dashboard", "--profile", "seller"],
            "/v1/provider/dashboard",
            "seller",
        ),
        (
            &["payouts", "--profile", "seller"],
            "/v1/provider/payouts",
            "seller",
        ),
        (
            &["analytics", &dataset, "--profile", "seller"],
            &format!("/v1/provider/datasets/{dataset}/analytics"),
            "seller",
        ),
    ];
    for (args, path, who) in reports {
        let token = if who == "buyer" { &buyer } else { &seller };
        let api = app.get(path, Some(token)).await.expect(200);
        let expected = match args[0] {
            "activity" => api.data()[args[1]].clone(),
            "payouts" => api.data()["items"].clone(),
            _ => api.data().clone(),
        };
        assert_eq!(client.json(args).await, expected, "{args:?}");
        let table = client.run(args).await;
        assert!(
            table.status.success() && !table.stdout.is_empty(),
            "{args:?}"
        );
    }
    let searches = client.stdout(&["activity", "searches"]).await;
    assert!(
        searches.starts_with("ID") && searches.contains("northern invoices"),
        "{searches}"
    );

    // Revoked with the client, the key is refused: an API error, exit 1.
    let keys = client.json(&["keys", "list"]).await;
    let key_id = keys[0]["api_key_id"].as_str().unwrap().to_owned();
    assert_eq!(
        client.json(&["keys", "revoke", &key_id]).await["status"],
        "revoked"
    );
    let output = client
        .run(&["search", "northern", "--profile", "agent"])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("unauthorized"));
    app.finish().await;
}

#[tokio::test]
async fn platform_admins_review_with_the_client() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (seller, _, tenant) = app.signup(&email()).await;
    let dataset = app.dataset(&seller, json!({"name": "Review me"})).await;
    let first = app.staged_object(&seller, &dataset, b"first").await;
    let second = app.staged_object(&seller, &dataset, b"second").await;
    let client = Client::new().with("IPTO_API_URL", &app.address);
    assert!(client
        .run(&["login", "--token", &admin])
        .await
        .status
        .success());

    let queue = client.json(&["review", "queue", "--all"]).await;
    let queued: Vec<&str> = queue
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["object_id"].as_str().unwrap())
        .collect();
    assert!(queued.contains(&first.as_str()) && queued.contains(&second.as_str()));
    let shown = client.json(&["review", "show", &tenant, &first]).await;
    assert_eq!(shown["object_id"], json!(first));
    let preview = client.json(&["review", "preview", &tenant, &first]).await;
    assert!(preview.to_string().contains("http"), "{preview}");

    let approved = client
        .json(&["review", "approve", &tenant, &first, "--note", "fine"])
        .await;
    assert_eq!(approved["status"], "approved");
    let rejected = client
        .json(&["review", "reject", &tenant, &second, "--reason", "blurry"])
        .await;
    assert_eq!(rejected["rejection_reason"], "blurry");
    let object = app
        .get(&format!("/v1/objects/{first}"), Some(&seller))
        .await
        .expect(200);
    assert_eq!(object.data()["status"], "approved");

    // A seller's session is not an admin's: the API's 403, exit 1.
    let seller_client = Client::new().with("IPTO_API_URL", &app.address);
    assert!(seller_client
        .run(&["login", "--token", &seller])
        .await
        .status
        .success());
    let output = seller_client.run(&["review", "queue"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("forbidden"),
        "{}",
        text(&output.stderr)
    );
    app.finish().await;
}

#[tokio::test]
async fn skill_install_merges_the_mcp_entry_into_claude_code_and_codex_configs() {
    let client = Client::new().with("IPTO_PROFILE", "agents");
    let project = client.dir.join("project");
    std::fs::create_dir_all(project.join(".codex")).unwrap();
    std::fs::write(
        project.join(".mcp.json"),
        r#"{"mcpServers":{"other":{"command":"other-server"}},"note":"kept"}"#,
    )
    .unwrap();
    std::fs::write(
        project.join(".codex/config.toml"),
        "# my settings\nmodel = \"o4\"\n\n[mcp_servers.other]\ncommand = \"other-server\"\n",
    )
    .unwrap();
    let dir = project.display().to_string();
    for agent in ["--claude-code", "--openai"] {
        let output = client
            .run(&["skill", "install", agent, "--project", &dir])
            .await;
        assert!(output.status.success(), "{}", text(&output.stderr));
    }

    let claude: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join(".mcp.json")).unwrap()).unwrap();
    assert_eq!(claude["note"], "kept");
    assert_eq!(claude["mcpServers"]["other"]["command"], "other-server");
    let entry = &claude["mcpServers"]["ipto"];
    assert_eq!(
        entry["command"],
        json!(std::fs::canonicalize(BIN).unwrap().display().to_string())
    );
    assert_eq!(entry["args"], json!(["mcp", "--profile", "agents"]));
    assert_eq!(
        entry["env"]["IPTO_CONFIG"],
        json!(client.config().display().to_string())
    );

    let codex = std::fs::read_to_string(project.join(".codex/config.toml")).unwrap();
    assert!(
        codex.starts_with("# my settings\nmodel = \"o4\"\n"),
        "{codex}"
    );
    assert!(codex.contains("[mcp_servers.other]") && codex.contains("[mcp_servers.ipto]"));
    assert!(
        codex.contains(r#"args = ["mcp", "--profile", "agents"]"#),
        "{codex}"
    );

    // No credential is ever written into an agent's configuration.
    let with_key = client.sharing(&[("IPTO_API_KEY", "ipto_secret_value")]);
    assert!(with_key
        .run(&["skill", "install", "--claude-code", "--project", &dir])
        .await
        .status
        .success());
    assert!(!std::fs::read_to_string(project.join(".mcp.json"))
        .unwrap()
        .contains("ipto_secret_value"));

    // A file that does not parse is left as it is, and the command fails.
    std::fs::write(project.join(".mcp.json"), "{ not json").unwrap();
    let output = client
        .run(&["skill", "install", "--claude-code", "--project", &dir])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(project.join(".mcp.json")).unwrap(),
        "{ not json"
    );
}

/// The consistency header across commands: a command that wrote keeps the log position it reached
/// beside the configuration, per profile and server, and the profile's next command sends it.
#[tokio::test]
async fn a_profiles_next_command_sends_the_log_position_its_last_write_reached() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let client = Client::new()
        .with("IPTO_API_URL", &app.address)
        .with("IPTO_PROFILE", "writer");
    assert!(client
        .run(&["login", "--token", &token])
        .await
        .status
        .success());
    let positions = client.dir.join("positions");
    let kept = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    client.json(&["datasets", "create", "--name", "Kept"]).await;
    let files = kept(&positions);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("writer-"));
    assert_eq!(mode(file), 0o600);
    let written = std::fs::read_to_string(file).unwrap();
    let (tx, at) = written.split_once('.').expect("TX.POSITION");
    assert!(
        tx.parse::<u64>().is_ok() && at.parse::<u64>().unwrap() > 0,
        "{written}"
    );
    // A read sends it (and keeps it: a read reaches no further).
    assert!(client.run(&["datasets", "list"]).await.status.success());
    assert_eq!(std::fs::read_to_string(file).unwrap(), written);
    // What the next command sends is what the file holds: one past the log is refused.
    std::fs::write(file, "999999999.999999999").unwrap();
    let refused = client.run(&["datasets", "list"]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("invalid_request"),
        "{}",
        text(&refused.stderr)
    );
    // Another profile on the same server keeps its own.
    let other = client.sharing(&[("IPTO_API_URL", &app.address), ("IPTO_PROFILE", "reader")]);
    assert!(other
        .run(&["login", "--token", &token])
        .await
        .status
        .success());
    assert!(other.run(&["datasets", "list"]).await.status.success());
    app.finish().await;
}
