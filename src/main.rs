//! The `ipto` binary: parses the command line and runs the chosen subcommand.
//! Exit codes: 0 success, 1 runtime error or invalid configuration, 2 usage error.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::FromArgMatches;
use ipto::client;
use ipto::config::{AdminCommand, EventsCommand, LogFormat, ProjectionsCommand};
use ipto::{cli, Application, Cli, Command};

/// mimalloc instead of glibc's allocator: a request allocates many small short-lived objects
/// (rows, JSON values), and under 64 concurrent clients glibc's malloc and free took a quarter of
/// the server's samples (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let parsed = ipto::config::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                ErrorKind::InvalidValue | ErrorKind::ValueValidation => ExitCode::from(1),
                _ => ExitCode::from(2),
            };
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::ExtractPdf {
        memory_mb,
        cpu_seconds,
    } = command
    {
        // The indexer's child: nothing else starts (no logging, no runtime), its limits come first.
        return ipto::search::extract::extract_pdf_command(memory_mb, cpu_seconds);
    }
    if let Command::Client(command) = command {
        return client::main(command, cli.client);
    }
    let config = cli.config.with_environment_secrets();
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let outcome: Result<(), String> = runtime.block_on(async {
        match command {
            Command::Serve => {
                let app = Application::build(config)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(address = %app.local_addr(), "ipto listening");
                app.run_until(ipto::app::shutdown_signal())
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Migrate => cli::migrate(&config).await.map_err(|e| e.to_string()),
            Command::Projections(ProjectionsCommand::Status) => cli::projections_status(&config)
                .await
                .map_err(|e| e.to_string()),
            Command::Projections(ProjectionsCommand::Rebuild {
                name,
                all: _,
                offline,
            }) => cli::projections_rebuild(&config, name.as_deref(), offline)
                .await
                .map_err(|e| e.to_string()),
            Command::Admin(AdminCommand::Promote { email }) => cli::admin_promote(&config, &email)
                .await
                .map_err(|e| e.to_string()),
            Command::Admin(AdminCommand::Erase { email }) => cli::admin_erase(&config, &email)
                .await
                .map_err(|e| e.to_string()),
            Command::Events(EventsCommand::Export {
                after,
                aggregate_type,
            }) => cli::events_export(&config, after, aggregate_type.as_deref())
                .await
                .map_err(|e| e.to_string()),
            Command::Events(EventsCommand::Verify {
                export,
                head,
                public_key,
                proof,
            }) => cli::events_verify(
                &config,
                cli::VerifyArgs {
                    export,
                    head,
                    public_key,
                    proof,
                },
            )
            .await
            .map_err(|e| e.to_string()),
            Command::Events(EventsCommand::Prove { position }) => {
                cli::events_prove(&config, position)
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Events(EventsCommand::PublicKey) => {
                cli::events_public_key(&config).map_err(|e| e.to_string())
            }
            Command::ExtractPdf { .. } | Command::Client(_) => {
                unreachable!("run before the server's runtime starts")
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}
