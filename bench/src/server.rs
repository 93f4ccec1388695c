//! Processes under test: the release `ipto` binary (serve, rebuild) on a scratch database, and the
//! empty axum route that is the ceiling of HTTP reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a run keeps its data: a scratch directory and database URL.
pub struct Scratch {
    pub dir: PathBuf,
    pub database_url: String,
    /// The PostgreSQL server URL the database was created on (`None` for SQLite).
    server: Option<String>,
}

impl Scratch {
    /// A new SQLite file, or a new database on the PostgreSQL server `postgres`.
    pub async fn create(root: &Path, postgres: Option<&str>) -> Result<Self, String> {
        let name = format!("ipto_bench_{}", uuid::Uuid::new_v4().simple());
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let Some(server) = postgres else {
            return Ok(Self {
                database_url: format!("sqlite://{}", dir.join("ipto.db").display()),
                dir,
                server: None,
            });
        };
        admin(server, &format!("CREATE DATABASE {name}")).await?;
        let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(server);
        Ok(Self {
            database_url: format!("{base}/{name}"),
            dir,
            server: Some(server.to_owned()),
        })
    }

    /// Removes the directory and drops the database.
    pub async fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let (Some(server), Some((_, name))) = (&self.server, self.database_url.rsplit_once('/'))
        {
            let _ = admin(
                server,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
        }
    }

    /// The `ipto` command with this scratch's settings.
    pub fn ipto(&self, bin: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IPTO_DATA_DIR", &self.dir)
            .env("IPTO_DATABASE_URL", &self.database_url)
            .env("IPTO_SIGNING_KEY", "bench signing key, at least 32 bytes")
            .env("IPTO_LOG", "warn");
        // The embedder under test, if the run names one (`none` measures the lexical leg alone).
        if let Ok(embedder) = std::env::var("IPTO_EMBEDDER") {
            command.env("IPTO_EMBEDDER", embedder);
        }
        command
    }
}

async fn admin(server: &str, sql: &str) -> Result<(), String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server)
        .await
        .map_err(|e| format!("PostgreSQL at {server}: {e}"))?;
    sqlx::Executor::execute(&mut conn, sql)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running server process.
pub struct Served {
    child: Child,
    pub base: String,
}

impl Served {
    /// Starts `command` (which binds `port`) and waits until `ready_path` answers.
    pub async fn start(mut command: Command, port: u16, ready_path: &str, log: &Path) -> Self {
        let log = std::fs::File::create(log).expect("server log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("server starts");
        let served = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client
            .get(format!("{}{ready_path}", served.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served
    }

    /// SIGTERM, then waits for the graceful shutdown (SIGKILL after 30 s).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `GET /` with an empty 200 on `address` until killed: the ceiling of HTTP reads (the
/// same axum, tokio runtime and loopback as the service, with no work behind the route).
pub fn serve_empty(address: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("bind empty route");
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "" }));
        axum::serve(listener, router).await.expect("serve");
    });
}

/// A field of `/proc/{pid}/status` in KiB while the process runs: `VmHWM` (peak resident set,
/// file pages mapped by SQLite included) or `RssAnon` (resident anonymous memory now).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}
