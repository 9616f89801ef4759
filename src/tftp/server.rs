//! The TFTP engine: the listener that admits read requests, and one task per transfer.
//!
//! Both run on a dedicated thread (`tftp`) under a single-threaded tokio runtime, so a
//! datagram wakes exactly one thread, which reads it, answers and sleeps again in `epoll`
//! (module docs, "Cost per ACK").

use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::files::{DirLookup, ExtraDir, Refusal, TftpFiles, resolve_request};
use super::net::{effective_max_block_size, link_info, listen_socket, validate_ifname};
use super::packet::{
    self, AcceptedOptions, DATA_HEADER_LEN, DEFAULT_BLOCK_SIZE, ErrorCode, Mode, Packet,
    RequestOptions,
};
use super::sessions::{Admitted, Busy, Permit, Sessions};
use super::{
    MAX_SEND_RETRIES, MAX_TIMEOUT, TftpConfig, TftpStats, fd_session_cap, transfer_lifetime,
};

/// Largest `windowsize` ever granted, whatever [`TftpConfig::window_size_limit`] says.
const MAX_WINDOW_LIMIT: u16 = 32767;

/// Largest request datagram read. RFC 1350 requests fit 512 bytes; options make them longer,
/// but a name is at most 255 bytes and four options need far less than this. A datagram that
/// fills the buffer was cut short by the kernel and is dropped as malformed.
const MAX_REQUEST: usize = 2048;

/// Receive buffer of a transfer socket: ACKs are 4 bytes, ERRORs carry a short message.
/// Anything longer is cut by the kernel and, not being a valid ACK, ignored.
const MAX_CLIENT_PACKET: usize = 516;

/// Error-5 answers one transfer sends to packets from other ports or hosts; more strays are
/// only counted (the server must not become a reflector for spoofed traffic).
const MAX_UNKNOWN_TID_REPLIES: u32 = 16;

/// A bound, not yet running, TFTP server.
///
/// Create it with [`TftpService::bind`] (errors such as a missing capability or a port in use
/// surface there), then drive it with [`TftpService::run`].
pub struct TftpService {
    socket: std::net::UdpSocket,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    max_sessions: usize,
}

impl std::fmt::Debug for TftpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpService")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// What the listener and every transfer share.
struct Shared {
    files: TftpFiles,
    extra: Option<ExtraDir>,
    stats: Arc<TftpStats>,
    sessions: Arc<Sessions>,
    /// Largest `blksize` granted.
    max_block: u16,
    /// Largest `windowsize` granted (at least 1).
    window_limit: u16,
    /// Retransmission timeout (at most [`MAX_TIMEOUT`]).
    timeout: Duration,
    /// Floor of every transfer's total lifetime ([`transfer_lifetime`]).
    min_lifetime: Duration,
    /// The listening address's IP: every transfer socket binds to it (module docs).
    local_ip: IpAddr,
    /// Client address and port of every live transfer: a repeated request from the same
    /// client TID is a retransmission of the RRQ, not a new transfer.
    active: Mutex<HashSet<SocketAddr>>,
    busy_log: Mutex<RateLog>,
    evict_log: Mutex<RateLog>,
    /// Access violations and not-found answers: one line per 10 s at most (flood-proof).
    refusal_log: Mutex<RateLog>,
}

