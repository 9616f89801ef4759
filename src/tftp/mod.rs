//! Read-only TFTP server for the embedded iPXE binaries (and an optional extra directory).
//!
//! The engine is our own (`server.rs`, [`packet`]), on tokio's UDP sockets. It replaced
//! async-tftp 0.4, which cost ~60 µs per ACK against dnsmasq's ~45 µs (firmware fetches one
//! block per ACK, so that is the speed of a PXE boot), ignored a client's ERROR packet, did not
//! tell the handler which options it had negotiated, and had to run on its own executor thread
//! (README, "TFTP"; `benches/README.md`, "tftp").
//!
//! # The protocol, as served
//!
//! - **Requests** (RFC 1350): an RRQ starts a transfer from a new socket (a new transfer ID);
//!   a WRQ gets error 2 (the server is read-only). Modes: `octet`; `netascii` is served as
//!   `octet` — the bytes as stored, no CR LF translation, as async-tftp did (boot files are
//!   binary); `mail` and unknown modes get error 4. A request repeated from the client address
//!   and port of a live transfer is a retransmission and is ignored (the transfer answers).
//! - **What is served** ([`TftpFiles`], [`files`]): the embedded files by name, then regular
//!   files under [`TftpConfig::extra_dir`]. [`resolve_request`] is the path policy: one leading
//!   `/` is tolerated, everything that could leave the served set is refused with error 2
//!   (access violation). Unknown names get error 1 (file not found).
//! - **Options** (RFC 2347): the OACK lists only the options granted, and is sent only when at
//!   least one was; otherwise DATA 1 comes at once with 512-byte blocks. `blksize` (RFC 2348)
//!   is clamped to [`TftpConfig::max_block_size`] (by default derived from the interface MTU:
//!   MTU − 20 IP − 8 UDP − 4 TFTP, and 1468 when the MTU is unknown or the interface is
//!   loopback); `tsize` (RFC 2349) is answered with the real size; `windowsize` (RFC 7440) is
//!   granted up to [`TftpConfig::window_size_limit`]; `timeout` (RFC 2349) is never
//!   acknowledged (see "Bounded lifetime"). Out-of-range values are not acknowledged.
//! - **The transfer**: blocks `1..=n`, the last one shorter than `blksize` — empty when the
//!   size is an exact multiple. Block numbers are 16 bits on the wire and roll over from 65535
//!   to 0 (what iPXE, EDK2, curl and atftp expect); internally the position is a 64-bit
//!   count, so an ACK is placed exactly within the window in flight.
//! - **ACKs**: an ACK for a block in the window in flight moves the window to the block after
//!   it and sends the next window at once (for a window of 1: the next block); with a window,
//!   an ACK short of the window's end is the client reporting a gap, and the window restarts
//!   after it (RFC 7440). An ACK for what is already acknowledged — a duplicate, or a late one —
//!   is ignored: answering it would send every later block twice (the Sorcerer's Apprentice
//!   bug, RFC 1123 §4.2.3.1). Losses are recovered by the retransmission timer only.
//! - **Client ERROR**: ends the transfer at once and frees its slot — EDK2 asks for `tsize`,
//!   reads it from the OACK and aborts with an ERROR before asking again
//!   ([`TftpStats::client_aborted`]).
//! - **Foreign packets**: a datagram on a transfer's socket from any other address or port gets
//!   error 5 (unknown transfer ID, RFC 1350 §4; never in answer to an ERROR or to garbage, and
//!   at most 16 per transfer) and the transfer goes on ([`TftpStats::unknown_tid`]).
//! - **Admission** ([`sessions`]): at most [`TftpConfig::max_sessions`] transfers in progress,
//!   and at most [`TftpConfig::max_sessions_per_client`] per client IP address. A transfer is
//!   *half-open* until the client's first valid ACK (ACK 0 after an OACK, or ACK 1); a request
//!   from a forged address never gets further. When a cap is full, a new request evicts the
//!   oldest half-open transfer in its way, like a SYN queue ([`TftpStats::evicted`]), so
//!   spoofed requests cannot keep real firmware out. Only when every transfer in the way is
//!   established does the request get error 0 with a "server busy"/"too many transfers
//!   from …" message, before any file or socket is opened for it, counted in
//!   [`TftpStats::refused_busy`] / [`TftpStats::refused_client_busy`]. The global cap is also held to an eighth of the
//!   process's `RLIMIT_NOFILE` ([`fd_session_cap`]): a transfer holds at most two descriptors
//!   (its socket and, for the extra directory, the file), so TFTP can never take more than a
//!   quarter of the descriptors and starve the HTTP side.
//! - **Accounting**: [`TftpStats`] counters (exported as `bootfactory_tftp_*` metrics) and one
//!   `info` event per transfer with the negotiated options (`options=blksize=1468 tsize=…`),
//!   the block and window size in effect, bytes, retransmissions, duration and how it ended.
//!
//! # Bounded lifetime
//!
//! A transfer waits [`TftpConfig::timeout`] (at most [`MAX_TIMEOUT`]) for an answer, sends its
//! OACK or window again, and gives up after [`MAX_SEND_RETRIES`] retransmissions without
//! progress, sending a closing ERROR: a silent client holds a slot for at most
//! `(MAX_SEND_RETRIES + 1) × timeout` — 12 s with the default 2 s, 60 s at the 10 s maximum.
//! Retries restart whenever an ACK makes progress, so a client ACKing one block per timeout
//! (at `blksize` 8) would hold its slot for days; every transfer also has a total lifetime,
//! [`transfer_lifetime`]: `max(120 s, ⌈size / 512⌉ × 50 ms)`, checked on every turn of the
//! transfer's loop — for ignored packets too, so a flood of them cannot starve it — and ended
//! with an ERROR when exceeded ([`TftpStats::expired`]). Honest clients are far faster:
//! 50 ms per 512 bytes is 10 KB/s.
//! RFC 2349 lets a client ask for a `timeout` of up to 255 s, and the server can only echo the
//! value or leave the option out; honouring it would let 1,000 requests with `timeout 255` pin
//! 1,000 descriptors for 25 minutes. So the option is left out of the OACK and our own timer
//! paces retransmissions; the client keeps its own timer for its own retransmissions, as
//! RFC 2349 allows when the option is not acknowledged.
//!
//! # Cost per ACK
//!
//! The listener and every transfer run on one thread (`tftp`) under a single-threaded tokio
//! runtime, like dnsmasq's single process: an ACK wakes that thread from `epoll`, which reads
//! it (`recvfrom`), copies the next block from memory into the transfer's one reused buffer and
//! sends it (`sendto`), then sleeps again. The retransmission timer is armed once and only
//! moved when it fires early: an ACK just records a new deadline. Nothing is allocated per
//! block. async-tftp, by contrast, ran its reactor on a second thread (async-io) and its
//! transfers under `block_on` on a third, so every ACK crossed threads twice, and it allocated
//! a block buffer and registered a fresh timer per block.
//!
//! # Per-transfer sockets and the reply source address
//!
//! Like every standard TFTP server, each transfer gets a new socket (a new TID). It is bound
//! to **the listening socket's local IP** with port 0; ERROR answers to requests are sent
//! the same way. It is not `connect`ed: a connected socket would never see packets from other
//! ports, which RFC 1350 wants answered with error 5. Consequences, checked by
//! `tests/tftp_server.rs` (`multihomed_reply_source`, in network namespaces):
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

