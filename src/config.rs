//! Typed configuration: every setting from a flag or its `IPTO_*` variable (the flag wins), with
//! defaults that make a bare `ipto serve` work. Secrets come from the environment only and are
//! never printed.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The `ipto` program.
#[derive(Debug, Parser)]
#[command(
    name = "ipto",
    version,
    about = "Event-sourced backend of a marketplace for private data"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(flatten)]
    pub client: crate::client::ClientOptions,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands; `serve` is the default. Server commands act on this machine's data directory
/// and database; client commands call a server's API with a profile's credential.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Server: apply migrations, then run the API, projection workers and background jobs.
    Serve,
    /// Server: apply pending migrations and exit.
    Migrate,
    /// Server: inspect or rebuild projections.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Server: platform administration.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Server: read the event log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The client commands, which call a server's API.
    #[command(flatten)]
    Client(crate::client::ClientCommand),
    /// Internal: reads a PDF on stdin and writes its text on stdout within these limits (the
    /// search indexer runs it as a child process).
    #[command(name = "extract-pdf", hide = true)]
    ExtractPdf {
        /// Address space cap, in MiB.
        #[arg(long)]
        memory_mb: u64,
        /// CPU time cap, in seconds.
        #[arg(long)]
        cpu_seconds: u64,
    },
}

/// `ipto projections …`
#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// One row per projection: NAME, POSITION, HEAD, LAG, STATE.
    Status,
    /// Replay projections from the log behind the live ones, then switch to them atomically.
    Rebuild {
        /// The projection to rebuild (`search`: every instance's search index).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projection.
        #[arg(long)]
        all: bool,
        /// Empty the read models and replay them in place (faster; only while no server runs:
        /// readers would see them partial).
        #[arg(long)]
        offline: bool,
    },
}

/// `ipto admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a user a platform admin.
    Promote {
        /// The user's e-mail address.
        email: String,
    },
    /// Erase a user's personal data (GDPR art. 17): see `POST /v1/admin/users/{id}/erase`.
    Erase {
        /// The user's e-mail address.
        email: String,
    },
}

/// `ipto events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print the log as NDJSON, one event per line, ascending.
    Export {
        /// Only events after this position.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        after: i64,
        /// Only events of this aggregate type.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::audit::AGGREGATE_TYPES))]
        aggregate_type: Option<String>,
    },
    /// Recompute the audit tree and check it against signed heads; names the first bad position
    /// and exits 1 on a mismatch.
    Verify {
        /// An NDJSON export (`ipto events export`) to check instead of the database.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// A signed head (`GET /v1/admin/audit/head`) to check against (default, on the
        /// database: every kept head).
        #[arg(long, value_name = "FILE")]
        head: Option<PathBuf>,
        /// The audit public key (`ipto events public-key`, `GET /v1/audit/public-key`); default,
        /// on the database: the service's own.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// An inclusion proof (`ipto events prove`) to check offline.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["export", "head"])]
        proof: Option<PathBuf>,
    },
    /// Print an inclusion proof of one event in the current tree, with a signed head.
    Prove {
        /// The event's audit position.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        position: u64,
    },
    /// Print the public key that checks the audit tree's signed heads.
    PublicKey,
}