impl TftpService {
    /// Binds the listening socket and prepares the served set.
    ///
    /// Fails if the interface does not exist or binding to it needs `CAP_NET_RAW`, if the
    /// port needs `CAP_NET_BIND_SERVICE` or is in use, or if `extra_dir` is not a directory.
    pub async fn bind(config: TftpConfig, files: TftpFiles) -> anyhow::Result<TftpService> {
        let link = match config.interface.as_deref() {
            Some(ifname) => {
                validate_ifname(ifname)?;
                Some(link_info(ifname))
            }
            None => None,
        };
        let max_block = effective_max_block_size(config.max_block_size, link);
        // RFC 7440's range is 1..=65535, but a window beyond 32767 blocks would make an ACK
        // ambiguous modulo 2^16 (half the block-number space): held below that.
        let window_limit = config.window_size_limit.clamp(1, MAX_WINDOW_LIMIT);
        let extra = config.extra_dir.as_deref().map(ExtraDir::new).transpose()?;
        let timeout = config.timeout.min(MAX_TIMEOUT);
        if timeout < config.timeout {
            warn!(
                configured_ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
                used_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "TFTP timeout above the maximum; using the maximum"
            );
        }
        let nofile = crate::limits::nofile_soft_limit();
        let mut max_sessions = config.max_sessions.max(1);
        if let Some(nofile) = nofile {
            let fd_cap = fd_session_cap(nofile);
            if fd_cap < max_sessions {
                warn!(
                    configured = max_sessions,
                    used = fd_cap,
                    nofile,
                    "TFTP session cap lowered to an eighth of the file-descriptor limit so TFTP \
                     cannot starve HTTP; raise LimitNOFILE to allow more"
                );
                max_sessions = fd_cap;
            }
        }
        let socket = listen_socket(config.listen, config.interface.as_deref())?;
        let local_addr = socket.local_addr()?;
        let stats = Arc::new(TftpStats::default());
        let sessions = Arc::new(Sessions::new(
            max_sessions,
            config.max_sessions_per_client,
            Arc::clone(&stats),
        ));
        info!(
            listen = %local_addr,
            interface = config.interface.as_deref().unwrap_or("-"),
            mtu = ?link.and_then(|l| l.mtu),
            max_blksize = max_block,
            window_limit,
            timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            max_sessions = sessions.max_total(),
            max_sessions_per_client = sessions.max_per_client(),
            nofile = ?nofile,
            embedded = files.len(),
            extra_dir = ?extra.as_ref().map(|d| d.root().to_path_buf()),
            "TFTP server bound"
        );
        if local_addr.ip().is_unspecified() {
            info!(
                "TFTP listens on the wildcard address: each transfer's replies come from the \
                 source address the kernel picks for the client's route; on a multi-homed host \
                 listen on the address the clients are given instead"
            );
        }
        let shared = Arc::new(Shared {
            files,
            extra,
            stats,
            sessions,
            max_block,
            window_limit,
            timeout,
            min_lifetime: config.min_lifetime,
            local_ip: local_addr.ip(),
            active: Mutex::new(HashSet::new()),
            busy_log: Mutex::new(RateLog::default()),
            evict_log: Mutex::new(RateLog::default()),
            refusal_log: Mutex::new(RateLog::default()),
        });
        Ok(TftpService {
            socket,
            local_addr,
            shared,
            max_sessions,
        })
    }

    /// The bound address (with the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The cap on transfers in progress actually enforced: [`TftpConfig::max_sessions`], held
    /// to [`fd_session_cap`] of the file-descriptor limit.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// The live counters; they stay readable after [`TftpService::run`] returns.
    pub fn stats(&self) -> Arc<TftpStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves until `shutdown` completes, then stops: in-flight transfers are dropped and every
    /// socket is closed before this returns. Also returns if the listening socket fails.
    ///
    /// The server runs on its own thread (`tftp`) under a single-threaded tokio runtime; this
    /// future only waits for it. Dropping the future also stops it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let local_addr = self.local_addr;
        let TftpService { socket, shared, .. } = self;
        std::thread::Builder::new()
            .name("tftp".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| anyhow::anyhow!("starting the TFTP runtime: {e}"))
                    .and_then(|rt| {
                        // Dropping the runtime afterwards drops every transfer task.
                        rt.block_on(async move {
                            let socket = UdpSocket::from_std(socket)?;
                            tokio::select! {
                                r = listen(socket, shared) => r,
                                // A send or a dropped sender: both mean stop.
                                _ = stop_rx => Ok(()),
                            }
                        })
                    });
                let _ = done_tx.send(result);
            })
            .map_err(|e| anyhow::anyhow!("starting the TFTP thread: {e}"))?;

        let shutdown = std::pin::pin!(shutdown);
        let result = tokio::select! {
            () = shutdown => {
                let _ = stop_tx.send(());
                (&mut done_rx).await
            }
            r = &mut done_rx => r,
        };
        let result = result.unwrap_or_else(|_| Err(anyhow::anyhow!("the TFTP thread panicked")));
        match &result {
            Ok(()) => info!(listen = %local_addr, "TFTP server stopped"),
            Err(e) => warn!(listen = %local_addr, error = %e, "TFTP server failed"),
        }
        result
    }
}

