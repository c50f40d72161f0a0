//! The command line: `homeserver [serve|migrate|config check|openapi]`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use homeserver_domain::{Scope, TokenId, TokenService};

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
    /// Manage API tokens (works beside a running service).
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// `homeserver token …`.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token; its secret is printed alone on the last line of stdout.
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// `read`, `operate` or `admin` (each includes the ones before).
        #[arg(long)]
        scope: Scope,
        /// Expiry, RFC 3339 (default: never).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; a running service refuses it within a second.
    Revoke {
        /// The token's id (see `token list`).
        id: String,
    },
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
                if let Some(token) = app.initial_token() {
                    // Shown once, here only: never through the logger.
                    let _ = writeln!(
                        std::io::stderr(),
                        "homeserver: the database had no API token, so an admin token was created.\n\
                         homeserver: it is shown this once and stored only as a hash:\n{token}"
                    );
                }
                app.run_until_stopped(crate::startup::shutdown_signal()).await
            })
        }
        Command::Token { action } => {
            let settings = Settings::load(cli.config.as_deref())?;
            runtime()?.block_on(token_command(&settings, action))
        }
    }
}

async fn token_command(settings: &Settings, action: TokenAction) -> anyhow::Result<()> {
    let store = std::sync::Arc::new(crate::startup::open_store(settings).await?);
    let clock = std::sync::Arc::new(crate::clock::SystemClock);
    let service = TokenService::new(store.clone(), clock);
    let result = run_token_action(&service, action).await;
    drop(service);
    if let Ok(store) = std::sync::Arc::try_unwrap(store) {
        store.close().await.context("cannot close the database")?;
    }
    result
}

fn token_error(e: homeserver_domain::TokenError) -> anyhow::Error {
    match e {
        homeserver_domain::TokenError::Invalid(errors) => {
            anyhow::anyhow!("invalid token: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        }
        other => anyhow::Error::new(other),
    }
}

async fn run_token_action(service: &TokenService, action: TokenAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        TokenAction::Create { name, scope, expires_at } => {
            let expires_at = match expires_at {
                None => None,
                Some(t) => Some(
                    crate::api::dto::parse_instant(&t)
                        .ok_or_else(|| anyhow::anyhow!("--expires-at {t:?} is not an RFC 3339 time"))?,
                ),
            };
            let secret = crate::tokens::generate()?;
            let token = service
                .create(crate::tokens::new_id(), &name, vec![scope], expires_at, secret.hash.clone())
                .await
                .map_err(token_error)?;
            writeln!(out, "created token {:?} (id {}, scope {})", token.name, token.id, scope)?;
            writeln!(out, "{}", secret.token)?;
        }
        TokenAction::List => {
            for t in service.list().await.map_err(token_error)? {
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(at), _) => format!("revoked {}", crate::api::dto::rfc3339(at)),
                    (None, Some(at)) => format!("expires {}", crate::api::dto::rfc3339(at)),
                    (None, None) => "active".to_owned(),
                };
                writeln!(out, "{}\t{}\t{}\t{}", t.id, t.name, scopes.join(","), state)?;
            }
        }
        TokenAction::Revoke { id } => {
            let t = service.revoke(&TokenId::new(id)).await.map_err(token_error)?;
            writeln!(out, "revoked token {:?} (id {})", t.name, t.id)?;
        }
    }
    Ok(())
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
