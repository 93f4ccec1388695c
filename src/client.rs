//! The `ipto` client: commands that call a running server's API with a profile's credential
//! (see [`profile`] for where it comes from), for people at a terminal and for scripts (`--output
//! json` prints the API's `data` as one JSON document).
//!
//! Exit codes: 0 success; 1 an API error (its code, message and request id are printed) or any
//! other failure; 2 a usage error.

pub mod api;
pub mod datasets;
pub mod market;
pub mod mcp;
pub mod objects;
pub mod profile;
pub mod reports;
pub mod review;
pub mod skill;
pub mod table;

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand, ValueEnum};
use projections::LogPosition;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::api::{Api, ApiError};
use crate::client::profile::{
    ConfigFile, Credential, Environment, PositionFile, ProfileError, Resolved,
};

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Client: check a credential with the server and keep it in the profile.
    Login(LoginArgs),
    /// Client: end the profile's session on the server and forget its credential.
    Logout,
    /// Client: the user or key, tenant, roles and scopes the profile acts as.
    Whoami,
    /// Client: read and change the client's configuration (`~/.ipto/config.toml`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Client: create, list, change and delete datasets.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Client: upload, list, show, download and delete objects.
    #[command(subcommand)]
    Objects(objects::ObjectsCommand),
    /// Client: search the datasets the caller may search (metered).
    Search(market::SearchArgs),
    /// Client: passages for an agent's context from the datasets the caller may search (metered).
    Retrieve(market::RetrieveArgs),
    /// Client: create, list, revoke and grant API keys.
    #[command(subcommand)]
    Keys(market::KeysCommand),
    /// Client: the provider's dashboard (`--buyer`: the buyer's).
    Dashboard(reports::DashboardArgs),
    /// Client: one dataset's analytics over a window.
    Analytics {
        dataset_id: String,
        #[command(flatten)]
        window: reports::Window,
    },
    /// Client: the provider's monthly payout statements.
    Payouts {
        /// Every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// Client: what the tenant's keys and sessions spent over a window.
    Spend(reports::Window),
    /// Client: the tenant's searches or metered accesses.
    #[command(subcommand)]
    Activity(reports::ActivityCommand),
    /// Client: review staged objects (platform admins).
    #[command(subcommand)]
    Review(review::ReviewCommand),
    /// Client: serve the marketplace to an agent as MCP tools on standard input and output,
    /// acting with the profile's credential.
    Mcp,
    /// Client: plug `ipto mcp` into an agent (Claude Code, Codex).
    #[command(subcommand)]
    Skill(skill::SkillCommand),
}

/// Runs a client command on a runtime of its own (no server logging); the exit code.
pub fn main(command: ClientCommand, options: ClientOptions) -> std::process::ExitCode {
    use std::process::ExitCode;
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Usage(format!("cannot start: {e}")))
        .and_then(|runtime| runtime.block_on(run(command, &options)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            match error {
                ClientError::Usage(_) | ClientError::Profile(ProfileError::Key(_)) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::from(1),
            }
        }
    }
}

async fn run(command: ClientCommand, options: &ClientOptions) -> Result<(), ClientError> {
    let mut session = Session::open(options, Environment::current())?;
    let done = dispatch(&mut session, command).await;
    // Kept even when the command failed part-way: what it wrote, the next command must see.
    let kept = session.keep_position();
    done.and(kept)
}