/// The listener: reads requests on the well-known port and starts transfers.
async fn listen(socket: UdpSocket, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut failures = 0u32;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => {
                failures = 0;
                got
            }
            Err(e) if is_transient(&e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(1000) {
                    warn!(error = %e, failures, "TFTP: receiving on the listening socket");
                }
                // A persistent error must not spin the thread.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(anyhow::anyhow!("TFTP listening socket: {e}")),
        };
        if n == buf.len() {
            TftpStats::bump(&shared.stats.malformed, 1);
            debug!(%peer, "TFTP: oversized datagram on the listening port dropped");
            continue;
        }
        if handle_request(&shared, &buf[..n], peer) {
            tokio::task::yield_now().await;
        }
    }
}

/// Errors of `recvfrom` on a UDP socket that do not mean the socket is broken (ICMP errors
/// queued on the socket, memory pressure, an interrupted call).
fn is_transient(e: &io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc_errno::EBADF | libc_errno::ENOTSOCK | libc_errno::EINVAL)
    )
}

/// The few errno values [`is_transient`] needs (Linux numbering).
mod libc_errno {
    pub const EBADF: i32 = 9;
    pub const EINVAL: i32 = 22;
    pub const ENOTSOCK: i32 = 88;
}

/// One datagram on the listening port: refuse it, drop it, or start a transfer. Returns true
/// if half-open transfers were evicted to admit it (the listener then lets their tasks end
/// and close their sockets before reading more, so evictions never pile up descriptors).
fn handle_request(shared: &Arc<Shared>, datagram: &[u8], peer: SocketAddr) -> bool {
    let stats = &shared.stats;
    let request = match packet::parse(datagram) {
        Ok(Packet::Request(r)) => r,
        Ok(other) => {
            // ACK, ERROR, DATA or OACK on the well-known port: not part of any transfer.
            TftpStats::bump(&stats.malformed, 1);
            debug!(%peer, packet = ?other, "TFTP: non-request on the listening port dropped");
            return false;
        }
        Err(e) => {
            TftpStats::bump(&stats.malformed, 1);
            debug!(%peer, error = %e, "TFTP: malformed request dropped");
            if e == packet::ParseError::UnknownMode {
                send_error(
                    shared,
                    peer,
                    ErrorCode::IllegalOperation,
                    "unknown transfer mode (use octet)",
                );
            }
            return false;
        }
    };
    if shared.lock_active().contains(&peer) {
        // The client repeated its request before our first reply reached it; the live
        // transfer answers (and retransmits) on its own.
        TftpStats::bump(&stats.duplicate_requests, 1);
        return false;
    }
    TftpStats::bump(&stats.requests, 1);
    let requested = String::from_utf8_lossy(request.filename);
    if !request.read {
        shared.refuse(peer, &requested, Refusal::Write);
        return false;
    }
    let Ok(name) = std::str::from_utf8(request.filename) else {
        shared.refuse(peer, &requested, Refusal::NotUtf8);
        return false;
    };
    let name = match resolve_request(name) {
        Ok(name) => name,
        Err(why) => {
            shared.refuse(peer, name, why);
            return false;
        }
    };
    if request.mode == Mode::Mail {
        TftpStats::bump(&stats.refused, 1);
        warn!(%peer, file = %name, "TFTP request refused: mail mode (write-only, obsolete)");
        send_error(
            shared,
            peer,
            ErrorCode::IllegalOperation,
            "mail mode is not supported",
        );
        return false;
    }
    // Admission before anything is opened; the permit lives as long as the transfer task.
    // A full cap evicts the oldest half-open transfer first (module `sessions`).
    let Admitted {
        permit,
        cancelled,
        evicted,
    } = match shared.sessions.try_admit(peer.ip()) {
        Ok(admitted) => admitted,
        Err(busy) => {
            shared.log_busy(peer, &name, &busy);
            send_error(shared, peer, ErrorCode::NotDefined, &busy.to_string());
            return false;
        }
    };
    if evicted > 0 {
        shared.log_evicted(peer, &name);
    }
    let (source, origin, size) = if let Some(data) = shared.files.get(&name) {
        (Source::Memory(data.clone()), "embedded", data.len() as u64)
    } else {
        match shared.extra.as_ref().map(|dir| dir.open(&name)) {
            Some(DirLookup::Found(file, size)) => (Source::File(file), "extra_dir", size),
            Some(DirLookup::Refused(why)) => {
                shared.refuse(peer, &name, why);
                return false;
            }
            Some(DirLookup::Error(e)) => {
                warn!(%peer, file = %name, error = %crate::errors::chain(&e), "TFTP: cannot open file");
                send_error(shared, peer, ErrorCode::NotDefined, "cannot read file");
                return false;
            }
            Some(DirLookup::NotFound) | None => {
                TftpStats::bump(&stats.not_found, 1);
                let allowed = shared
                    .refusal_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .allow();
                if let Some(suppressed) = allowed {
                    info!(
                        %peer,
                        file = %name,
                        not_logged_since_last = suppressed,
                        "TFTP file not found (refusals logged at most every 10 s)"
                    );
                }
                send_error(shared, peer, ErrorCode::FileNotFound, "file not found");
                return false;
            }
        }
    };
    let socket = match transfer_socket(shared.local_ip) {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "TFTP: cannot open a transfer socket");
            send_error(shared, peer, ErrorCode::NotDefined, "server error");
            return false;
        }
    };
    let accepted = negotiate(
        &request.options,
        size,
        shared.max_block,
        shared.window_limit,
    );
    shared.lock_active().insert(peer);
    let active = Active {
        shared: Arc::clone(shared),
        peer,
    };
    let transfer = Transfer {
        socket,
        peer,
        source,
        size,
        blksize: usize::from(accepted.blksize.unwrap_or(DEFAULT_BLOCK_SIZE)),
        window: u64::from(accepted.windowsize.unwrap_or(1)),
        accepted,
        name,
        origin,
        mode: request.mode,
        shared: Arc::clone(shared),
        retransmitted: 0,
        unknown_tid_replies: 0,
        _active: active,
        permit,
        cancelled,
        half_open: true,
    };
    tokio::spawn(transfer.run());
    evicted > 0
}

