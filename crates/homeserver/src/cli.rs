//! The command line: `homeserver [serve|migrate|config check|openapi]`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Settings;

/// Monitor and manage a Linux host: live metrics, history and containers.
#[derive(Debug, Parser)]
#[command(name = "homeserver", version = crate::VERSION_LINE, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML); defaults are built in.
    #[arg(long, global = true, env = crate::config::CONFIG_ENV, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Configuration tools.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print the OpenAPI document.
    Openapi,
}

/// `homeserver config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration layers without starting.
    Check,
}

/// Parses the command line and runs it; the process's exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be up yet: the reason goes straight to stderr.
            let _ = writeln!(std::io::stderr(), "homeserver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .thread_name("homeserver")
        .build()
        .context("cannot start the async runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            let doc = crate::api::openapi().to_pretty_json().context("cannot render the OpenAPI document")?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{doc}").context("cannot write to stdout")?;
            Ok(())
        }
        Command::Config { action: ConfigAction::Check } => {
            let settings = Settings::load(cli.config.as_deref())?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "configuration is valid: listening on {}:{}, database {}",
                settings.server.host,
                settings.server.port,
                settings.database.path.display()
            )
            .context("cannot write to stdout")?;
            Ok(())
        }
        Command::Migrate => {
            let settings = Settings::load(cli.config.as_deref())?;
            crate::telemetry::init_tracing(&settings.logging);
            runtime()?.block_on(async {
                let report = homeserver_sqlite::SqliteStore::migrate(crate::startup::store_options(&settings)).await?;
                tracing::info!(
                    database = %settings.database.path.display(),
                    applied = report.applied,
                    version = report.version,
                    "database is up to date"
                );
                anyhow::Ok(())
            })
        }
        Command::Serve => {
            let settings = Settings::load(cli.config.as_deref())?;
            crate::telemetry::init_tracing(&settings.logging);
            runtime()?.block_on(async {
                let app = crate::startup::Application::build(settings).await?;
                app.run_until_stopped(crate::startup::shutdown_signal()).await
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed_and_defaults_to_serve() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["homeserver"]).unwrap();
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["homeserver", "config", "check", "--config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Config { action: ConfigAction::Check })));
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
        assert!(Cli::try_parse_from(["homeserver", "frobnicate"]).is_err());
    }
}