/// Service settings (SPEC §6.2).
#[derive(Clone, Args)]
pub struct Config {
    /// Listen address.
    #[arg(
        long,
        env = "IPTO_BIND",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub bind: SocketAddr,
    /// Directory for the SQLite file, blobs, index and signing key.
    #[arg(
        long,
        env = "IPTO_DATA_DIR",
        default_value = "./ipto-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// `sqlite://…` (default `sqlite://{DATA_DIR}/ipto.db`) or `postgres://…`.
    #[arg(long, env = "IPTO_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Base of signed URLs (default `http://{IPTO_BIND}`).
    #[arg(long, env = "IPTO_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Blob store (default `file://{DATA_DIR}/blobs`).
    #[arg(long, env = "IPTO_STORAGE_URL", global = true)]
    pub storage_url: Option<String>,
    /// This instance's search index (default `{DATA_DIR}/index`); instances sharing a data
    /// directory need one each.
    #[arg(long, env = "IPTO_INDEX_DIR", global = true)]
    pub index_dir: Option<PathBuf>,
    /// E-mail of the platform admin ensured at start-up.
    #[arg(long, env = "IPTO_BOOTSTRAP_ADMIN_EMAIL", global = true)]
    pub bootstrap_admin_email: Option<String>,
    /// Platform fee in basis points.
    #[arg(long, env = "IPTO_PLATFORM_FEE_BPS", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=10000), global = true)]
    pub platform_fee_bps: u32,
    /// Authenticated requests per credential per minute.
    #[arg(
        long,
        env = "IPTO_RATE_LIMIT_PER_MINUTE",
        default_value_t = 600,
        global = true
    )]
    pub rate_limit_per_minute: u32,
    /// Signup and login requests per client IP per minute.
    #[arg(
        long,
        env = "IPTO_AUTH_RATE_LIMIT_PER_MINUTE",
        default_value_t = 30,
        global = true
    )]
    pub auth_rate_limit_per_minute: u32,
    /// Failed credential checks (unknown, expired or revoked session tokens and API keys) per
    /// client IP per minute; over it, credentials not recently valid are refused with 429 before
    /// any lookup.
    #[arg(
        long,
        env = "IPTO_AUTH_FAILURE_LIMIT_PER_MINUTE",
        default_value_t = 60,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub auth_failure_limit_per_minute: u32,
    /// Session lifetime in seconds.
    #[arg(long, env = "IPTO_SESSION_TTL_SECONDS", default_value_t = 604_800, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub session_ttl_seconds: u64,
    /// Largest accepted object, in bytes.
    #[arg(
        long,
        env = "IPTO_MAX_OBJECT_BYTES",
        default_value_t = 5_368_709_120,
        global = true
    )]
    pub max_object_bytes: u64,
    /// Open client connections at most; further clients wait to be accepted.
    #[arg(long, env = "IPTO_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_connections: u32,
    /// Seconds a client may take to send a request's headers or a JSON body, or stay silent in
    /// the middle of an upload; an idle keep-alive connection is closed after it.
    #[arg(long, env = "IPTO_REQUEST_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub request_timeout_seconds: u64,
    /// Seconds one PDF's text extraction may take (wall clock and CPU); a PDF past it is
    /// indexed by filename and metadata only.
    #[arg(long, env = "IPTO_PDF_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub pdf_timeout_seconds: u64,
    /// Address space, in MiB, of the process that extracts one PDF's text.
    #[arg(long, env = "IPTO_PDF_MEMORY_MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(64..=65536), global = true)]
    pub pdf_memory_mb: u64,
    /// The dense leg's embedder: `pocket` (the bundled sentence encoder on 8-bit integers),
    /// `pocket-f32` (the same weights in f32, the reference), `none` (lexical only), or
    /// `openai:URL#MODEL` (an OpenAI-compatible embeddings endpoint the deployment runs).
    #[arg(long, env = "IPTO_EMBEDDER", default_value = "pocket", global = true)]
    pub embedder: String,
    /// The program run as `PROGRAM extract-pdf` to read PDFs (default: this executable).
    #[arg(long, env = "IPTO_PDF_EXTRACTOR", global = true)]
    pub pdf_extractor: Option<PathBuf>,
    /// Test only: shifts the clock forward.
    #[arg(
        long,
        env = "IPTO_CLOCK_OFFSET_SECONDS",
        default_value_t = 0,
        global = true
    )]
    pub clock_offset_seconds: i64,
    /// Tracing filter.
    #[arg(long, env = "IPTO_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log lines as text (coloured on a terminal only) or as one JSON object per line.
    #[arg(
        long,
        env = "IPTO_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
    /// Load balancers whose `X-Forwarded-For` names the client (addresses or networks, comma
    /// separated); from any other peer the header is ignored.
    #[arg(
        long,
        env = "IPTO_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_network,
        global = true
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where rate limits and the failed-login lock are kept: `auto` picks Redis when
    /// `IPTO_REDIS_URL` is set, else the database on PostgreSQL, else this instance's memory.
    #[arg(
        long,
        env = "IPTO_LIMITS",
        value_enum,
        default_value_t = LimitsStore::Auto,
        global = true
    )]
    pub limits: LimitsStore,
    /// Redis keeping the fleet's rate limits and failed-login lock (`redis://[:password@]host:port/db`).
    #[arg(long, env = "IPTO_REDIS_URL", global = true, hide_env_values = true)]
    pub redis_url: Option<String>,
    /// SMTP relay that sends invitations (`smtp://host:port`, `smtp://host:587?tls=required`,
    /// `smtps://user:password@host:465`); unset, no mail is sent.
    #[arg(long, env = "IPTO_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of invitation mail.
    #[arg(
        long,
        env = "IPTO_SMTP_FROM",
        default_value = "ipto <no-reply@localhost>",
        global = true
    )]
    pub smtp_from: String,
    /// Prefix of every key ipto writes in Redis (instances of one fleet share it).
    #[arg(
        long,
        env = "IPTO_REDIS_PREFIX",
        default_value = "ipto:",
        global = true
    )]
    pub redis_prefix: String,
    /// HMAC key for signed URLs and the token pepper (environment only: `IPTO_SIGNING_KEY`).
    #[arg(skip)]
    pub signing_key: Option<String>,
    /// Password for a bootstrap admin that does not exist yet (`IPTO_BOOTSTRAP_ADMIN_PASSWORD`).
    #[arg(skip)]
    pub bootstrap_admin_password: Option<String>,
    /// Ed25519 seed (64 hex digits) of the key that signs audit tree heads (environment only:
    /// `IPTO_AUDIT_SIGNING_KEY`; else generated into the data directory).
    #[arg(skip)]
    pub audit_signing_key: Option<String>,
}