/// The options granted for a request (RFC 2347: only those listed are in effect).
///
/// - `blksize` (RFC 2348): the client's value, at most `max_block`.
/// - `tsize` (RFC 2349): the real size of the file, whatever the client sent.
/// - `windowsize` (RFC 7440): the client's value, at most `window_limit`.
/// - `timeout` (RFC 2349): never acknowledged (module docs, "Bounded lifetime").
pub(crate) fn negotiate(
    asked: &RequestOptions,
    size: u64,
    max_block: u16,
    window_limit: u16,
) -> AcceptedOptions {
    AcceptedOptions {
        blksize: asked.blksize.map(|b| b.min(max_block)),
        tsize: asked.tsize.map(|_| size),
        windowsize: asked.windowsize.map(|w| w.min(window_limit.max(1))),
    }
}

/// A new socket for one transfer (its TID), bound to the listening IP and an ephemeral port.
fn transfer_socket(local_ip: IpAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Sends an ERROR in answer to a request, from a fresh socket bound to the listening IP (the
/// request's reply comes from a new TID, like a transfer's first packet). Best effort.
fn send_error(shared: &Shared, peer: SocketAddr, code: ErrorCode, message: &str) {
    let packet = packet::encode_error(code, message);
    let sent = std::net::UdpSocket::bind(SocketAddr::new(shared.local_ip, 0))
        .and_then(|s| s.send_to(&packet, peer));
    if let Err(e) = sent {
        debug!(%peer, error = %e, "TFTP: sending an ERROR failed");
    }
}

/// Busy refusals and evictions come in floods: one log line per [`BUSY_LOG_INTERVAL`] at most,
/// with the count of the ones not logged (the exact figures are in the metrics).
#[derive(Debug, Default)]
struct RateLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    /// Some(lines not logged since the last one) if a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < BUSY_LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                let suppressed = self.suppressed;
                *self = RateLog {
                    last: Some(now),
                    suppressed: 0,
                };
                Some(suppressed)
            }
        }
    }
}

