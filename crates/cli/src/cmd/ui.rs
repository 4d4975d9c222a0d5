//! `wanlora ui`: the local web UI (jobs, queue, datasets, live training) from wanlora-server.

use anyhow::{Context, Result};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use wanlora_server::{ServerConfig, TrainerCommand};

#[derive(clap::Args)]
pub struct UiArgs {
    /// Address to listen on. Anything but loopback needs an access token.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = wanlora_server::DEFAULT_PORT)]
    pub port: u16,
    /// Data folder: the job database, datasets/, output/ (the jobs' training folder), uploads/.
    #[arg(long, default_value = "wanlora-ui")]
    pub data: PathBuf,
    /// Access token required on every API call (at least 12 characters).
    #[arg(long, env = "WANLORA_AUTH", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Largest accepted upload, per file (and for the unpacked content of a zip), in MiB.
    #[arg(long, default_value_t = 2048)]
    pub max_upload_mb: u64,
    /// Seconds a stopping trainer gets to save its checkpoint before it is killed.
    #[arg(long, default_value_t = 120)]
    pub stop_timeout: u64,
    /// Run this program with the job file as its only argument instead of `wanlora train`
    /// (for tests of the UI without a model).
    #[arg(long, hide = true)]
    pub trainer_program: Option<PathBuf>,
}

pub fn run(args: UiArgs) -> Result<()> {
    let trainer = match args.trainer_program {
        Some(program) => TrainerCommand {
            program,
            args: Vec::new(),
        },
        None => TrainerCommand::current_exe_train()
            .context("cannot find this executable to start `wanlora train` from")?,
    };
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        data_dir: args.data,
        auth_token: args.auth_token.filter(|t| !t.is_empty()),
        max_upload_bytes: args.max_upload_mb.saturating_mul(1 << 20),
        trainer,
        stop_timeout: Duration::from_secs(args.stop_timeout),
        poll_interval: Duration::from_millis(500),
    };
    wanlora_server::serve_blocking(config)?;
    Ok(())
}
