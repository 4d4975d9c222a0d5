//! The wanlora web UI: a local web server that keeps jobs and their queue in SQLite, runs each job
//! as a `wanlora train` child process, follows the job folder the trainer writes
//! (docs/JOB-FOLDER.md) and pushes what changes to the browser with server-sent events.
//!
//! It does not link libtorch: everything it knows about training comes from the job folder.

pub mod api;
pub mod assets;
pub mod auth;
pub mod datasets;
pub mod db;
pub mod devices;
pub mod error;
pub mod job_folder;
pub mod jobspec;
pub mod login_limit;
pub mod paths;
pub mod process;
pub mod settings;
pub mod supervisor;
pub mod thumbnails;
pub mod tree;
pub mod uploads;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use process::TrainerCommand;
pub use supervisor::Supervisor;

/// Default port (the one AI Toolkit's UI uses, so bookmarks keep working).
pub const DEFAULT_PORT: u16 = 8675;
/// Default per-file upload limit.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to listen on {0} without an access token: set WANLORA_AUTH or pass --auth-token \
         (or bind to 127.0.0.1)"
    )]
    TokenRequired(IpAddr),
    #[error("the access token is too short: use at least 12 characters")]
    WeakToken,
    #[error(transparent)]
    Path(#[from] paths::PathError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Supervisor(#[from] supervisor::SupervisorError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// Everything `wanlora ui` decides from its command line.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub port: u16,
    /// Holds the database, datasets/, output/ (the jobs' training_folder), uploads/.
    pub data_dir: PathBuf,
    pub auth_token: Option<String>,
    /// Per-file limit for uploads (and the unpacked total of an archive).
    pub max_upload_bytes: u64,
    /// What runs a job: normally this executable with `train`.
    pub trainer: TrainerCommand,
    /// How long a stopping trainer may take to save before it is killed.
    pub stop_timeout: Duration,
    /// How often the queue and the job folders are looked at.
    pub poll_interval: Duration,
}

impl ServerConfig {
    /// Refuses settings that would expose the UI: a non-loopback address needs a token.
    pub fn check(&self) -> Result<(), ServerError> {
        let token = self.auth_token.as_deref().unwrap_or("");
        if !self.host.is_loopback() && token.is_empty() {
            return Err(ServerError::TokenRequired(self.host));
        }
        if !token.is_empty() && token.len() < 12 {
            return Err(ServerError::WeakToken);
        }
        Ok(())
    }
}

/// A ready server: its router, and the supervisor whose loop [`serve`] runs.
pub struct App {
    pub router: axum::Router,
    pub state: api::AppState,
    pub supervisor: Arc<Supervisor>,
    /// Setting it to true ends the live event streams (done by [`serve`] on Ctrl+C).
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Opens the data folder and database, closes or adopts jobs left by an earlier run.
    pub async fn open(config: &ServerConfig) -> Result<App, ServerError> {
        config.check()?;
        let dirs = paths::DataDirs::create(&config.data_dir)?;
        let database = db::Db::new(db::open(&dirs.database)?);
        let supervisor = Supervisor::new(
            database.clone(),
            dirs.clone(),
            config.trainer.clone(),
            config.stop_timeout,
        );
        supervisor.recover().await?;
        let access = auth::Access::new(config.auth_token.clone(), config.host.is_loopback());
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let state = api::AppState::new(api::Shared {
            dirs,
            db: database,
            supervisor: supervisor.clone(),
            max_upload_bytes: config.max_upload_bytes,
            poll_interval: config.poll_interval,
            shutdown: shutdown_rx,
        });
        let router = api::router(state.clone(), access);
        Ok(App {
            router,
            state,
            supervisor,
            shutdown,
        })
    }
}

/// Runs the UI until the process is stopped. Trainers keep running after it stops.
pub async fn serve(config: ServerConfig) -> Result<(), ServerError> {
    let app = App::open(&config).await?;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    tokio::spawn(app.supervisor.clone().run(config.poll_interval));
    let local = listener.local_addr().unwrap_or(addr);
    println!(
        "wanlora UI: http://{local}/  (data folder {}; Ctrl+C stops the UI, running jobs go on)",
        app.state.dirs.root.display()
    );
    let shutdown = app.shutdown;
    // The client address is what the login limit counts wrong tokens by.
    let service = app
        .router
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = shutdown.send(true);
        })
        .await
        .map_err(ServerError::Serve)
}

/// [`serve`] on a runtime of its own, for callers without one (the `wanlora ui` command).
pub fn serve_blocking(config: ServerConfig) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Serve)?;
    runtime.block_on(serve(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(host: &str, token: Option<&str>) -> ServerConfig {
        ServerConfig {
            host: host.parse().unwrap(),
            port: 0,
            data_dir: "/tmp".into(),
            auth_token: token.map(str::to_string),
            max_upload_bytes: 1,
            trainer: TrainerCommand {
                program: "/bin/true".into(),
                args: vec![],
            },
            stop_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn only_loopback_may_run_without_a_token() {
        assert!(config("127.0.0.1", None).check().is_ok());
        assert!(config("::1", None).check().is_ok());
        assert!(matches!(
            config("0.0.0.0", None).check(),
            Err(ServerError::TokenRequired(_))
        ));
        assert!(matches!(
            config("0.0.0.0", Some("")).check(),
            Err(ServerError::TokenRequired(_))
        ));
        assert!(matches!(
            config("0.0.0.0", Some("short")).check(),
            Err(ServerError::WeakToken)
        ));
        assert!(config("0.0.0.0", Some("a-long-enough-token"))
            .check()
            .is_ok());
    }
}
