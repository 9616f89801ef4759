//! Process-wide file-descriptor budget.
//!
//! Every socket, file and `sled` handle is a file descriptor, and when the process runs out of
//! them the HTTP listener can no longer accept connections (`Too many open files`). At start-up
//! `serve` raises the soft `RLIMIT_NOFILE` to the hard limit ([`raise_nofile_limit`]) and logs
//! the budget; services that open descriptors on behalf of unauthenticated clients size their
//! caps from [`nofile_soft_limit`] so they can never use more than a fixed share of it: HTTP
//! connections at most half ([`http_connection_budget`]), TFTP transfers at most a quarter.

use std::io;

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// The `RLIMIT_NOFILE` limits after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit now in force: the most descriptors this process may hold.
    pub soft: u64,
    /// The hard limit (the ceiling an unprivileged process may raise the soft limit to).
    pub hard: u64,
    /// The soft limit before it was raised, if it was.
    pub raised_from: Option<u64>,
}

/// The kernel's per-process ceiling (`fs.nr_open`): a soft limit above it is refused even when
/// the hard limit is `RLIM_INFINITY`.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped at `fs.nr_open`), as systemd
/// recommends for services that need many descriptors (systemd's default is soft 1024, hard
/// 524288). Never lowers anything.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let mut target = hard;
    if hard == RLIM_INFINITY
        && let Some(max) = nr_open()
    {
        target = max;
    }
    if soft != RLIM_INFINITY && target > soft {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(io::Error::from)?;
        return Ok(NofileLimit {
            soft: target,
            hard,
            raised_from: Some(soft),
        });
    }
    Ok(NofileLimit {
        soft,
        hard,
        raised_from: None,
    })
}

/// How many HTTP connections the descriptor budget allows: half of the soft limit (TFTP
/// keeps to a quarter, see `tftp::fd_session_cap`; the last quarter is for files, the store
/// and upstream connections), so neither service can starve the other.
pub fn http_connection_budget(soft_limit: u64) -> u64 {
    (soft_limit / 2).max(16)
}

/// The soft `RLIMIT_NOFILE` in force, or `None` if it cannot be read. `RLIM_INFINITY` reads
/// as `u64::MAX`.
pub fn nofile_soft_limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Descriptors this process holds now (entries of `/proc/self/fd`), if readable.
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// Raises the limit (see [`raise_nofile_limit`]) and logs the resulting budget. Failure is
/// logged, not fatal: the services still cap themselves from whatever limit is in force.
pub fn init_fd_budget() {
    match raise_nofile_limit() {
        Ok(limit) => {
            if let Some(from) = limit.raised_from {
                tracing::info!(
                    soft = limit.soft,
                    hard = limit.hard,
                    raised_from = from,
                    open = ?open_fds(),
                    "file-descriptor limit raised to the hard limit"
                );
            } else {
                tracing::info!(
                    soft = limit.soft,
                    hard = limit.hard,
                    open = ?open_fds(),
                    "file-descriptor limit"
                );
            }
            if limit.soft < 1024 {
                tracing::warn!(
                    soft = limit.soft,
                    "the file-descriptor limit is low: TFTP sessions are capped to an eighth of \
                     it and HTTP may refuse connections under load; raise LimitNOFILE"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read or raise RLIMIT_NOFILE"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_never_lowers_and_reaches_the_hard_limit() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let got = raise_nofile_limit().unwrap();
        assert!(got.soft >= soft);
        assert_eq!(got.hard, hard);
        if hard != RLIM_INFINITY {
            assert_eq!(got.soft, hard);
        }
        assert_eq!(nofile_soft_limit(), Some(got.soft));
        // Idempotent.
        assert_eq!(raise_nofile_limit().unwrap().raised_from, None);
        assert!(open_fds().unwrap() >= 3);
    }
}
