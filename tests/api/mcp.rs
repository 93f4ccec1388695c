//! The MCP tools, black-box: `/mcp` on the server (streamable HTTP) and `ipto mcp` (stdio) spoken
//! to as JSON-RPC, their answers checked against the API. (`.ci/mcp` drives both with the official
//! Python SDK as well.)

use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::*;

const PROTOCOL: &str = "2026-07-28";

/// Every tool, by name.
const TOOLS: [&str; 10] = [
    "ipto_analytics",
    "ipto_datasets_create",
    "ipto_datasets_list",
    "ipto_keys_create",
    "ipto_objects_download",
    "ipto_objects_list",
    "ipto_retrieve",
    "ipto_search",
    "ipto_spend",
    "ipto_upload",
];

/// A key of a fresh provider with `scopes`, and the provider's session.
async fn agent_key(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let (session, _, _) = app.signup(&email()).await;
    let key = app
        .api_key(&session, json!({ "name": "agent", "scopes": scopes }))
        .await;
    (key, session)
}

/// One JSON-RPC request to `/mcp` with `headers`: the status and the body.
async fn rpc(app: &TestApp, headers: &[(&str, &str)], method: &str, params: Value) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/mcp", app.address))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .header("mcp-method", method)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }));
    if let Some(name) = params["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `tools/call NAME ARGS` over `/mcp` with `key`: the tool's result.
async fn call(app: &TestApp, key: &str, name: &str, arguments: Value) -> Value {
    let bearer = format!("Bearer {key}");
    let params = json!({
        "name": name,
        "arguments": arguments,
        "_meta": meta(),
    });
    let (status, body) = rpc(app, &[("authorization", &bearer)], "tools/call", params).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

/// The per-request metadata of the stateless protocol.
fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
        "io.modelcontextprotocol/clientInfo": { "name": "ipto-tests", "version": "1" },
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

#[tokio::test]
async fn mcp_over_http_refuses_a_missing_or_bad_credential_before_any_tool() {
    let app = spawn_app().await;
    let (key, session) = agent_key(&app, &["datasets:read"]).await;
    let list = json!({ "_meta": meta() });
    for headers in [
        vec![],
        vec![("authorization", "Bearer ipto_0000000000000000000000000000")],
        vec![("x-api-key", "ipto_0000000000000000000000000000")],
    ] {
        let (status, body) = rpc(&app, &headers, "tools/list", list.clone()).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
    }
    // The tools act for keys: a session token is refused too.
    let bearer = format!("Bearer {session}");
    let (status, _) = rpc(
        &app,
        &[("authorization", &bearer)],
        "tools/list",
        list.clone(),
    )
    .await;
    assert_eq!(status, 401);

    for header in ["authorization", "x-api-key"] {
        let value = if header == "authorization" {
            format!("Bearer {key}")
        } else {
            key.clone()
        };
        let (status, body) = rpc(&app, &[(header, &value)], "tools/list", list.clone()).await;
        assert_eq!(status, 200, "{body}");
        let mut names: Vec<&str> = body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, TOOLS);
        for tool in body["result"]["tools"].as_array().unwrap() {
            assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn mcp_tools_act_within_the_keys_scopes_and_report_api_errors_as_tool_errors() {
    let app = spawn_app().await;
    let (key, _) = agent_key(&app, &["datasets:read", "datasets:write", "objects:write"]).await;

    let created = call(
        &app,
        &key,
        "ipto_datasets_create",
        json!({ "name": "Tides" }),
    )
    .await;
    assert_eq!(created["isError"], false, "{created}");
    let dataset = created["structuredContent"]["dataset_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(created["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains(&dataset));

    let bytes = "high water at 06:12\n";
    let uploaded = call(
        &app,
        &key,
        "ipto_upload",
        json!({ "dataset_id": dataset, "content": bytes, "filename": "tides.txt" }),
    )
    .await;
    assert_eq!(uploaded["isError"], false, "{uploaded}");
    let object = &uploaded["structuredContent"];
    assert_eq!(object["status"], "staged");
    assert_eq!(object["content_type"], "text/plain");
    let id = object["object_id"].as_str().unwrap();
    let stored = app
        .get(&format!("/v1/objects/{id}"), Some(&key))
        .await
        .expect(200);
    assert_eq!(stored.data()["status"], "staged");
    let listed = call(
        &app,
        &key,
        "ipto_objects_list",
        json!({ "dataset_id": dataset }),
    )
    .await;
    let items = listed["structuredContent"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["checksum_sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
    );

    // The server's own files are out of reach, and refusing costs nothing.
    let refused = call(
        &app,
        &key,
        "ipto_upload",
        json!({ "dataset_id": dataset, "path": "/etc/passwd" }),
    )
    .await;
    assert_eq!(refused["isError"], true);
    assert_eq!(
        refused["structuredContent"]["error"]["code"],
        "invalid_input"
    );
    let listed = call(
        &app,
        &key,
        "ipto_objects_list",
        json!({ "dataset_id": dataset }),
    )
    .await;
    assert_eq!(
        listed["structuredContent"]["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A scope the key lacks: the API's 403 as a tool error with its code and request id.
    let search = call(&app, &key, "ipto_search", json!({ "query": "tides" })).await;
    assert_eq!(search["isError"], true, "{search}");
    assert_eq!(search["structuredContent"]["error"]["code"], "forbidden");
    let request_id = search["structuredContent"]["request_id"].as_str().unwrap();
    assert!(request_id.starts_with("req_"), "{search}");
    assert!(search["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains(request_id));

    // Another tenant's dataset is not found, as over the API.
    let (other, _) = agent_key(&app, &["datasets:read"]).await;
    let foreign = call(
        &app,
        &other,
        "ipto_objects_list",
        json!({ "dataset_id": dataset }),
    )
    .await;
    assert_eq!(foreign["structuredContent"]["error"]["code"], "not_found");
    app.finish().await;
}

#[tokio::test]
async fn mcp_requests_take_from_the_keys_rate_limit() {
    let fresh = fresh().await;
    let mut config = config(&fresh);
    config.rate_limit_per_minute = 3;
    let app = spawn_with(config).await;
    let (key, _) = agent_key(&app, &["datasets:read"]).await;
    let bearer = format!("Bearer {key}");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _) = rpc(
            &app,
            &[("authorization", &bearer)],
            "tools/list",
            json!({ "_meta": meta() }),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    app.finish().await;
}

/// `ipto mcp` as an agent runs it: JSON-RPC lines on its standard input and output.
struct Agent {
    child: tokio::process::Child,
    input: tokio::process::ChildStdin,
    output: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next_id: u64,
}

impl Agent {
    async fn start(app: &TestApp, key: &str, home: &std::path::Path) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ipto"))
            .arg("mcp")
            .env_clear()
            .env("HOME", home)
            .env("IPTO_CONFIG", home.join("config.toml"))
            .env("IPTO_API_URL", &app.address)
            .env("IPTO_API_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stdio = Self {
            child,
            input,
            output,
            next_id: 0,
        };
        let info = stdio
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": { "name": "ipto-tests", "version": "1" },
                }),
            )
            .await;
        assert_eq!(info["result"]["serverInfo"]["name"], "ipto", "{info}");
        stdio
            .send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        stdio
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.input.write_all(line.as_bytes()).await.unwrap();
        self.input.flush().await.unwrap();
    }

    /// Sends a request; its response (notifications in between are skipped).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await;
        loop {
            let line =
                tokio::time::timeout(std::time::Duration::from_secs(30), self.output.next_line())
                    .await
                    .expect("ipto mcp answers")
                    .unwrap()
                    .expect("ipto mcp is still running");
            let message: Value = serde_json::from_str(&line).unwrap();
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    async fn call(&mut self, name: &str, arguments: Value) -> Value {
        self.request(
            "tools/call",
            json!({ "name": name, "arguments": arguments }),
        )
        .await["result"]
            .clone()
    }

    async fn close(mut self) {
        drop(self.input);
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait())
            .await
            .expect("ipto mcp ends with its input")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

#[tokio::test]
async fn ipto_mcp_on_stdio_uploads_local_files_lists_and_downloads_them_verified() {
    let app = spawn_app().await;
    let (key, _) = agent_key(&app, &["datasets:read", "datasets:write", "objects:write"]).await;
    let home = std::env::temp_dir().join(format!("ipto-mcp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&home).unwrap();
    let file = home.join("notes.md");
    std::fs::write(&file, "# Notes\nlow water at 12:30\n").unwrap();

    let mut mcp = Agent::start(&app, &key, &home).await;
    let tools = mcp.request("tools/list", json!({})).await;
    assert_eq!(
        tools["result"]["tools"].as_array().unwrap().len(),
        TOOLS.len()
    );

    let created = mcp
        .call("ipto_datasets_create", json!({ "name": "Notes" }))
        .await;
    let dataset = created["structuredContent"]["dataset_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = mcp.call("ipto_datasets_list", json!({})).await;
    let api = app.get("/v1/datasets", Some(&key)).await.expect(200);
    assert_eq!(listed["structuredContent"]["items"], api.data()["items"]);
    assert_eq!(
        listed["structuredContent"]["items"][0]["dataset_id"],
        json!(dataset)
    );

    let uploaded = mcp
        .call(
            "ipto_upload",
            json!({ "dataset_id": dataset, "path": file.display().to_string() }),
        )
        .await;
    assert_eq!(uploaded["isError"], false, "{uploaded}");
    let object = &uploaded["structuredContent"];
    assert_eq!(object["filename"], "notes.md");
    assert_eq!(object["content_type"], "text/markdown");
    assert_eq!(
        object["metadata"]["path"],
        json!(file.display().to_string())
    );
    let id = object["object_id"].as_str().unwrap().to_owned();

    let target = home.join("copy.md");
    let saved = mcp
        .call(
            "ipto_objects_download",
            json!({ "object_id": id, "save_to": target.display().to_string() }),
        )
        .await;
    assert_eq!(saved["isError"], false, "{saved}");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&file).unwrap()
    );

    // Arguments that break the schema are the protocol's error, not a crash.
    let broken = mcp
        .request(
            "tools/call",
            json!({ "name": "ipto_upload", "arguments": { "dataset_id": 7 } }),
        )
        .await;
    assert!(
        broken.get("error").is_some() || broken["result"]["isError"] == true,
        "{broken}"
    );
    let still = mcp.call("ipto_datasets_list", json!({})).await;
    assert_eq!(still["isError"], false);

    mcp.close().await;
    let _ = std::fs::remove_dir_all(&home);
    app.finish().await;
}
