//! Read-only TFTP server for the embedded iPXE binaries (and an optional extra directory).
//!
//! The protocol engine is [`async_tftp`] 0.4 (RFC 1350 plus the option extension RFC 2347,
//! blksize RFC 2348, timeout/tsize RFC 2349 and windowsize RFC 7440). This module adds what a
//! network-boot appliance needs around it:
//!
//! - **What is served** ([`TftpFiles`], [`files`]): the embedded files by name, then regular
//!   files under [`TftpConfig::extra_dir`]. [`resolve_request`] is the path policy: one leading
//!   `/` is tolerated, everything that could leave the served set is refused with TFTP error 2
//!   (access violation). Unknown names get error 1 (file not found). Write requests get error 2.
//! - **Options**: `blksize` is clamped to [`TftpConfig::max_block_size`] (by default derived
//!   from the interface MTU: MTU − 20 IP − 8 UDP − 4 TFTP, and 1468 when the MTU is unknown or
//!   the interface is loopback); `tsize` is answered with the real size; `windowsize` is
//!   honoured up to [`TftpConfig::window_size_limit`]; a client `timeout` option is **not**
//!   accepted (see below).
//! - **Sockets** ([`net`]): `SO_BINDTODEVICE` when an interface is configured, a large receive
//!   buffer for boot storms, and errors that name the missing capability.
//! - **Admission** ([`sessions`]): at most [`TftpConfig::max_sessions`] transfers in progress,
//!   and at most [`TftpConfig::max_sessions_per_client`] per client IP address. A request over
//!   either cap gets TFTP error 0 with a "server busy"/"too many transfers from …" message,
//!   before any file or socket is opened for it, and is counted in
//!   [`TftpStats::refused_busy`] / [`TftpStats::refused_client_busy`]. The global cap is also
//!   held to an eighth of the process's `RLIMIT_NOFILE` ([`fd_session_cap`]): a transfer holds at
//!   most two descriptors (its socket and, for the extra directory, the file), so TFTP can never
//!   take more than a quarter of the descriptors and starve the HTTP side.
//! - **Accounting**: [`TftpStats`] counters and one `info` event per transfer.
//!
//! # Bounded session lifetime
//!
//! async-tftp keeps a transfer alive while it retransmits to a silent client: (retries + 1) ×
//! timeout. RFC 2349 lets a client set that timeout to up to 255 s, and the engine would use the
//! client's value for its own retransmissions — 1,000 requests with `timeout 255` would pin
//! 1,000 descriptors for 25 minutes. The engine can only honour or ignore the option for every
//! request (RFC 2349 has the server either echo the client's value in the OACK or leave the
//! option out; it cannot answer a smaller one), so the service runs it with
//! `ignore_client_timeout`: the option is left out of the OACK and the server's own
//! [`TftpConfig::timeout`] (at most [`MAX_TIMEOUT`]) paces retransmissions. A client keeps its own
//! timer for its own retransmissions, as RFC 2349 allows when the option is not acknowledged.
//! An abandoned transfer (the client stopped answering, or sent an ERROR, which the engine
//! ignores) therefore frees its slot and descriptors after at most
//! `(MAX_SEND_RETRIES + 1) × timeout`: 12 s with the default 2 s, 60 s at the 10 s maximum.
//!
//! # Per-transfer sockets and the reply source address
//!
//! Like every standard TFTP server, async-tftp answers each request from a new socket
//! (a new TID). It binds that socket to **the listening socket's local IP** with port 0
//! (`async-tftp-0.4.2/src/server/read_req.rs`, `ReadRequest::init`; errors use the same
//! address, `server.rs`, `send_error`). Consequences, checked by `tests/tftp_server.rs`
//! (`multihomed_reply_source`, in network namespaces):
//!
//! - Listening on a **specific address** (e.g. `192.0.2.2:69`): every reply comes from exactly
//!   that address. This is the configuration to use on multi-homed hosts — bind to the same
//!   address the DHCP side advertises as `siaddr`/option 54 (one service per address).
//! - Listening on the **wildcard** (`0.0.0.0:69`): the transfer socket is bound to `0.0.0.0`, so
//!   the kernel picks the source address by route lookup — the preferred source of the route
//!   to the client, usually the *primary* address of the outgoing interface. A client that
//!   talked to a secondary address (or a VIP, or an address on another interface) gets its
//!   data from a different IP, and firmware that filters by server IP (EDK2's MTFTP configures
//!   its UDP child with the server address as remote address) drops it.
//! - The per-transfer sockets are **not** bound to the interface (`SO_BINDTODEVICE` applies to
//!   the listening socket only); replies follow the routing table.
//!
//! # Other async-tftp behaviour worth knowing
//!
//! - It ignores a client's ERROR packet during a read: EDK2 asks for `tsize` and then aborts
//!   with an ERROR, and the abandoned transfer retransmits its OACK until it gives up. We limit
//!   that to [`MAX_SEND_RETRIES`] retransmissions (the library default is 100).
//! - A request from a client address and port that already has a live transfer is ignored. A
//!   client that re-uses its port after aborting a `tsize` probe therefore receives the
//!   abandoned transfer's next OACK retransmission (one timeout later) and, accepting it,
//!   continues *that* transfer with the probe's options — the file arrives intact, but late and
//!   at the probe's block size (`same_port_rerequest_after_abort_continues_the_old_transfer`).
//!   Clients that open a fresh socket per request (curl, atftp) are unaffected.
//! - The negotiated options are not visible to the handler: the `blksize` in our transfer log is
//!   observed from the engine's read size, and the window size is logged as the configured limit.
//! - The TFTP error text for code 2 is the library's fixed "Permission denied" (the code is
//!   what clients act on); code 1 reads "File not found".

