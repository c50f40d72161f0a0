//! Builds the application from its settings and runs it until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use homeserver_domain::{
    AuditRepository, Clock, DeviceService, HistoryService, HistoryWriter, ProfileService, SampleBuffer, Sampler, Scope,
    SnapshotRepository, SnapshotSource, TokenRepository, TokenService, UnixMillis, WriterSettings,
};
use homeserver_sqlite::{SqliteStore, StoreOptions};
use homeserver_sysinfo::{SourceConfig, SysinfoSource};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Limits, Security};
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::live::LiveHub;
use crate::state::{AppState, Probe};
use crate::tokens::{TokenAdmin, TokenTable};

/// Where and how the database named in `settings` is opened.
pub fn store_options(settings: &Settings) -> StoreOptions {
    StoreOptions { max_connections: settings.database.max_connections, ..StoreOptions::new(&settings.database.path) }
}

/// Opens (creating if needed) and migrates the database named in `settings`.
pub async fn open_store(settings: &Settings) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(store_options(settings)).await.map_err(anyhow::Error::from)
}

struct StoreProbe(Arc<SqliteStore>);

#[async_trait]
impl Probe for StoreProbe {
    async fn check(&self) -> Result<(), String> {
        self.0.health_check().await.map_err(|e| e.to_string())
    }
}

/// A built application: listening, with its background work ready to run.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: crate::api::App,
    state: AppState,
    store: Arc<SqliteStore>,
    sampler: Sampler,
    writer: Option<HistoryWriter>,
    shutdown_tx: watch::Sender<bool>,
    security: Arc<Security>,
    token_table: Arc<TokenTable>,
    initial_token: Option<String>,
    figures: Arc<crate::container_stats::ContainerFigures>,
    docker: Option<homeserver_docker::DockerRuntime>,
}

/// Name of the admin token made at first start.
pub const INITIAL_TOKEN_NAME: &str = "initial-admin";

/// On an empty token table, creates an admin token and returns its secret.
async fn initial_admin(tokens: &TokenAdmin) -> anyhow::Result<Option<String>> {
    if !tokens.is_empty().await.context("cannot read tokens")? {
        return Ok(None);
    }
    let secret = crate::tokens::generate()?;
    tokens
        .create(crate::tokens::new_id(), INITIAL_TOKEN_NAME, vec![Scope::Admin], None, secret.hash.clone())
        .await
        .context("cannot create the first admin token")?;
    Ok(Some(secret.token))
}

impl Application {
    /// Opens the database, reads the host once, binds the listener. On a
    /// database without tokens, creates an admin token (see
    /// [`Application::initial_token`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let store = Arc::new(open_store(&settings).await?);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let token_repo: Arc<dyn TokenRepository> = store.clone();
        let token_table = Arc::new(
            TokenTable::load(Arc::clone(&token_repo), Arc::clone(&clock)).await.context("cannot load tokens")?,
        );
        let tokens = Arc::new(TokenAdmin::new(
            TokenService::new(token_repo, Arc::clone(&clock)),
            Some(Arc::clone(&token_table)),
        ));
        let initial_token = initial_admin(&tokens).await?;
        let security = Arc::new(
            Security::new(
                token_table.clone(),
                Limits {
                    per_second: settings.rate_limit.per_second,
                    burst: settings.rate_limit.burst,
                    max_failures_per_minute: settings.auth.max_failures_per_minute,
                    max_ws_per_token: settings.websocket.max_connections_per_token,
                },
            )
            .with_audit(crate::auth::AuditSink { repository: store.clone(), clock: Arc::clone(&clock) }),
        );
        let source = SysinfoSource::new(SourceConfig {
            proc_root: settings.host.proc_root.clone(),
            sys_root: settings.host.sys_root.clone(),
            inventory_refresh_secs: settings.host.inventory_refresh_secs,
            ..SourceConfig::default()
        })
        .context("cannot read the host's /proc and /sys")?;
        let source: Arc<dyn SnapshotSource> = Arc::new(source);
        let host_info = Arc::new(source.host_info().await.context("cannot read host facts")?);