impl Config {
    /// Fills the environment-only secrets.
    pub fn with_environment_secrets(mut self) -> Self {
        self.signing_key = std::env::var("IPTO_SIGNING_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        self.bootstrap_admin_password = std::env::var("IPTO_BOOTSTRAP_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty());
        self.audit_signing_key = std::env::var("IPTO_AUDIT_SIGNING_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        self
    }

    /// The defaults, as a bare `ipto` without environment would have them, on `data_dir`.
    pub fn defaults(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Cli::parse_from(["ipto"]).config;
        config.data_dir = data_dir.into();
        config.database_url = None;
        config.index_dir = None;
        config.pdf_extractor = None;
        config.bootstrap_admin_email = None;
        config.redis_url = None;
        config.smtp_url = None;
        config.limits = LimitsStore::Auto;
        config
    }

    /// The search index directory in force.
    pub fn index_dir(&self) -> PathBuf {
        self.index_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("index"))
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ipto.db").display()))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field(
                "database",
                &self
                    .database_url()
                    .split('@')
                    .next_back()
                    .map(str::to_owned),
            )
            .field("public_url", &self.public_url)
            .field("storage_url", &self.storage_url)
            .field("platform_fee_bps", &self.platform_fee_bps)
            .field("session_ttl_seconds", &self.session_ttl_seconds)
            .field("clock_offset_seconds", &self.clock_offset_seconds)
            .field("limits", &self.limits)
            .field(
                "redis",
                &self
                    .redis_url
                    .as_deref()
                    .map(|url| url.split('@').next_back().unwrap_or_default().to_owned()),
            )
            .field(
                "smtp",
                &self
                    .smtp_url
                    .as_deref()
                    .map(|url| url.split('@').next_back().unwrap_or_default().to_owned()),
            )
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "audit_signing_key",
                &self.audit_signing_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// The command line as `ipto` parses it: [`Cli`], its top-level help listing the server commands
/// and the client commands as two groups (each subcommand's summary says which it is: "Server:"
/// or "Client:", a prefix the groups make redundant at the top level).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let cli = Cli::command();
    let mut groups: [(&str, Vec<(String, String)>); 2] = [
        ("Server commands", Vec::new()),
        ("Client commands", Vec::new()),
    ];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let (group, about) = match about.split_once(": ") {
            Some(("Client", rest)) => (1, rest.to_owned()),
            Some(("Server", rest)) => (0, rest.to_owned()),
            _ => (0, about),
        };
        groups[group].1.push((sub.get_name().to_owned(), about));
    }
    let width = groups
        .iter()
        .flat_map(|(_, subs)| subs.iter().map(|(name, _)| name.len()))
        .max()
        .unwrap_or(0);
    let mut listing = String::new();
    for (heading, subs) in &groups {
        listing.push_str(&format!("{heading}:\n"));
        for (name, about) in subs {
            listing.push_str(&format!("  {name:<width$}  {about}\n"));
        }
        listing.push('\n');
    }
    cli.help_template(format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{listing}Options:\n{{options}}{{after-help}}"
    ))
}

/// `IPTO_TRUSTED_PROXIES` entries: a network (`10.0.0.0/8`) or one address (`127.0.0.1`).
pub fn parse_network(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is neither an address nor a network (10.0.0.0/8)"))
}

/// Where the limits that must hold across a fleet are kept (see [`crate::ratelimit::shared`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitsStore {
    /// Redis when `IPTO_REDIS_URL` is set, else the database on PostgreSQL, else memory.
    #[default]
    Auto,
    /// This instance's memory (one instance: the embedded default).
    Memory,
    /// The PostgreSQL database the fleet shares.
    Database,
    /// The Redis at `IPTO_REDIS_URL`.
    Redis,
}

/// How the server writes its log to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, with colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, message, fields, the request's span), as log
    /// collectors read it.
    Json,
}
