//! Process-wide file-descriptor budget.
//!
//! Every socket, file and `sled` handle is a file descriptor, and when the process runs out of
//! them the HTTP listener can no longer accept connections (`Too many open files`). At start-up
//! `serve` raises the soft `RLIMIT_NOFILE` to the hard limit ([`raise_nofile_limit`]) and logs
//! the budget; services that open descriptors on behalf of unauthenticated clients size their
//! caps from [`nofile_soft_limit`] so they can never use more than a fixed share of it: HTTP
//! connections at most half ([`http_connection_budget`]), TFTP transfers at most a quarter.
//!
//! The boot-path UDP sockets (DHCP, TFTP) get large receive buffers the same way, best effort
//! ([`grow_recv_buffer`]): a boot storm's burst of requests must be queued, not dropped.

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

/// Receive buffer the boot-path UDP services (proxy/full DHCP, TFTP) ask for: a storm of
/// thousands of machines sends its DISCOVERs and read requests within milliseconds, and each
/// small datagram costs the socket ≈ 1–2 KiB of buffer (the kernel's `truesize`), so 8 MiB
/// (which the kernel doubles for bookkeeping) holds a burst of several thousand requests.
pub const UDP_RECV_BUFFER: usize = 8 << 20;

/// Asks for a `bytes` receive buffer on `socket`: `SO_RCVBUFFORCE` where the process may
/// (`CAP_NET_ADMIN`, e.g. root), else `SO_RCVBUF`, which the kernel silently caps at
/// `net.core.rmem_max` (208 KiB on a stock Debian kernel). Returns the size in force, as the
/// kernel reports it (twice what it grants as payload), so callers can warn when it is small.
pub fn grow_recv_buffer(socket: &socket2::Socket, bytes: usize) -> Option<usize> {
    use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
    if setsockopt(socket, RcvBufForce, &bytes).is_err() {
        let _ = socket.set_recv_buffer_size(bytes);
    }
    socket.recv_buffer_size().ok()
}

/// Logs (once per process) when a receive buffer in force is below what was asked for, with
/// the knob that raises it.
pub fn warn_small_recv_buffer(service: &str, got: Option<usize>, wanted: usize) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // The kernel reports twice the granted payload size: below `wanted` means under half.
    if let Some(got) = got
        && got < wanted
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            service,
            receive_buffer_kib = got / 1024,
            wanted_kib = wanted * 2 / 1024,
            "UDP receive buffer capped by net.core.rmem_max: a boot storm of thousands of machines \
             may see drops (raise it: sysctl -w net.core.rmem_max=16777216)"
        );
    }
}

#[cfg(test)]
mod recv_buffer_tests {
    use super::*;

    #[test]
    fn asks_for_a_large_buffer_and_reports_what_it_got() {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        let before = socket.recv_buffer_size().unwrap();
        let got = grow_recv_buffer(&socket, UDP_RECV_BUFFER).unwrap();
        assert!(got >= before, "{got} < {before}");
        // As root (CAP_NET_ADMIN) the force option grants it all, doubled by the kernel.
        if nix::unistd::geteuid().is_root() {
            assert!(got >= 2 * UDP_RECV_BUFFER, "{got}");
        }
    }
}
