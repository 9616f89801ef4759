//! `bootfactory serve`: the appliance itself.

use std::process::ExitCode;

use anyhow::Context as _;

use super::Context;

/// Loads the configuration, starts logging and runs the server until SIGTERM/SIGINT.
pub(super) fn run(cx: &Context) -> anyhow::Result<ExitCode> {
    let config = cx.load_config()?;
    crate::logging::init(&config.log);
    crate::limits::init_fd_budget();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bootfactory")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers first: a SIGTERM at any point from here on is a graceful stop.
        let shutdown = crate::server::shutdown_signal();
        let app = crate::server::App::open(config).await?;
        app.run(shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
