//! Start-up as a library function: open the store, migrate, start the projectors and bind the
//! listener. `main` only parses the command line; tests call [`Application::build`] on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use projections::ProjectorEngine;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::accounts::{Accounts, SignupCompletion};
use crate::blobs::Blobs;
use crate::clock::Clock;
use crate::config::{Config, LimitsStore};
use crate::ratelimit::shared::{Limits, SharedError};
use crate::search::embedding::EmbeddingWorker;
use crate::search::{Indexer, SearchIndex};
use crate::signing::SigningKey;
use crate::state::AppState;
use crate::store::{self, EventPool, Store};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("signing key: {0}")]
    SigningKey(#[from] crate::signing::KeyError),
    #[error("audit signing key: {0}")]
    AuditKey(#[from] crate::notary::AuditKeyError),
    #[error("blob store: {0}")]
    Blobs(#[from] crate::blobs::BlobError),
    #[error("bootstrap admin: {0}")]
    Bootstrap(#[from] crate::accounts::BootstrapError),
    #[error(transparent)]
    Search(#[from] crate::search::IndexError),
    #[error(transparent)]
    Embedder(#[from] crate::search::embed::EmbedError),
    #[error("mail: {0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("shared limits: {0}")]
    Limits(#[from] crate::ratelimit::shared::SharedError),
}

/// Opens and migrates the store named by the configuration, with every projection registered but
/// no worker running (used by `serve` and the CLI).
pub async fn open_store(config: &Config) -> Result<(Store, SigningKey), StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
    let key = SigningKey::load(config.signing_key.as_deref(), &config.data_dir)?;
    let (events, db) = store::connect(&config.database_url()).await?;
    store::migrate(&events).await?;
    let engine = ProjectorEngine::new(db.clone(), projections::all());
    let store = Store::new(
        events,
        db,
        engine.clone(),
        Clock::with_offset(config.clock_offset_seconds),
    );
    engine.register(Arc::new(SignupCompletion {
        store: store.clone(),
    }));
    let now = aggregates::timestamp::format(store.clock.now());
    store::seal_legacy(&store.db, &engine, &key, &now).await?;
    Ok((store, key))
}

/// Opens the configured blob store; signed local URLs point at `IPTO_PUBLIC_URL`, else at the
/// bound address.
pub fn open_blobs(
    config: &Config,
    key: &SigningKey,
    address: SocketAddr,
) -> Result<Blobs, StartError> {
    let storage = config.storage_url.clone().unwrap_or_else(|| {
        let dir = std::path::absolute(config.data_dir.join("blobs"))
            .unwrap_or_else(|_| config.data_dir.join("blobs"));
        format!("file://{}", dir.display())
    });
    let public = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    Ok(Blobs::open(&storage, &public, key.clone())?)
}

/// A built service, listening but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    workers: JoinSet<()>,
    shutdown: watch::Sender<bool>,
}

impl Application {
    /// Opens the store, applies migrations, starts the projection workers, ensures the bootstrap
    /// admin and binds the listener.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        if config.clock_offset_seconds != 0 {
            tracing::warn!(
                offset = config.clock_offset_seconds,
                "IPTO_CLOCK_OFFSET_SECONDS shifts the clock (test only)"
            );
        }
        crate::auth::prepare();
        // A malformed mail setting is a configuration error too.
        let mailer = crate::mail::Mailer::from_config(&config)?.map(Arc::new);
        // A bad embedder setting is a configuration error: refused before anything is opened.
        let embedder = crate::search::embed::from_setting(&config.embedder)?;
        let (store, key) = open_store(&config).await?;
        let limits = Arc::new(open_limits(&config, &store, &key).await?);
        let audit_key = Arc::new(crate::notary::AuditKey::load(
            config.audit_signing_key.as_deref(),
            &config.data_dir,
        )?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut workers = store.engine.start(shutdown_rx.clone()).await?;
        if let EventPool::Postgres(pool) = &store.events {
            workers.spawn(listen_for_events(
                pool.clone(),
                store.engine.clone(),
                shutdown_rx.clone(),
            ));
        }
        // Before binding: a bootstrap admin that cannot be ensured is invalid configuration.
        if let Some(email) = &config.bootstrap_admin_email {
            let accounts = Accounts {
                store: &store,
                key: &key,
                session_ttl_seconds: config.session_ttl_seconds,
            };
            accounts
                .bootstrap_admin(email, config.bootstrap_admin_password.as_deref())
                .await?;
            // Serve only once the admin can log in.
            if let Some(tail) = projections::log::tail(&store.db).await? {
                store.settle(tail, Duration::from_secs(10)).await;
            }
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| StartError::Bind(config.bind, e))?;
        let address = listener
            .local_addr()
            .map_err(|e| StartError::Bind(config.bind, e))?;
        let blobs = open_blobs(&config, &key, address)?;
        let index = Arc::new(SearchIndex::open(
            &config.index_dir(),
            embedder.as_deref().map(crate::search::index::DenseKey::of),
        )?);
        let dense = embedder.map(|e| EmbeddingWorker::new(index.clone(), e));
        let search = Indexer::new(
            index,
            store.db.clone(),
            blobs.clone(),
            store.engine.clone(),
            crate::search::extract::PdfExtractor::from_config(&config),
        )
        .with_dense(dense);
        workers.spawn(search.clone().run(shutdown_rx.clone()));
        if let Some(dense) = search.dense.clone() {
            workers.spawn(dense.run(shutdown_rx.clone()));
        }
        let state = AppState {
            store,
            key,
            blobs,
            config: Arc::new(config),
            jobs: Arc::new(watch::channel(0).0),
            limits,
            search,
            uploads: Arc::default(),
            audit_key,
            mailer,
        };
        workers.spawn(crate::jobs::run(state.clone(), shutdown_rx.clone()));
        Ok(Self {
            listener,
            state,
            workers,
            shutdown,
        })
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The shared state (for tests and tools).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` completes, then drains requests, stops the workers at a checkpoint and
    /// closes the pools.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            state,
            mut workers,
            shutdown,
        } = self;
        let address = listener.local_addr()?;
        let router = crate::http::router(state.clone(), address);
        let limits = crate::server::Limits {
            max_connections: state.config.max_connections as usize,
            header_timeout: Duration::from_secs(state.config.request_timeout_seconds),
        };
        let served = crate::server::serve(listener, router, limits, signal).await;
        let _ = shutdown.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            workers.abort_all();
        }
        state.store.engine.shut_down().await;
        state.store.close().await;
        served
    }
}

/// The limits the configuration names (see [`crate::ratelimit::shared`]).
async fn open_limits(
    config: &Config,
    store: &Store,
    key: &SigningKey,
) -> Result<Limits, SharedError> {
    let pool = match &store.events {
        EventPool::Postgres(pool) => Some(pool.clone()),
        EventPool::Sqlite(_) => None,
    };
    let limits = match (config.limits, &config.redis_url, pool) {
        (LimitsStore::Memory, _, _) | (LimitsStore::Auto, None, None) => Limits::memory(),
        (LimitsStore::Redis | LimitsStore::Auto, Some(url), _) => {
            Limits::redis(url, &config.redis_prefix, key.clone()).await?
        }
        (LimitsStore::Redis, None, _) => {
            return Err(SharedError::Setting(
                "IPTO_LIMITS=redis needs IPTO_REDIS_URL",
            ))
        }
        (LimitsStore::Database | LimitsStore::Auto, _, Some(pool)) => {
            Limits::database(pool, key.clone())
        }
        (LimitsStore::Database, _, None) => {
            return Err(SharedError::Setting(
                "IPTO_LIMITS=database needs PostgreSQL (one SQLite file serves one instance)",
            ))
        }
    };
    tracing::info!(
        store = limits.store(),
        "rate limits and the failed-login lock"
    );
    Ok(limits)
}

/// Wakes the local workers when another instance appends events (PostgreSQL `NOTIFY`).
async fn listen_for_events(
    pool: sqlx::PgPool,
    engine: ProjectorEngine,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen("ipto_events").await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            l = listener => l,
            _ = shutdown.changed() => return,
        };
        while let Ok(l) = listener.as_mut() {
            tokio::select! {
                received = l.recv() => match received {
                    Ok(_) => engine.notify(),
                    Err(error) => {
                        tracing::warn!(%error, "event notifications interrupted");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