async fn dispatch(session: &mut Session, command: ClientCommand) -> Result<(), ClientError> {
    match command {
        ClientCommand::Login(args) => login(session, args).await,
        ClientCommand::Logout => logout(session).await,
        ClientCommand::Whoami => whoami(session).await,
        ClientCommand::Config(command) => config(session, command),
        ClientCommand::Datasets(command) => datasets::run(session, command).await,
        ClientCommand::Objects(command) => objects::run(session, command).await,
        ClientCommand::Search(args) => market::search(session, args).await,
        ClientCommand::Retrieve(args) => market::retrieve(session, args).await,
        ClientCommand::Keys(command) => market::keys(session, command).await,
        ClientCommand::Dashboard(args) => reports::dashboard(session, args).await,
        ClientCommand::Analytics { dataset_id, window } => {
            reports::analytics(session, &dataset_id, window).await
        }
        ClientCommand::Payouts { all } => reports::payouts(session, all).await,
        ClientCommand::Spend(window) => reports::spend(session, window).await,
        ClientCommand::Activity(command) => reports::activity(session, command).await,
        ClientCommand::Review(command) => review::run(session, command).await,
        ClientCommand::Mcp => mcp::serve_stdio(session.api()?).await,
        ClientCommand::Skill(command) => skill::run(session, command),
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people: tables and short lines.
    #[default]
    Table,
    /// For scripts: the API's `data`, one JSON document.
    Json,
}

/// The options every client command takes.
#[derive(Debug, Args)]
pub struct ClientOptions {
    /// The profile to act as (else `IPTO_PROFILE`, else the file's `default_profile`).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// `ipto login`: one of the three credential forms.
#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "credential")]
pub struct LoginArgs {
    /// An API key (`ipto_…`), checked against the server before it is kept.
    #[arg(long, group = "credential")]
    pub api_key: Option<String>,
    /// A session token (`sess_…`), checked against the server before it is kept.
    #[arg(long, group = "credential")]
    pub token: Option<String>,
    /// Log in with e-mail and password; the password is asked for on a terminal (never echoed)
    /// or read from the first line of standard input.
    #[arg(long, group = "credential")]
    pub email: Option<String>,
    /// The password (visible in the process list: prefer the prompt or standard input).
    #[arg(long, requires = "email")]
    pub password: Option<String>,
}

/// How a list command pages.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page size (1..=100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Every page, not just the first.
    #[arg(long)]
    pub all: bool,
}

impl PageArgs {
    /// The items of the list at `path`, paged as asked.
    pub async fn fetch(&self, api: &Api, path: &str) -> Result<Vec<Value>, ClientError> {
        Ok(api.list(path, "items", self.limit, self.all).await?)
    }
}

/// How a list of things with a status pages and filters.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only items in this status.
    #[arg(long)]
    pub status: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

impl ListArgs {
    /// The items of the list at `path`, filtered and paged as asked.
    pub async fn fetch(&self, api: &Api, path: &str) -> Result<Vec<Value>, ClientError> {
        match &self.status {
            Some(status) => {
                let path = format!("{path}?status={}", api::encode(status));
                self.page.fetch(api, &path).await
            }
            None => self.page.fetch(api, path).await,
        }
    }
}

/// `ipto config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Sets `api_url`, `default_profile` or `profiles.NAME.{api_url,api_key,session_token}`.
    Set { key: String, value: String },
    /// Prints one key, or the whole configuration; secrets print as `(set)`.
    Get { key: Option<String> },
    /// Lists the profiles, marking the active one.
    Profiles,
}

/// What a client command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("{0}")]
    Usage(String),
    /// Part of a command's work failed (each part is reported before).
    #[error("{0}")]
    Failed(String),
}

/// A client command's context: the configuration file, the environment, and what they resolve to.
pub struct Session {
    pub file: ConfigFile,
    pub resolved: Resolved,
    pub output: Output,
    /// The furthest log position this profile has seen on its server, shared by the command's
    /// clients and kept for the next command (the consistency header).
    position: Arc<Mutex<Option<LogPosition>>>,
    positions: PositionFile,
}

impl Session {
    /// Reads the configuration for `options`, and the position the profile reached.
    pub fn open(options: &ClientOptions, env: Environment) -> Result<Self, ClientError> {
        let file = ConfigFile::load(&env.config_path()?)?;
        let resolved = file.resolve(options.profile.as_deref(), &env);
        let positions = PositionFile::of(&file.path, &resolved);
        Ok(Self {
            position: Arc::new(Mutex::new(positions.load())),
            positions,
            file,
            resolved,
            output: options.output,
        })
    }