pub(crate) mod files;
pub(crate) mod net;
pub mod packet;
pub(crate) mod server;
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

/// Floor of a transfer's total lifetime: [`transfer_lifetime`].
pub const DEFAULT_MIN_LIFETIME: Duration = Duration::from_secs(120);

/// Lifetime budget per 512-byte block of the file (whatever `blksize` the client chose).
pub const LIFETIME_PER_BLOCK: Duration = Duration::from_millis(50);

/// How long a transfer of `size` bytes may last in total, from its request to its last ACK:
/// `max(min_lifetime, ⌈size / 512⌉ × 50 ms)` — 120 s for any iPXE binary, about 2.8 h for a
/// 100 MB file. Counted in 512-byte blocks so a client choosing a tiny `blksize` gets no more
/// time: it must average at least 10 KB/s (module docs, "Bounded lifetime").
pub fn transfer_lifetime(size: u64, min_lifetime: Duration) -> Duration {
    let blocks = u32::try_from(size.div_ceil(512)).unwrap_or(u32::MAX);
    min_lifetime.max(LIFETIME_PER_BLOCK.saturating_mul(blocks))
}

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
    /// Largest `windowsize` granted (RFC 7440), e.g. 16. 1 disables windowing; 0 counts as 1;
    /// held to 32767 (half the block-number space, so an ACK is never ambiguous).
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
    /// Floor of every transfer's total lifetime (module docs, "Bounded lifetime");
    /// [`DEFAULT_MIN_LIFETIME`] in production, shorter in tests.
    pub min_lifetime: Duration,
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
            min_lifetime: DEFAULT_MIN_LIFETIME,
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
    /// Half-open transfers (no valid ACK yet) cancelled to make room for a new request when a
    /// cap was full (forged source addresses never ACK; module `sessions`).
    pub evicted: AtomicU64,
    /// Transfers in progress now (a gauge: admitted and not yet ended).
    pub in_progress: AtomicU64,
    /// Transfers the client ended with an ERROR packet (EDK2's `tsize` probe ends this way);
    /// each freed its slot at once.
    pub client_aborted: AtomicU64,
    /// Transfers given up after [`MAX_SEND_RETRIES`] retransmissions without an answer.
    pub timed_out: AtomicU64,
    /// Transfers ended because they outlived [`transfer_lifetime`] (a client progressing too
    /// slowly, e.g. one ACK per timeout).
    pub expired: AtomicU64,
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
    /// See [`TftpStats::evicted`].
    pub evicted: u64,
    /// See [`TftpStats::in_progress`].
    pub in_progress: u64,
    /// See [`TftpStats::client_aborted`].
    pub client_aborted: u64,
    /// See [`TftpStats::timed_out`].
    pub timed_out: u64,
    /// See [`TftpStats::expired`].
    pub expired: u64,
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
            evicted: self.evicted.load(Ordering::Relaxed),
            in_progress: self.in_progress.load(Ordering::Relaxed),
            client_aborted: self.client_aborted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_is_the_floor_or_50_ms_per_512_bytes() {
        let floor = DEFAULT_MIN_LIFETIME;
        assert_eq!(transfer_lifetime(0, floor), floor);
        // iPXE binaries (≈ 1 MB): the floor.
        assert_eq!(transfer_lifetime(996_864, floor), floor);
        // 100 MB: 204,800 blocks × 50 ms.
        assert_eq!(
            transfer_lifetime(100 << 20, floor),
            Duration::from_millis(204_800 * 50)
        );
        assert_eq!(
            transfer_lifetime(513, Duration::ZERO),
            Duration::from_millis(100)
        );
        // Never overflows.
        assert!(transfer_lifetime(u64::MAX, floor) > Duration::from_secs(86_400));
    }
}