pub(crate) mod files;
pub(crate) mod net;
pub mod packet;
mod server;
pub(crate) mod sessions;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use files::{Refusal, TftpFiles, resolve_request};
pub use server::TftpService;
pub use sessions::Busy;

/// How many times a data window (or the OACK) is retransmitted before a transfer is abandoned.
/// With the default 2 s timeout a dead client holds a transfer for about 12 s.
pub const MAX_SEND_RETRIES: u32 = 5;

/// Largest retransmission timeout the server uses: it bounds how long an abandoned transfer
/// holds its slot, `(MAX_SEND_RETRIES + 1) × timeout` = 60 s.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on transfers in progress. A PXE machine holds one or two at a time (UEFI firmware
/// probes `tsize`, aborts and asks again, and the aborted transfer lingers until it times out),
/// so 512 lets a storm of 200–250 machines boot at once, while each transfer costs one or two
/// descriptors and a few KB.
pub const DEFAULT_MAX_SESSIONS: usize = 512;

/// Default cap on transfers in progress from one client address: the firmware's two, plus a
/// retry or two while aborted transfers linger. One host can take at most 8 of the 512 slots.
pub const DEFAULT_MAX_SESSIONS_PER_CLIENT: usize = 8;

/// The session cap the descriptor budget allows: an eighth of the soft `RLIMIT_NOFILE`
/// (`nofile`), at least 1. A transfer holds at most two descriptors, so TFTP stays within a
/// quarter of the budget.
pub fn fd_session_cap(nofile: u64) -> usize {
    usize::try_from(nofile / 8).unwrap_or(usize::MAX).max(1)
}

/// Block size cap when none is configured and the interface MTU is unknown or the interface is
/// loopback: what a 1500-byte Ethernet MTU carries without IP fragmentation.
pub const DEFAULT_MAX_BLOCK_SIZE: u16 = 1468;

/// TFTP server configuration.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Listening address, e.g. `0.0.0.0:69`. On multi-homed hosts use the specific address the
    /// clients are told to use: replies come from the listening address (see the module docs).
    pub listen: SocketAddr,
    /// Interface to bind with `SO_BINDTODEVICE` (needs `CAP_NET_RAW` on kernels before 5.7 or
    /// when re-binding); its MTU sets the default block-size cap.
    pub interface: Option<String>,
    /// Largest `blksize` granted. `None`: derived from the interface MTU (MTU − 32, so 1468
    /// for 1500), or [`DEFAULT_MAX_BLOCK_SIZE`] for loopback, an unknown MTU or no interface.
    /// Values are clamped to the RFC 2348 range 8..=65464.
    pub max_block_size: Option<u16>,
    /// Largest `windowsize` granted (RFC 7440), e.g. 16. 1 disables windowing; 0 counts as 1.
    pub window_size_limit: u16,
    /// Retransmission timeout, clamped to [`MAX_TIMEOUT`]. A client's `timeout` option is not
    /// accepted (module docs).
    pub timeout: Duration,
    /// Optional directory served read-only after the embedded files.
    pub extra_dir: Option<PathBuf>,
    /// Transfers in progress at most (at least 1; also held to [`fd_session_cap`]).
    pub max_sessions: usize,
    /// Transfers in progress from one client IP address at most (at least 1, at most
    /// `max_sessions`).
    pub max_sessions_per_client: usize,
}

impl Default for TftpConfig {
    /// `0.0.0.0:69`, no interface, MTU-derived block size, window limit 16, 2 s timeout, no
    /// extra directory, [`DEFAULT_MAX_SESSIONS`] and [`DEFAULT_MAX_SESSIONS_PER_CLIENT`].
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            interface: None,
            max_block_size: None,
            window_size_limit: 16,
            timeout: Duration::from_secs(2),
            extra_dir: None,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_client: DEFAULT_MAX_SESSIONS_PER_CLIENT,
        }
    }
}