const BUSY_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Shared {
    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_busy(&self, client: SocketAddr, name: &str, busy: &Busy) {
        let allowed = self
            .busy_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow();
        if let Some(suppressed) = allowed {
            warn!(
                peer = %client,
                file = %name,
                reason = %busy,
                not_logged_since_last = suppressed,
                "TFTP request refused: busy (logged at most every 10 s; see \
                 bootfactory_tftp_requests_total)"
            );
        }
    }

    fn log_evicted(&self, client: SocketAddr, name: &str) {
        let allowed = self
            .evict_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow();
        if let Some(suppressed) = allowed {
            warn!(
                peer = %client,
                file = %name,
                not_logged_since_last = suppressed,
                "TFTP session cap full: evicted the oldest transfer not yet acknowledged (forged \
                 requests?) to admit a new one (logged at most every 10 s; see \
                 bootfactory_tftp_transfers_total{{end=\"evicted\"}})"
            );
        }
    }

    /// Counts, logs and answers an access violation (error 2).
    fn refuse(&self, client: SocketAddr, requested: &str, why: Refusal) {
        TftpStats::bump(&self.stats.refused, 1);
        let allowed = self
            .refusal_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow();
        if let Some(suppressed) = allowed {
            warn!(
                peer = %client,
                file = ?requested,
                reason = %why,
                not_logged_since_last = suppressed,
                "TFTP request refused (refusals logged at most every 10 s)"
            );
        }
        send_error(self, client, ErrorCode::AccessViolation, &why.to_string());
    }
}

/// Where a transfer's bytes come from.
enum Source {
    /// An embedded file: blocks are copied straight from memory.
    Memory(Bytes),
    /// A file of the extra directory, read with `pread` on the TFTP thread: such files are
    /// small local files (scripts, menus) and come from the page cache. Reading by offset makes
    /// a retransmission as cheap as a first send.
    File(File),
}

/// How a transfer ended.
#[derive(Debug)]
enum End {
    /// The client acknowledged the last block.
    Complete,
    /// The client sent an ERROR (e.g. EDK2 after its `tsize` probe).
    ClientError { code: u16, message: String },
    /// No answer after [`MAX_SEND_RETRIES`] retransmissions.
    TimedOut,
    /// The transfer outlived [`transfer_lifetime`].
    Expired,
    /// Cancelled before the client's first ACK to make room for a new request (module
    /// `sessions`); its slot already changed hands.
    Evicted,
    /// The file could not be read, or the socket failed.
    Failed(io::Error),
}

/// One read transfer: its socket (TID), its file and its negotiated options.
struct Transfer {
    socket: UdpSocket,
    peer: SocketAddr,
    source: Source,
    /// Size announced in `tsize`; never read past it even if the file grows.
    size: u64,
    blksize: usize,
    window: u64,
    accepted: AcceptedOptions,
    name: String,
    origin: &'static str,
    mode: Mode,
    shared: Arc<Shared>,
    /// Packets sent again (OACK or DATA).
    retransmitted: u64,
    unknown_tid_replies: u32,
    /// The client TID's entry in [`Shared::active`], removed when the task ends (however).
    _active: Active,
    /// The admission slot, freed when the task ends (after the socket is closed).
    permit: Permit,
    /// Completes when the listener evicts this transfer while it is half-open.
    cancelled: tokio::sync::oneshot::Receiver<()>,
    /// No valid ACK yet (ACK 0 after an OACK, or ACK 1): the transfer can be evicted.
    half_open: bool,
}

/// A live transfer's client address and port in [`Shared::active`]; removed on drop, so a
/// transfer dropped at shutdown (or by a panic) never leaves its client locked out.
struct Active {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.shared.lock_active().remove(&self.peer);
    }
}

/// What one datagram on a transfer socket means to the transfer.
enum Incoming {
    Ack(u16),
    Error(u16, String),
    /// Anything else from the client: ignored.
    Ignored,
}

impl Transfer {
    /// Tells the client why the server ends the transfer (best effort: it may be gone).
    fn send_closing_error(&self, text: &str) {
        let _ = self
            .socket
            .try_send_to(
                &packet::encode_error(ErrorCode::NotDefined, text),
                self.peer,
            )
            .inspect_err(|e| debug!(error = %e, "TFTP: sending the closing ERROR"));
    }