        let devices = Arc::new(DeviceService::new(
            Arc::new(crate::devices::inventory(&settings)),
            store.clone(),
            Arc::clone(&clock),
        ));
        // A failed first scan leaves the registry as the last run saw it.
        if let Err(e) = devices.rescan().await {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "first device scan failed");
            devices.refresh_mask().await.context("cannot read the device registry")?;
        }
        let profiles = Arc::new(ProfileService::new(
            store.clone(),
            Arc::clone(&devices),
            Arc::clone(&clock),
            host_info.logical_cores,
        ));
        profiles.ensure_default().await.context("cannot create the default profile")?;
        let source: Arc<dyn SnapshotSource> = Arc::new(crate::devices::Masked::new(source, Arc::clone(&devices)));

        let operations =
            crate::operations::OperationRunner::new(store.clone(), Arc::clone(&clock), settings.containers.workers);
        match operations.recover().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(interrupted = n, "operations left running by the previous process were marked failed")
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot recover operations")),
        }
        let (containers, docker) =
            container_service(&settings, store.clone(), Arc::clone(&clock), host_info.logical_cores);

        let hub = Arc::new(LiveHub::new(settings.websocket.client_queue));
        let repository: Arc<dyn SnapshotRepository> = store.clone();
        let interval_ms = settings.sampling.interval_ms as i64;
        let (buffer, writer, history) = if settings.history.enabled {
            let buffer = Arc::new(SampleBuffer::new(settings.history.buffer_capacity));
            let writer = HistoryWriter::new(
                Arc::clone(&repository),
                Arc::clone(&clock),
                Arc::clone(&buffer),
                WriterSettings {
                    flush_interval_ms: settings.history.flush_interval_secs as i64 * UnixMillis::SECOND,
                    prune_interval_ms: settings.history.prune_interval_secs as i64 * UnixMillis::SECOND,
                    retention: settings.retention_policy(),
                },
            );
            let history = HistoryService::new(
                Arc::clone(&repository),
                Arc::clone(&clock),
                settings.retention_policy(),
                interval_ms,
            );
            (Some(buffer), Some(writer), Some(Arc::new(history)))
        } else {
            (None, None, None)
        };
        let figures = Arc::new(crate::container_stats::ContainerFigures::default());
        let source: Arc<dyn SnapshotSource> = match &containers {
            Some(_) => Arc::new(crate::container_stats::WithContainers::new(source, Arc::clone(&figures))),
            None => source,
        };
        let sampler = Sampler::new(source, hub.clone(), Arc::clone(&clock), buffer, interval_ms);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = AppState {
            hub,
            history,
            host_info,
            database: Arc::new(StoreProbe(store.clone())),
            sampler: sampler.health(),
            writer: writer.as_ref().map(HistoryWriter::stats),
            settings: Arc::clone(&settings),
            clock,
            tokens,
            audit: store.clone(),
            containers,
            devices,
            profiles,
            operations,
            shutdown: shutdown_rx,
        };
        let router = crate::api::router(state.clone(), Arc::clone(&security))
            .context("every route must declare its scope or be public")?;
        let addr = SocketAddr::new(settings.server.host, settings.server.port);
        let listener = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let local_addr = listener.local_addr().context("listener has no local address")?;
        Ok(Self {
            listener,
            local_addr,
            router,
            state,
            store,
            sampler,
            writer,
            shutdown_tx,
            security,
            token_table,
            initial_token,
            figures,
            docker,
        })
    }

    /// The admin token created because the database had none, shown once.
    pub fn initial_token(&self) -> Option<&str> {
        self.initial_token.as_deref()
    }

    /// The port actually bound (useful with `server.port = 0`).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then: stop accepting, close
    /// WebSocket sessions, drain requests (up to `server.shutdown_grace_secs`),
    /// stop the sampler, flush every buffered sample, close the database.
    pub async fn run_until_stopped<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            local_addr,
            router,
            state,
            store,
            sampler,
            writer,
            shutdown_tx,
            security,
            token_table,
            initial_token: _,
            figures,
            docker,
        } = self;
        let settings = Arc::clone(&state.settings);
        tracing::info!(%local_addr, database = %settings.database.path.display(), "homeserver listening");

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };

        // Start the sampler before serving: the first snapshot comes within one interval.
        let sampler_task = tokio::spawn({
            let stop = stopped(stop_rx.clone());
            async move { sampler.run(stop).await }
        });
        let (writer_stop_tx, writer_stop_rx) = watch::channel(false);
        let writer_task = writer.map(|w| {
            let stop = stopped(writer_stop_rx);
            tokio::spawn(async move { w.run(stop).await })
        });
        let tickers = tokio::spawn(state.hub.clone().run_seed_tickers(
            Duration::from_millis(settings.publishing.cpu_stats_frequency_ms),
            Duration::from_millis(settings.publishing.ram_stats_frequency_ms),
            state.shutdown.clone(),
        ));
        let follow_tokens = tokio::spawn(token_table.follow(Duration::from_secs(1), state.shutdown.clone()));
        let housekeeping = tokio::spawn(housekeeping(
            security,
            Arc::clone(&state.audit),
            Arc::clone(&state.clock),
            settings.retention.audit_days,
            state.shutdown.clone(),
        ));

        let rescans = tokio::spawn(crate::devices::rescan_loop(
            Arc::clone(&state.devices),
            Duration::from_secs(settings.devices.rescan_interval_secs),
            state.shutdown.clone(),
        ));
        let collector = tokio::spawn({
            let shutdown = state.shutdown.clone();
            let every = Duration::from_millis(settings.sampling.interval_ms);
            let service = state.containers.clone();
            async move {
                if let Some(service) = service {
                    crate::container_stats::collect(service, figures, every, shutdown).await;
                }
            }
        });
        // Docker's events keep its containers current between collector passes.
        let docker_events = tokio::spawn({
            let shutdown = state.shutdown.clone();
            let service = state.containers.clone();
            async move {
                if let (Some(service), Some(docker)) = (service, docker) {
                    crate::container_stats::follow_docker_events(service, docker, shutdown).await;
                }
            }
        });
        let server_shutdown = {
            let shutdown_tx = shutdown_tx.clone();
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                tracing::info!("shutdown requested: draining requests");
                let _ = shutdown_tx.send(true);
                let _ = stop_tx.send(true);
            }
        };
        let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
        let server = serve(listener, router, settings.server.tls(), server_shutdown, grace);
        // The server (and every request it still holds) is dropped at the end
        // of this statement, so nothing outlives the drain.
        let served = tokio::select! {
            r = server => r,
            _ = async {
                let _ = stop_rx.clone().wait_for(|v| *v).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the grace period; closing them");
                Ok(())
            }
        };
        // Whatever ended serving, stop everything in order.
        let _ = shutdown_tx.send(true);
        let _ = stop_tx.send(true);
        if let Err(e) = sampler_task.await {
            tracing::error!(error = %e, "sampler task failed");
        }
        let _ = writer_stop_tx.send(true);
        if let Some(task) = writer_task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "history writer task failed");
        }
        for task in [tickers, follow_tokens, housekeeping, collector, rescans, docker_events] {
            task.abort();
            let _ = task.await;
        }
        drop(state);
        match Arc::try_unwrap(store) {
            Ok(store) => {
                if let Err(e) = store.close().await {
                    tracing::error!(error = %e, "closing the database failed");
                }
            }
            Err(_) => tracing::warn!("the database is still in use at shutdown; it closes with the process"),
        }
        tracing::info!("homeserver stopped");
        served
    }
}