/// Counters of a running TFTP service (monotonic, relaxed atomics).
#[derive(Debug, Default)]
pub struct TftpStats {
    /// Read and write requests that reached the server (a request repeated from the same client
    /// address and port while its transfer is live is counted in
    /// [`TftpStats::duplicate_requests`] instead).
    pub requests: AtomicU64,
    /// Transfers whose last block the client acknowledged.
    pub served: AtomicU64,
    /// Requests refused with an access violation (path policy, write requests, symlink escapes,
    /// non-regular files) or an illegal operation (`mail` mode).
    pub refused: AtomicU64,
    /// Requests for names that are neither embedded nor in the extra directory.
    pub not_found: AtomicU64,
    /// File bytes sent (each block counted once; retransmissions are not counted).
    pub bytes_sent: AtomicU64,
    /// Requests refused because [`TftpConfig::max_sessions`] transfers were in progress.
    pub refused_busy: AtomicU64,
    /// Requests refused because their client address had
    /// [`TftpConfig::max_sessions_per_client`] transfers in progress.
    pub refused_client_busy: AtomicU64,
    /// Transfers in progress now (a gauge: admitted and not yet ended).
    pub in_progress: AtomicU64,
    /// Transfers the client ended with an ERROR packet (EDK2's `tsize` probe ends this way);
    /// each freed its slot at once.
    pub client_aborted: AtomicU64,
    /// Transfers given up after [`MAX_SEND_RETRIES`] retransmissions without an answer.
    pub timed_out: AtomicU64,
    /// Transfers ended by a server-side error (file read or socket send failed).
    pub failed: AtomicU64,
    /// Packets sent again (OACK or DATA) after a timeout or a client's gap ACK.
    pub retransmitted: AtomicU64,
    /// Datagrams on a transfer socket from another address or port (answered with error 5, at
    /// most 16 per transfer).
    pub unknown_tid: AtomicU64,
    /// Datagrams dropped as malformed: unparsable, oversized, a non-request on the listening
    /// port, or neither ACK nor ERROR from a transfer's client.
    pub malformed: AtomicU64,
    /// Requests repeated from the client address and port of a live transfer (ignored: the
    /// transfer answers).
    pub duplicate_requests: AtomicU64,
    /// Transfers that started with an OACK (at least one option accepted).
    pub negotiated: AtomicU64,
    /// Transfers that negotiated `blksize` (RFC 2348).
    pub opt_blksize: AtomicU64,
    /// Transfers that negotiated `tsize` (RFC 2349).
    pub opt_tsize: AtomicU64,
    /// Transfers that negotiated `windowsize` (RFC 7440).
    pub opt_windowsize: AtomicU64,
}

/// A point-in-time copy of [`TftpStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TftpStatsSnapshot {
    /// See [`TftpStats::requests`].
    pub requests: u64,
    /// See [`TftpStats::served`].
    pub served: u64,
    /// See [`TftpStats::refused`].
    pub refused: u64,
    /// See [`TftpStats::not_found`].
    pub not_found: u64,
    /// See [`TftpStats::bytes_sent`].
    pub bytes_sent: u64,
    /// See [`TftpStats::refused_busy`].
    pub refused_busy: u64,
    /// See [`TftpStats::refused_client_busy`].
    pub refused_client_busy: u64,
    /// See [`TftpStats::in_progress`].
    pub in_progress: u64,
    /// See [`TftpStats::client_aborted`].
    pub client_aborted: u64,
    /// See [`TftpStats::timed_out`].
    pub timed_out: u64,
    /// See [`TftpStats::failed`].
    pub failed: u64,
    /// See [`TftpStats::retransmitted`].
    pub retransmitted: u64,
    /// See [`TftpStats::unknown_tid`].
    pub unknown_tid: u64,
    /// See [`TftpStats::malformed`].
    pub malformed: u64,
    /// See [`TftpStats::duplicate_requests`].
    pub duplicate_requests: u64,
    /// See [`TftpStats::negotiated`].
    pub negotiated: u64,
    /// See [`TftpStats::opt_blksize`].
    pub opt_blksize: u64,
    /// See [`TftpStats::opt_tsize`].
    pub opt_tsize: u64,
    /// See [`TftpStats::opt_windowsize`].
    pub opt_windowsize: u64,
}

impl TftpStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> TftpStatsSnapshot {
        TftpStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            not_found: self.not_found.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            refused_busy: self.refused_busy.load(Ordering::Relaxed),
            refused_client_busy: self.refused_client_busy.load(Ordering::Relaxed),
            in_progress: self.in_progress.load(Ordering::Relaxed),
            client_aborted: self.client_aborted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retransmitted: self.retransmitted.load(Ordering::Relaxed),
            unknown_tid: self.unknown_tid.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            duplicate_requests: self.duplicate_requests.load(Ordering::Relaxed),
            negotiated: self.negotiated.load(Ordering::Relaxed),
            opt_blksize: self.opt_blksize.load(Ordering::Relaxed),
            opt_tsize: self.opt_tsize.load(Ordering::Relaxed),
            opt_windowsize: self.opt_windowsize.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}