    /// Runs the transfer to its end, then accounts for it and frees its slot.
    async fn run(mut self) {
        let started = Instant::now();
        let stats = Arc::clone(&self.shared.stats);
        if !self.accepted.is_empty() {
            TftpStats::bump(&stats.negotiated, 1);
            for (set, counter) in [
                (self.accepted.blksize.is_some(), &stats.opt_blksize),
                (self.accepted.tsize.is_some(), &stats.opt_tsize),
                (self.accepted.windowsize.is_some(), &stats.opt_windowsize),
            ] {
                if set {
                    TftpStats::bump(counter, 1);
                }
            }
        }
        let mut sent = 0u64;
        let end = self.exchange(&mut sent).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        TftpStats::bump(&stats.retransmitted, self.retransmitted);
        let options = self.accepted.to_string();
        match &end {
            End::Complete => {
                TftpStats::bump(&stats.served, 1);
                let secs = started.elapsed().as_secs_f64();
                let mbps = if secs > 0.0 {
                    sent as f64 / secs / 1e6
                } else {
                    0.0
                };
                info!(
                    peer = %self.peer,
                    file = %self.name,
                    source = self.origin,
                    mode = self.mode.as_str(),
                    bytes = sent,
                    blksize = self.blksize,
                    windowsize = self.window,
                    options = %options,
                    retransmitted = self.retransmitted,
                    duration_ms,
                    mb_per_s = format_args!("{mbps:.2}"),
                    "TFTP transfer complete"
                );
            }
            End::ClientError { code, message } => {
                TftpStats::bump(&stats.client_aborted, 1);
                info!(
                    peer = %self.peer,
                    file = %self.name,
                    source = self.origin,
                    bytes = sent,
                    size = self.size,
                    options = %options,
                    code,
                    // Debug-formatted: the client chose these bytes; `\n` or `\r` must not forge log lines.
                    message = ?message,
                    duration_ms,
                    "TFTP transfer aborted by the client (e.g. a tsize probe)"
                );
            }
            End::TimedOut => {
                TftpStats::bump(&stats.timed_out, 1);
                self.send_closing_error("transfer timed out");
                info!(
                    peer = %self.peer,
                    file = %self.name,
                    source = self.origin,
                    bytes = sent,
                    size = self.size,
                    options = %options,
                    retransmitted = self.retransmitted,
                    duration_ms,
                    "TFTP transfer given up: the client stopped answering"
                );
            }
            End::Expired => {
                TftpStats::bump(&stats.expired, 1);
                self.send_closing_error("transfer lifetime exceeded");
                info!(
                    peer = %self.peer,
                    file = %self.name,
                    source = self.origin,
                    bytes = sent,
                    size = self.size,
                    options = %options,
                    duration_ms,
                    "TFTP transfer ended: it outlived its lifetime (the client progresses too slowly)"
                );
            }
            End::Evicted => {
                // Counted in `evicted` at admission. No ERROR: the peer is most likely forged.
                debug!(
                    peer = %self.peer,
                    file = %self.name,
                    duration_ms,
                    "TFTP transfer evicted before its first ACK to admit a new request"
                );
            }
            End::Failed(e) => {
                TftpStats::bump(&stats.failed, 1);
                self.send_closing_error("server error");
                warn!(
                    peer = %self.peer,
                    file = %self.name,
                    source = self.origin,
                    bytes = sent,
                    size = self.size,
                    error = %e,
                    duration_ms,
                    "TFTP transfer failed"
                );
            }
        }
        // `self` (socket, file, active entry, permit) is dropped here.
    }

