//! `ipto skill install`: plugs `ipto mcp` into an agent's MCP configuration, as an entry named
//! `ipto` that runs this binary with the active profile. The entry names the profile, never its
//! credential (that stays in the client's own `0600` file). The file is merged, not replaced:
//! every other entry survives, and a file that does not parse is left alone and reported.
//!
//! | agent | `--project DIR` | otherwise |
//! |---|---|---|
//! | Claude Code (`--claude-code`) | `DIR/.mcp.json`, `mcpServers` | `~/.claude.json`, `mcpServers` |
//! | Codex (`--openai`) | `DIR/.codex/config.toml`, `mcp_servers` | `$CODEX_HOME/config.toml` (`~/.codex`) |

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::profile::write_file;
use crate::client::{ClientError, Session};

/// The entry's name in the agent's configuration.
const SERVER_NAME: &str = "ipto";

/// `ipto skill …`
#[derive(Debug, Subcommand)]
pub enum SkillCommand {
    /// Adds (or updates) the `ipto` MCP server in an agent's configuration.
    Install(InstallArgs),
}

/// `ipto skill install --claude-code|--openai [--project DIR]`
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Claude Code: `.mcp.json` in the project, else `~/.claude.json`.
    #[arg(long, required_unless_present = "openai", conflicts_with = "openai")]
    pub claude_code: bool,
    /// OpenAI Codex: `.codex/config.toml` in the project, else `$CODEX_HOME/config.toml`.
    #[arg(long)]
    pub openai: bool,
    /// The project to configure, instead of the user's own configuration.
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

/// The command the agent runs.
struct Launch {
    command: String,
    args: Vec<String>,
    /// `IPTO_CONFIG`, when the client's file is not at its default path.
    env: Vec<(String, String)>,
}

/// Runs a skill command.
pub fn run(session: &Session, command: SkillCommand) -> Result<(), ClientError> {
    let SkillCommand::Install(args) = command;
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| ClientError::Failed(format!("cannot find this binary: {e}")))?;
    let mut env = Vec::new();
    if let Some(config) = std::env::var_os("IPTO_CONFIG").filter(|v| !v.is_empty()) {
        let config = std::path::absolute(&config).unwrap_or_else(|_| config.into());
        env.push(("IPTO_CONFIG".to_owned(), config.display().to_string()));
    }
    let launch = Launch {
        command: exe.display().to_string(),
        args: vec![
            "mcp".to_owned(),
            "--profile".to_owned(),
            session.resolved.profile.clone(),
        ],
        env,
    };
    let home = || {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| ClientError::Usage("HOME is not set: pass --project DIR".into()))
    };
    let (path, mode) = if args.claude_code {
        match &args.project {
            Some(dir) => (dir.join(".mcp.json"), 0o644),
            None => (home()?.join(".claude.json"), 0o600),
        }
    } else {
        match &args.project {
            Some(dir) => (dir.join(".codex").join("config.toml"), 0o644),
            None => {
                let codex = std::env::var_os("CODEX_HOME")
                    .filter(|h| !h.is_empty())
                    .map(PathBuf::from)
                    .map_or_else(|| home().map(|h| h.join(".codex")), Ok)?;
                (codex.join("config.toml"), 0o600)
            }
        }
    };
    let existing = read(&path)?;
    let merged = if args.claude_code {
        claude_code(existing.as_deref(), &launch)
    } else {
        codex(existing.as_deref(), &launch)
    }
    .map_err(|reason| {
        ClientError::Failed(format!("{}: {reason}; left unchanged", path.display()))
    })?;
    // An existing file keeps its permissions.
    let mode = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap_or(mode);
    write_file(&path, merged.as_bytes(), mode)
        .map_err(|e| ClientError::Failed(format!("{}: {e}", path.display())))?;
    let summary = json!({
        "path": path.display().to_string(),
        "server": SERVER_NAME,
        "command": launch.command,
        "args": launch.args,
    });
    session.print(&summary, |_| {
        format!(
            "Added the {SERVER_NAME} MCP server (profile {}) to {}.\n",
            session.resolved.profile,
            path.display()
        )
    });
    Ok(())
}

/// A file's text, or `None` when it does not exist yet.
fn read(path: &Path) -> Result<Option<String>, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClientError::Failed(format!("{}: {e}", path.display()))),
    }
}

