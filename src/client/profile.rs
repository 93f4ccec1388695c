//! The client's configuration file and the credential a command acts with.
//!
//! `~/.ipto/config.toml` (`$IPTO_CONFIG` names another path): top-level `api_url` and
//! `default_profile`, and `[profiles.NAME]` tables with `api_url` and an `api_key` or a
//! `session_token`. The environment wins over the file (`IPTO_API_URL`, `IPTO_API_KEY`,
//! `IPTO_PROFILE`), and `--profile` over `IPTO_PROFILE`. The file is edited in place, so comments
//! and entries this client does not know survive, and it is written with mode 0600 through a
//! temporary file renamed over it: a crash leaves the old file or the new one, never half of one.

use std::path::{Path, PathBuf};

use toml_edit::{value, DocumentMut, Item, Table};

/// Where the server listens by default.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// The keys of a profile; `api_key` and `session_token` are secrets.
pub const PROFILE_KEYS: [&str; 3] = ["api_url", "api_key", "session_token"];
/// The top-level keys.
pub const TOP_KEYS: [&str; 2] = ["api_url", "default_profile"];

/// A configuration problem (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{0}")]
    Key(String),
    #[error("no home directory: set IPTO_CONFIG or HOME")]
    NoHome,
}

/// What the environment says (read once, so tests can pass their own).
#[derive(Clone, Debug, Default)]
pub struct Environment {
    pub config: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    pub profile: Option<String>,
}

impl Environment {
    /// This process's environment; empty variables count as unset.
    pub fn current() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            config: var("IPTO_CONFIG").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            api_url: var("IPTO_API_URL"),
            api_key: var("IPTO_API_KEY"),
            profile: var("IPTO_PROFILE"),
        }
    }

    /// The configuration file's path.
    pub fn config_path(&self) -> Result<PathBuf, ProfileError> {
        match (&self.config, &self.home) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(home)) => Ok(home.join(".ipto").join("config.toml")),
            (None, None) => Err(ProfileError::NoHome),
        }
    }
}

/// The credential a request carries.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey(String),
    Session(String),
}

impl std::fmt::Debug for Credential {
    /// Never the secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApiKey(_) => f.write_str("ApiKey(…)"),
            Self::Session(_) => f.write_str("Session(…)"),
        }
    }
}

/// What a command acts as: the server, the credential, and the profile they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub profile: String,
    pub api_url: String,
    pub credential: Option<Credential>,
}

/// The configuration file, as a document that keeps what it does not understand.
pub struct ConfigFile {
    pub path: PathBuf,
    doc: DocumentMut,
}