    /// A client of the resolved server with the resolved credential.
    pub fn api(&self) -> Result<Api, ClientError> {
        Ok(
            Api::new(&self.resolved.api_url, self.resolved.credential.clone())?
                .with_position(self.position.clone()),
        )
    }

    /// Keeps the furthest position the command saw for the profile's next command.
    pub fn keep_position(&self) -> Result<(), ClientError> {
        let reached = *self.position.lock().expect("lock poisoned");
        match reached {
            Some(position) => Ok(self.positions.save(position)?),
            None => Ok(()),
        }
    }

    /// Prints a list: as one JSON array, or as a table of `columns`.
    pub fn print_list(&self, items: Vec<Value>, columns: &[table::Column]) {
        self.print(&Value::from(items), |v| {
            table::render(columns, v.as_array().map(Vec::as_slice).unwrap_or(&[]))
        });
    }

    /// Prints `data`: as JSON, or through `table` for people.
    pub fn print(&self, data: &Value, table: impl FnOnce(&Value) -> String) {
        match self.output {
            Output::Json => println!("{data}"),
            Output::Table => print!("{}", table(data)),
        }
    }
}

/// `ipto login`: checks the credential with the server, then keeps it in the profile.
pub async fn login(session: &mut Session, args: LoginArgs) -> Result<(), ClientError> {
    let api = session.api()?;
    let credential = if let Some(key) = args.api_key {
        Credential::ApiKey(key)
    } else if let Some(token) = args.token {
        Credential::Session(token)
    } else {
        let email = args.email.unwrap_or_default();
        let password = match args.password {
            Some(password) => password,
            None => read_password()?,
        };
        let body = json!({ "email": email, "password": password });
        let answer = api.anonymous(Method::POST, "/auth/login", body).await?;
        let token = answer["session_token"]
            .as_str()
            .ok_or_else(|| ApiError::Transport("login answered without a session token".into()))?;
        Credential::Session(token.to_owned())
    };
    let me = api.with_credential(credential.clone()).get("/me").await?;
    let profile = session.resolved.profile.clone();
    session.file.store_credential(&profile, &credential);
    session.file.save()?;
    session.print(&me, |me| {
        format!(
            "Logged in to {} as {} (profile {profile}).\n",
            session.resolved.api_url,
            who(me)
        )
    });
    Ok(())
}