/// Claude Code's JSON with `mcpServers.ipto` set.
fn claude_code(existing: Option<&str>, launch: &Launch) -> Result<String, String> {
    let mut document: Value = match existing.filter(|t| !t.trim().is_empty()) {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?,
        None => json!({}),
    };
    let Some(top) = document.as_object_mut() else {
        return Err("not a JSON object".into());
    };
    let servers = top.entry("mcpServers").or_insert_with(|| json!({}));
    let Some(servers) = servers.as_object_mut() else {
        return Err("mcpServers is not an object".into());
    };
    let env: serde_json::Map<String, Value> = launch
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    servers.insert(
        SERVER_NAME.to_owned(),
        json!({ "type": "stdio", "command": launch.command, "args": launch.args, "env": env }),
    );
    let mut text = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
    text.push('\n');
    Ok(text)
}

/// Codex's TOML with `[mcp_servers.ipto]` set, edited in place (comments survive).
fn codex(existing: Option<&str>, launch: &Launch) -> Result<String, String> {
    use toml_edit::{value, Array, DocumentMut, Item, Table};
    let mut document: DocumentMut = existing
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("not TOML ({e})"))?;
    let servers = document
        .entry("mcp_servers")
        .or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        })
        .as_table_mut()
        .ok_or("mcp_servers is not a table")?;
    let mut entry = Table::new();
    entry.insert("command", value(launch.command.as_str()));
    entry.insert(
        "args",
        value(launch.args.iter().map(String::as_str).collect::<Array>()),
    );
    if !launch.env.is_empty() {
        let mut env = toml_edit::InlineTable::new();
        for (k, v) in &launch.env {
            env.insert(k, v.as_str().into());
        }
        entry.insert("env", value(env));
    }
    servers.insert(SERVER_NAME, Item::Table(entry));
    Ok(document.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            command: "/usr/local/bin/ipto".into(),
            args: vec!["mcp".into(), "--profile".into(), "ci".into()],
            env: vec![("IPTO_CONFIG".into(), "/etc/ipto.toml".into())],
        }
    }

    #[test]
    fn claude_code_keeps_every_other_entry() {
        let before = r#"{"theme":"dark","mcpServers":{"other":{"command":"x"}}}"#;
        let after: Value =
            serde_json::from_str(&claude_code(Some(before), &launch()).unwrap()).unwrap();
        assert_eq!(after["theme"], "dark");
        assert_eq!(after["mcpServers"]["other"]["command"], "x");
        assert_eq!(
            after["mcpServers"]["ipto"]["command"],
            "/usr/local/bin/ipto"
        );
        assert_eq!(
            after["mcpServers"]["ipto"]["args"],
            json!(["mcp", "--profile", "ci"])
        );
        assert_eq!(
            after["mcpServers"]["ipto"]["env"]["IPTO_CONFIG"],
            "/etc/ipto.toml"
        );
        // Installing again replaces the entry, nothing else.
        let again: Value =
            serde_json::from_str(&claude_code(Some(&after.to_string()), &launch()).unwrap())
                .unwrap();
        assert_eq!(again, after);
        assert!(claude_code(Some("{not json"), &launch()).is_err());
        assert!(claude_code(Some("[1]"), &launch()).is_err());
    }

    #[test]
    fn codex_keeps_comments_and_other_servers() {
        let before = "# mine\nmodel = \"o4\"\n\n[mcp_servers.other]\ncommand = \"x\"\n";
        let after = codex(Some(before), &launch()).unwrap();
        assert!(after.starts_with("# mine\nmodel = \"o4\"\n"), "{after}");
        let parsed: toml_edit::DocumentMut = after.parse().unwrap();
        assert_eq!(
            parsed["mcp_servers"]["other"]["command"].as_str(),
            Some("x")
        );
        assert_eq!(
            parsed["mcp_servers"]["ipto"]["command"].as_str(),
            Some("/usr/local/bin/ipto")
        );
        assert_eq!(
            parsed["mcp_servers"]["ipto"]["args"]
                .as_array()
                .map(|a| a.len()),
            Some(3)
        );
        assert_eq!(codex(Some(&after), &launch()).unwrap(), after);
        assert!(codex(Some("mcp_servers = 3"), &launch()).is_err());
        assert!(codex(None, &launch())
            .unwrap()
            .contains("[mcp_servers.ipto]"));
    }
}