impl ConfigFile {
    /// Reads the file; a missing one is empty.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ProfileError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|e| ProfileError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Self {
            path: path.to_owned(),
            doc,
        })
    }

    /// Writes the file with mode 0600 (its directory 0700), atomically.
    pub fn save(&self) -> Result<(), ProfileError> {
        write_file(&self.path, self.doc.to_string().as_bytes(), 0o600).map_err(|source| {
            ProfileError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// A top-level string.
    pub fn top(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Item::as_str)
    }

    /// A profile's string.
    pub fn profile_value(&self, profile: &str, key: &str) -> Option<&str> {
        self.doc
            .get("profiles")
            .and_then(|p| p.get(profile))
            .and_then(|p| p.get(key))
            .and_then(Item::as_str)
    }

    /// The profiles' names, in file order.
    pub fn profiles(&self) -> Vec<String> {
        self.doc
            .get("profiles")
            .and_then(Item::as_table_like)
            .map(|t| t.iter().map(|(name, _)| name.to_owned()).collect())
            .unwrap_or_default()
    }

    /// Sets `KEY` (`api_url`, `default_profile`) or `profiles.NAME.KEY`.
    pub fn set(&mut self, key: &str, new: &str) -> Result<(), ProfileError> {
        match split_key(key)? {
            (None, key) => self.doc[key] = value(new),
            (Some(profile), key) => self.profile_table(profile)[key] = value(new),
        }
        Ok(())
    }

    /// Removes `KEY` or `profiles.NAME.KEY`; whether it was there.
    pub fn unset(&mut self, key: &str) -> Result<bool, ProfileError> {
        Ok(match split_key(key)? {
            (None, key) => self.doc.remove(key).is_some(),
            (Some(profile), key) => self
                .doc
                .get_mut("profiles")
                .and_then(|p| p.get_mut(profile))
                .and_then(Item::as_table_like_mut)
                .and_then(|t| t.remove(key))
                .is_some(),
        })
    }

    /// Stores a credential in `profile`, replacing the other kind.
    pub fn store_credential(&mut self, profile: &str, credential: &Credential) {
        let table = self.profile_table(profile);
        let (key, other, secret) = match credential {
            Credential::ApiKey(k) => ("api_key", "session_token", k),
            Credential::Session(t) => ("session_token", "api_key", t),
        };
        table.remove(other);
        table[key] = value(secret.as_str());
    }

    /// Forgets `profile`'s credential.
    pub fn forget_credential(&mut self, profile: &str) {
        let table = self.profile_table(profile);
        table.remove("api_key");
        table.remove("session_token");
    }

    fn profile_table(&mut self, profile: &str) -> &mut Table {
        let profiles = self.doc["profiles"].or_insert(Item::Table(Table::new()));
        if let Some(table) = profiles.as_table_mut() {
            table.set_implicit(true);
        }
        let entry = &mut profiles[profile];
        if !entry.is_table() {
            *entry = Item::Table(Table::new());
        }
        entry.as_table_mut().expect("a profile is a table")
    }

    /// The profile, server and credential a command acts with: `--profile`, else `IPTO_PROFILE`,
    /// else `default_profile`, else `default`; `IPTO_API_URL` and `IPTO_API_KEY` over the file.
    pub fn resolve(&self, flag: Option<&str>, env: &Environment) -> Resolved {
        let profile = flag
            .map(str::to_owned)
            .or_else(|| env.profile.clone())
            .or_else(|| self.top("default_profile").map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let api_url = env
            .api_url
            .clone()
            .or_else(|| self.profile_value(&profile, "api_url").map(str::to_owned))
            .or_else(|| self.top("api_url").map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        let credential = match &env.api_key {
            Some(key) => Some(Credential::ApiKey(key.clone())),
            None => self
                .profile_value(&profile, "api_key")
                .map(|k| Credential::ApiKey(k.to_owned()))
                .or_else(|| {
                    self.profile_value(&profile, "session_token")
                        .map(|t| Credential::Session(t.to_owned()))
                }),
        };
        Resolved {
            profile,
            api_url: api_url.trim_end_matches('/').to_owned(),
            credential,
        }
    }
}

/// `KEY` → `(None, KEY)`, `profiles.NAME.KEY` → `(Some(NAME), KEY)`; anything else is refused.
fn split_key(key: &str) -> Result<(Option<&str>, &str), ProfileError> {
    if TOP_KEYS.contains(&key) {
        return Ok((None, key));
    }
    let unknown = || {
        ProfileError::Key(format!(
            "unknown key {key:?}: use {} or profiles.NAME.{{{}}}",
            TOP_KEYS.join(", "),
            PROFILE_KEYS.join(",")
        ))
    };
    let rest = key.strip_prefix("profiles.").ok_or_else(unknown)?;
    let (name, field) = rest.rsplit_once('.').ok_or_else(unknown)?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name || !PROFILE_KEYS.contains(&field) {
        return Err(unknown());
    }
    Ok((Some(name), field))
}

/// Whether a key holds a secret (never printed).
pub fn is_secret(key: &str) -> bool {
    key.ends_with("api_key") || key.ends_with("session_token")
}

/// Replaces `path` with `contents` at once (a temporary file beside it, synced, then renamed), so a
/// reader never sees half a file; the file gets `mode`, and a missing directory is made `0700`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// The furthest log position a profile's commands have seen on one server, kept between commands
/// in `positions/PROFILE-HASH` beside the configuration file (HASH: of the API URL), so that a
/// command reads what an earlier one wrote on whichever instance of a fleet answers it.
pub struct PositionFile {
    path: PathBuf,
}

impl PositionFile {
    /// The file of `resolved`'s profile and server, beside the configuration at `config`.
    pub fn of(config: &Path, resolved: &Resolved) -> Self {
        use sha2::Digest;
        let server = hex::encode(&sha2::Sha256::digest(resolved.api_url.as_bytes())[..8]);
        // A profile name is a TOML key: anything but a path separator is kept as it is.
        let profile: String = resolved
            .profile
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c == '\0' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let dir = config.parent().unwrap_or(Path::new("."));
        Self {
            path: dir.join("positions").join(format!("{profile}-{server}")),
        }
    }

    /// The position kept, if any (an unreadable or malformed file counts as none).
    pub fn load(&self) -> Option<projections::LogPosition> {
        std::fs::read_to_string(&self.path)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Keeps `position` unless the file already holds a further one (another command's).
    pub fn save(&self, position: projections::LogPosition) -> Result<(), ProfileError> {
        if self.load().is_some_and(|kept| kept >= position) {
            return Ok(());
        }
        write_file(&self.path, position.to_string().as_bytes(), 0o600).map_err(|source| {
            ProfileError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigFile {
        ConfigFile {
            path: PathBuf::from("/nonexistent/config.toml"),
            doc: text.parse().unwrap(),
        }
    }

    #[test]
    fn the_environment_wins_over_the_file_and_the_flag_over_the_environment() {
        let config = file(
            "api_url = \"http://top\"\ndefault_profile = \"work\"\n\
             [profiles.work]\napi_url = \"http://work/\"\nsession_token = \"sess_w\"\n\
             [profiles.ci]\napi_key = \"ipto_ci\"\n",
        );
        let none = Environment::default();
        let resolved = config.resolve(None, &none);
        assert_eq!(resolved.profile, "work");
        assert_eq!(resolved.api_url, "http://work");
        assert_eq!(
            resolved.credential,
            Some(Credential::Session("sess_w".into()))
        );

        let env = Environment {
            profile: Some("ci".into()),
            ..Default::default()
        };
        let resolved = config.resolve(None, &env);
        assert_eq!(resolved.profile, "ci");
        assert_eq!(resolved.api_url, "http://top");
        assert_eq!(
            resolved.credential,
            Some(Credential::ApiKey("ipto_ci".into()))
        );
        assert_eq!(config.resolve(Some("work"), &env).profile, "work");

        let env = Environment {
            api_url: Some("http://env".into()),
            api_key: Some("ipto_env".into()),
            ..Default::default()
        };
        let resolved = config.resolve(Some("work"), &env);
        assert_eq!(resolved.api_url, "http://env");
        assert_eq!(
            resolved.credential,
            Some(Credential::ApiKey("ipto_env".into()))
        );
    }

    #[test]
    fn an_empty_file_means_the_local_server_and_no_credential() {
        let resolved = file("").resolve(None, &Environment::default());
        assert_eq!(resolved.profile, DEFAULT_PROFILE);
        assert_eq!(resolved.api_url, DEFAULT_API_URL);
        assert_eq!(resolved.credential, None);
    }

    #[test]
    fn edits_keep_what_the_client_does_not_know() {
        let mut config = file("# mine\nextra = 1\n[profiles.a]\nnote = \"keep\"\n");
        config.set("profiles.a.api_url", "http://a").unwrap();
        config.store_credential("b", &Credential::ApiKey("ipto_b".into()));
        config.store_credential("b", &Credential::Session("sess_b".into()));
        let text = config.doc.to_string();
        assert!(text.contains("# mine") && text.contains("extra = 1") && text.contains("note"));
        assert_eq!(config.profile_value("b", "api_key"), None);
        assert_eq!(config.profile_value("b", "session_token"), Some("sess_b"));
        assert_eq!(config.profiles(), ["a", "b"]);
        config.forget_credential("b");
        assert_eq!(config.profile_value("b", "session_token"), None);
    }

    #[test]
    fn only_known_keys_can_be_set() {
        let mut config = file("");
        for bad in [
            "colour",
            "profiles.a.password",
            "profiles..api_url",
            "profiles.a b.api_url",
            "profiles.api_url",
        ] {
            assert!(config.set(bad, "x").is_err(), "{bad}");
        }
        config.set("default_profile", "ci").unwrap();
        assert_eq!(config.top("default_profile"), Some("ci"));
        assert!(config.unset("default_profile").unwrap());
        assert!(!config.unset("default_profile").unwrap());
    }

    #[test]
    fn the_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ipto-profile-{}", std::process::id()));
        let path = dir.join("nested").join("config.toml");
        let mut config = ConfigFile::load(&path).unwrap();
        config.store_credential("default", &Credential::ApiKey("ipto_secret".into()));
        config.save().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ConfigFile::load(&path).unwrap();
        assert_eq!(
            again.profile_value("default", "api_key"),
            Some("ipto_secret")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