/// The password of `ipto login --email`: a hidden prompt on a terminal, else standard input's
/// first line.
fn read_password() -> Result<String, ClientError> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ")
            .map_err(|e| ClientError::Usage(format!("cannot read the password: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| ClientError::Usage(format!("cannot read the password: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err(ClientError::Usage(
            "no password given (prompted, piped or --password)".into(),
        ));
    }
    Ok(password)
}

/// `ipto logout`: ends the session on the server (an API key stays valid: revoke it with `ipto
/// keys revoke`), then forgets the credential.
pub async fn logout(session: &mut Session) -> Result<(), ClientError> {
    let profile = session.resolved.profile.clone();
    if let Some(Credential::Session(_)) = &session.resolved.credential {
        match session.api()?.post("/auth/logout", json!({})).await {
            Ok(_) => {}
            // Already ended or expired: nothing left to end.
            Err(error) if error.code() == Some("unauthorized") => {}
            Err(error) => return Err(error.into()),
        }
    }
    session.file.forget_credential(&profile);
    session.file.save()?;
    session.print(&json!({ "profile": profile, "logged_out": true }), |_| {
        format!("Logged out (profile {profile}).\n")
    });
    Ok(())
}

/// `ipto whoami`.
pub async fn whoami(session: &Session) -> Result<(), ClientError> {
    let me = session.api()?.get("/me").await?;
    session.print(&me, |me| {
        let list = |v: &Value| {
            let items: Vec<&str> = v
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        format!(
            "user:       {}\ntenant:     {} ({})\nroles:      {}\nprincipal:  {}\nscopes:     {}\nprofile:    {} at {}\n",
            who(me),
            text(&me["tenant_display_name"]),
            text(&me["tenant_id"]),
            list(&me["roles"]),
            text(&me["principal_type"]),
            list(&me["scopes"]),
            session.resolved.profile,
            session.resolved.api_url,
        )
    });
    Ok(())
}

/// `ipto config …`.
pub fn config(session: &mut Session, command: ConfigCommand) -> Result<(), ClientError> {
    match command {
        ConfigCommand::Set { key, value } => {
            session.file.set(&key, &value)?;
            session.file.save()?;
            let shown = if profile::is_secret(&key) {
                "(set)".to_owned()
            } else {
                value
            };
            session.print(&json!({ key.clone(): shown.clone() }), |_| {
                format!("{key} = {shown}\n")
            });
        }
        ConfigCommand::Get { key: Some(key) } => {
            let value = match key
                .strip_prefix("profiles.")
                .and_then(|r| r.rsplit_once('.'))
            {
                Some((name, field)) => session.file.profile_value(name, field),
                None => session.file.top(&key),
            };
            let shown = match value {
                Some(_) if profile::is_secret(&key) => Value::from("(set)"),
                Some(v) => Value::from(v),
                None => Value::Null,
            };
            session.print(&json!({ key.clone(): shown.clone() }), |_| match &shown {
                Value::String(s) => format!("{s}\n"),
                _ => format!("{key} is not set\n"),
            });
        }
        ConfigCommand::Get { key: None } => {
            let file = &session.file;
            let mut profiles = serde_json::Map::new();
            for name in file.profiles() {
                let mut entry = serde_json::Map::new();
                for key in profile::PROFILE_KEYS {
                    if let Some(v) = file.profile_value(&name, key) {
                        let shown = if profile::is_secret(key) { "(set)" } else { v };
                        entry.insert(key.to_owned(), shown.into());
                    }
                }
                profiles.insert(name, entry.into());
            }
            let data = json!({
                "path": file.path.display().to_string(),
                "api_url": file.top("api_url"),
                "default_profile": file.top("default_profile"),
                "profiles": profiles,
                "active": { "profile": session.resolved.profile, "api_url": session.resolved.api_url },
            });
            session.print(&data, |d| {
                let mut out = format!("# {}\n", text(&d["path"]));
                for key in profile::TOP_KEYS {
                    if let Some(v) = d[key].as_str() {
                        out.push_str(&format!("{key} = {v}\n"));
                    }
                }
                for (name, entry) in d["profiles"].as_object().into_iter().flatten() {
                    for (key, v) in entry.as_object().into_iter().flatten() {
                        out.push_str(&format!("profiles.{name}.{key} = {}\n", text(v)));
                    }
                }
                out
            });
        }
        ConfigCommand::Profiles => {
            let active = session.resolved.profile.clone();
            let mut names = session.file.profiles();
            if !names.contains(&active) {
                names.push(active.clone());
            }
            let data: Vec<Value> = names
                .iter()
                .map(|n| json!({ "name": n, "active": *n == active }))
                .collect();
            session.print(&Value::from(data), |_| {
                names
                    .iter()
                    .map(|n| format!("{} {n}\n", if *n == active { "*" } else { " " }))
                    .collect()
            });
        }
    }
    Ok(())
}

/// Who a `/v1/me` answer is: the user's e-mail, or the key's id.
fn who(me: &Value) -> String {
    match (me["email"].as_str(), me["api_key_id"].as_str()) {
        (Some(email), _) => format!("{email} ({})", text(&me["user_id"])),
        (None, Some(key)) => format!("API key {key}"),
        _ => "-".to_owned(),
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| "-".into())
}