    /// The lock-step (RFC 1350) or windowed (RFC 7440) exchange. `sent` counts the file bytes
    /// sent, each block once.
    async fn exchange(&mut self, sent: &mut u64) -> End {
        let timeout = self.shared.timeout;
        // The total lifetime, checked at the top of every loop turn: a flood of ignored packets
        // keeps the biased `select!` in its receive branch, but every packet passes here.
        let expires = Instant::now() + transfer_lifetime(self.size, self.shared.min_lifetime);
        // The packet buffer, reused for every block: header + the largest block.
        let mut out = vec![0u8; DATA_HEADER_LEN + self.blksize];
        let mut inbuf = [0u8; MAX_CLIENT_PACKET];
        // The timer is armed once and only moved when it fires early: an ACK just pushes
        // `deadline` forward, without touching the timer wheel.
        let mut deadline = Instant::now() + timeout;
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::pin!(sleep);

        // RFC 2347: with options accepted, the OACK comes first and the client answers ACK 0
        // (or an ERROR to refuse the options: EDK2 does that after learning `tsize`).
        if !self.accepted.is_empty() {
            packet::encode_oack(&self.accepted, &mut out);
            let oack_len = out.len();
            let mut retries = 0;
            if let Err(e) = self.socket.send_to(&out[..oack_len], self.peer).await {
                return End::Failed(e);
            }
            deadline = Instant::now() + timeout;
            loop {
                if Instant::now() >= expires {
                    return End::Expired;
                }
                tokio::select! {
                    biased;
                    got = self.socket.recv_from(&mut inbuf) => {
                        match self.classify(got, &inbuf).await {
                            Ok(Incoming::Ack(0)) => {
                                self.establish();
                                break;
                            }
                            Ok(Incoming::Error(code, message)) => {
                                return End::ClientError { code, message };
                            }
                            Ok(_) => {}
                            Err(e) => return End::Failed(e),
                        }
                    }
                    r = &mut self.cancelled, if self.half_open => {
                        if r.is_ok() {
                            return End::Evicted;
                        }
                        // The sender is gone without a word: never poll it again.
                        self.half_open = false;
                    }
                    () = &mut sleep => {
                        if Instant::now() < deadline {
                            sleep.as_mut().reset(deadline.into());
                            continue;
                        }
                        if retries == MAX_SEND_RETRIES {
                            return End::TimedOut;
                        }
                        retries += 1;
                        self.retransmitted += 1;
                        if let Err(e) = self.socket.send_to(&out[..oack_len], self.peer).await {
                            return End::Failed(e);
                        }
                        deadline = Instant::now() + timeout;
                        sleep.as_mut().reset(deadline.into());
                    }
                }
            }
            out.resize(DATA_HEADER_LEN + self.blksize, 0);
        }

        // Blocks are numbered 1..=last as a u64 sequence; the wire carries it modulo 2^16,
        // so block 65536 goes out as 0 (rollover, as most servers and clients do). The last
        // block is short: empty when the size is a multiple of the block size (RFC 1350).
        let blksize = self.blksize as u64;
        let last = self.size / blksize + 1;
        let mut acked: u64 = 0;
        let mut sent_hi: u64 = 0;
        let mut retries = 0;
        if let Err(e) = self.send_window(&mut out, acked, &mut sent_hi, sent).await {
            return End::Failed(e);
        }
        deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= expires {
                return End::Expired;
            }
            tokio::select! {
                biased;
                got = self.socket.recv_from(&mut inbuf) => {
                    match self.classify(got, &inbuf).await {
                        Ok(Incoming::Ack(n)) => {
                            // The ACK's place in the window in flight: blocks acked+1..=sent_hi.
                            // A duplicate (n = acked) or an old ACK is ignored — answering it
                            // would double every later block (Sorcerer's Apprentice,
                            // RFC 1123 §4.2.3.1); the timer recovers real losses.
                            let ahead = u64::from(n.wrapping_sub(acked as u16));
                            if ahead == 0 || acked + ahead > sent_hi {
                                continue;
                            }
                            acked += ahead;
                            retries = 0;
                            self.establish();
                            if acked == last {
                                return End::Complete;
                            }
                            // An ACK inside the window means the client saw a gap after it:
                            // RFC 7440 restarts the window from the block after it.
                            if let Err(e) = self.send_window(&mut out, acked, &mut sent_hi, sent).await {
                                return End::Failed(e);
                            }
                            deadline = Instant::now() + timeout;
                        }
                        Ok(Incoming::Error(code, message)) => {
                            return End::ClientError { code, message };
                        }
                        Ok(Incoming::Ignored) => {}
                        Err(e) => return End::Failed(e),
                    }
                }
                r = &mut self.cancelled, if self.half_open => {
                    if r.is_ok() {
                        return End::Evicted;
                    }
                    // The sender is gone without a word: never poll it again.
                    self.half_open = false;
                }
                () = &mut sleep => {
                    if Instant::now() < deadline {
                        sleep.as_mut().reset(deadline.into());
                        continue;
                    }
                    if retries == MAX_SEND_RETRIES {
                        return End::TimedOut;
                    }
                    retries += 1;
                    if let Err(e) = self.send_window(&mut out, acked, &mut sent_hi, sent).await {
                        return End::Failed(e);
                    }
                    deadline = Instant::now() + timeout;
                    sleep.as_mut().reset(deadline.into());
                }
            }
        }
    }

    /// The client's first valid ACK: from now on the transfer cannot be evicted.
    fn establish(&mut self) {
        if self.half_open {
            self.half_open = false;
            self.permit.established();
        }
    }

    /// Sends blocks `acked+1 ..= min(acked + window, last)`; blocks at or below `sent_hi` are
    /// retransmissions.
    async fn send_window(
        &mut self,
        out: &mut [u8],
        acked: u64,
        sent_hi: &mut u64,
        sent: &mut u64,
    ) -> io::Result<()> {
        let blksize = self.blksize as u64;
        let last = self.size / blksize + 1;
        let upto = (acked + self.window).min(last);
        for seq in acked + 1..=upto {
            let offset = (seq - 1) * blksize;
            let len = self.size.saturating_sub(offset).min(blksize) as usize;
            packet::put_data_header(seq as u16, out);
            let payload = &mut out[DATA_HEADER_LEN..DATA_HEADER_LEN + len];
            match &self.source {
                Source::Memory(data) => {
                    // offset + len <= size == data.len().
                    let start = offset as usize;
                    payload.copy_from_slice(&data[start..start + len]);
                }
                Source::File(file) => file.read_exact_at(payload, offset)?,
            }
            self.socket
                .send_to(&out[..DATA_HEADER_LEN + len], self.peer)
                .await?;
            if seq > *sent_hi {
                *sent_hi = seq;
                *sent += len as u64;
                TftpStats::bump(&self.shared.stats.bytes_sent, len as u64);
            } else {
                self.retransmitted += 1;
            }
        }
        Ok(())
    }

    /// Sorts out one received datagram: from the client it is an ACK, an ERROR or ignored;
    /// from anyone else it gets error 5 (RFC 1350 §4) and the transfer goes on.
    async fn classify(
        &mut self,
        got: io::Result<(usize, SocketAddr)>,
        buf: &[u8],
    ) -> io::Result<Incoming> {
        let (n, from) = match got {
            Ok(got) => got,
            // ICMP errors and memory pressure surface here; the timer covers the loss.
            Err(e) if is_transient(&e) => return Ok(Incoming::Ignored),
            Err(e) => return Err(e),
        };
        let parsed = packet::parse(&buf[..n]);
        if from != self.peer {
            TftpStats::bump(&self.shared.stats.unknown_tid, 1);
            // Never answer an ERROR with an ERROR, nor garbage at all.
            let answer = matches!(&parsed, Ok(p) if !matches!(p, Packet::Error { .. }));
            if answer && self.unknown_tid_replies < MAX_UNKNOWN_TID_REPLIES {
                self.unknown_tid_replies += 1;
                let reply = packet::encode_error(ErrorCode::UnknownTid, "unknown transfer ID");
                let _ = self.socket.send_to(&reply, from).await;
            }
            return Ok(Incoming::Ignored);
        }
        Ok(match parsed {
            Ok(Packet::Ack(n)) => Incoming::Ack(n),
            Ok(Packet::Error { code, message }) => {
                let end = message.len().min(packet::MAX_ERROR_MESSAGE);
                Incoming::Error(code, String::from_utf8_lossy(&message[..end]).into_owned())
            }
            Ok(_) | Err(_) => {
                TftpStats::bump(&self.shared.stats.malformed, 1);
                Incoming::Ignored
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let asked = RequestOptions {
            blksize: Some(65464),
            tsize: Some(0),
            timeout: Some(255),
            windowsize: Some(64),
        };
        assert_eq!(
            negotiate(&asked, 1234, 1468, 16),
            AcceptedOptions {
                blksize: Some(1468),
                tsize: Some(1234),
                windowsize: Some(16),
            }
        );
        let small = RequestOptions {
            blksize: Some(512),
            windowsize: Some(4),
            tsize: Some(99),
            ..RequestOptions::default()
        };
        assert_eq!(
            negotiate(&small, 7, 1468, 16),
            AcceptedOptions {
                blksize: Some(512),
                tsize: Some(7),
                windowsize: Some(4),
            }
        );
        // `timeout` alone is not acknowledged: no OACK at all.
        let timeout_only = RequestOptions {
            timeout: Some(5),
            ..RequestOptions::default()
        };
        assert!(negotiate(&timeout_only, 1, 1468, 16).is_empty());
        // A window limit of 0 counts as 1.
        let w = RequestOptions {
            windowsize: Some(8),
            ..RequestOptions::default()
        };
        assert_eq!(negotiate(&w, 1, 1468, 0).windowsize, Some(1));
    }
}