/// A listener with a deep accept queue: after a restart, thousands of
/// WebSocket clients reconnect at once, and the default queue of 128 makes
/// the overflow wait a second for a SYN retry each (the kernel caps the
/// backlog at `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The configured container runtimes over the store (`None` when every
/// runtime is disabled), and the Docker runtime whose events to follow.
fn container_service(
    settings: &Settings,
    store: Arc<SqliteStore>,
    clock: Arc<dyn Clock>,
    cores: u32,
) -> (Option<Arc<homeserver_domain::ContainerService>>, Option<homeserver_docker::DockerRuntime>) {
    let mut runtimes: Vec<Arc<dyn homeserver_domain::ContainerRuntime>> = Vec::new();
    let mut docker = None;
    if settings.docker.enabled {
        let runtime = homeserver_docker::DockerRuntime::connect(homeserver_docker::DockerOptions {
            socket: settings.docker.socket.clone(),
            timeout: Duration::from_secs(settings.docker.timeout_secs),
        });
        runtimes.push(Arc::new(runtime.clone()));
        docker = Some(runtime);
    }
    if settings.lxc.enabled {
        let path = |p: &std::path::Path| (!p.as_os_str().is_empty()).then(|| p.to_path_buf());
        runtimes.push(Arc::new(homeserver_lxc::LxcRuntime::new(homeserver_lxc::LxcOptions {
            lxcpath: path(&settings.lxc.lxcpath),
            default_config: path(&settings.lxc.config),
            command_timeout: Duration::from_secs(settings.lxc.timeout_secs),
            ..homeserver_lxc::LxcOptions::default()
        })));
    }
    if runtimes.is_empty() {
        return (None, None);
    }
    let ids: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| uuid::Uuid::new_v4().to_string());
    // Half the sampling interval: a poll never reuses the previous poll's
    // list, so outside changes to LXC still show within one interval, and
    // API lists in between cost no `lxc-ls` each.
    let service = homeserver_domain::ContainerService::new(runtimes, store, clock, ids, cores)
        .with_polled_list_reuse(Duration::from_millis(settings.sampling.interval_ms / 2));
    (Some(Arc::new(service)), docker)
}

/// Serves `router` on `listener`, over TLS when `tls` names a certificate
/// and key, until `shutdown` completes and the requests in flight drain.
async fn serve(
    listener: TcpListener,
    router: crate::api::App,
    tls: Option<(&std::path::Path, &std::path::Path)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(router);
    let Some((cert, key)) = tls else {
        return axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("HTTP server failed");
    };
    // One process-wide crypto provider; a second install is a no-op error.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| format!("cannot load TLS certificate {} and key {}", cert.display(), key.display()))?;
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.await;
            handle.graceful_shutdown(Some(grace));
        }
    });
    let listener = listener.into_std().context("cannot hand the listener to the TLS server")?;
    axum_server::from_tcp_rustls(listener, config)
        .context("cannot start the TLS server")?
        .handle(handle)
        .serve(app)
        .await
        .context("HTTPS server failed")
}

/// Periodic upkeep: forget idle rate-limit keys (every minute), prune the
/// audit log (every hour).
async fn housekeeping(
    security: Arc<Security>,
    audit: Arc<dyn AuditRepository>,
    clock: Arc<dyn Clock>,
    audit_days: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        ticks += 1;
        security.housekeeping();
        if ticks.is_multiple_of(60) {
            let before = clock.now().add_millis(-(audit_days as i64) * UnixMillis::DAY);
            match audit.prune(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "audit log pruned"),
                Err(e) => tracing::warn!(error = %e, "audit log prune failed"),
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
