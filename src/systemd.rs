//! systemd integration: `Type=notify` readiness (`READY=1` once every enabled listener is up),
//! `STATUS=` lines, `RELOADING=1`/`STOPPING=1`, and the watchdog. Everything is a no-op when
//! not started by systemd (`NOTIFY_SOCKET` unset).

use std::time::Duration;

use sd_notify::NotifyState;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells systemd the service is ready, with a status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload started (`ready` ends it).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    // systemd ≥ 253 (Type=notify-reload) wants MONOTONIC_USEC with RELOADING=1.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Starts pinging the watchdog at half its interval, if `WatchdogSec=` is set.
pub fn spawn_watchdog() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    });
}

fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}
