//! The HTTP accept loop: hyper's HTTP/1.1 connection driver with the limits `axum::serve` does
//! not have.
//!
//! Every accepted connection is admitted into a [`ConnTable`] of at most `http.maxConnections`
//! entries and watched by a per-connection watchdog:
//!
//! - **header-read timeout** (`http.headerReadTimeoutSeconds`): from accept (or from the first
//!   byte of the next request on a kept-alive connection) until the request head is parsed;
//!   includes the TLS handshake. Slowloris connections are closed when it expires.
//! - **idle timeout** (`http.idleTimeoutSeconds`): a kept-alive connection with no request in
//!   flight and no byte received for this long is closed. The same limit applies to a response
//!   whose writes have been blocked (the client stopped reading).
//! - **body-read timeout** (`http.bodyReadTimeoutSeconds`): a total deadline, from the request
//!   head, on reading the request body; the handler sees a body error and answers 400.
//! - **at the cap**: the oldest connection without a request in flight (idle keep-alive,
//!   slowloris, never-sent-anything) is closed to admit the new one; when every connection is
//!   busy the new one gets an immediate `503` and is closed.
//!
//! An endpoint listens on TCP or on a Unix socket (the admin socket, `api.socket`). A Unix
//! connection carries its peer's credentials (`SO_PEERCRED`) in [`ConnInfo::local`], with
//! whether the endpoint trusts that uid with the admin API; its `peer` address is the
//! loopback address, port 0 (the client is on this host).
//!
//! A plain TCP connection's socket is a [`SendfileIo`] and its HTTP/1 requests carry the
//! connection's [`Jobs`] queue, so stored files are sent with `sendfile(2)`
//! ([`crate::file_response::sendfile`]); TLS and Unix-socket connections stream. A request
//! counts as in flight until its response's last frame has left for the socket, not merely
//! until hyper has queued it (a `sendfile` body is queued whole at once).
//!
//! When a response is sent before the request body was read (e.g. 413), the connection is
//! half-closed and up to [`DRAIN_BYTES`] / [`DRAIN_TIME`] of the body is read and discarded
//! before closing, so a client that uploads everything before reading (Python's urllib) gets
//! the response instead of a connection reset.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGauge, Opts};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::file_response::sendfile::{Jobs, SendfileIo};
use crate::metrics::Metrics;

/// At most this much of an unread request body is read and discarded before closing.
pub const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
/// For at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Pause after an accept error such as EMFILE before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The time limits and the connection cap of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Accept (or first byte of a request) → request head parsed.
    pub header_read: Duration,
    /// No request in flight and nothing received; also a response whose writes are blocked.
    pub idle: Duration,
    /// Request head → request body read to the end.
    pub body_read: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits configured under `http.*`.
    pub fn from_config(http: &HttpConfig) -> Limits {
        Limits {
            header_read: Duration::from_secs(http.header_read_timeout_seconds),
            idle: Duration::from_secs(http.idle_timeout_seconds),
            body_read: Duration::from_secs(http.body_read_timeout_seconds),
            max_connections: http.max_connections,
        }
    }

    /// Lowers `max_connections` so that the connections fit in the process' file descriptor
    /// limit with room for everything else (store files, TFTP, DHCP); returns the limit used
    /// when it had to be lowered.
    pub fn fit_fd_limit(&mut self, fd_limit: u64) -> Option<usize> {
        let room = crate::limits::http_connection_budget(fd_limit);
        if (self.max_connections as u64) > room {
            self.max_connections = room as usize;
            return Some(self.max_connections);
        }
        None
    }
}

/// How the request reached us; every request carries one as an extension (next to axum's
/// `ConnectInfo<SocketAddr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address (the loopback address, port 0, on a Unix socket).
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The peer of a Unix-socket connection; `None` over TCP.
    pub local: Option<LocalPeer>,
}

/// The credentials of a Unix-socket peer (`SO_PEERCRED`, taken when it connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPeer {
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
    /// Its process ID, when the kernel reports one.
    pub pid: Option<i32>,
    /// The endpoint trusts this uid with the admin API ([`UnixEndpoint::admin_uids`]).
    pub admin: bool,
}

/// What an endpoint listens on.
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix socket; connections from these uids are admins (`LocalPeer::admin`).
    Unix(UnixEndpoint),
}

/// A bound Unix socket and the uids it trusts with the admin API.
pub struct UnixEndpoint {
    /// The bound socket.
    pub listener: UnixListener,
    /// Peer uids whose requests are admin requests (root and the server's own user).
    pub admin_uids: Vec<u32>,
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

/// A loopback address, the `peer` of Unix-socket connections.
const LOCAL_PEER_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// An accepted connection of either kind.
enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream, LocalPeer),
}

impl Listener {
    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                let (tcp, peer) = l.accept().await?;
                // Without TCP_NODELAY a response whose headers and body go out in two writes
                // waits for the client's delayed ACK (40 ms stalls on kept-alive connections).
                let _ = tcp.set_nodelay(true);
                Ok(Accepted::Tcp(tcp, peer))
            }
            Listener::Unix(u) => {
                let (stream, _) = u.listener.accept().await?;
                // Without credentials the connection cannot be authorised: drop it alone.
                let cred = stream
                    .peer_cred()
                    .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
                Ok(Accepted::Unix(
                    stream,
                    LocalPeer {
                        uid: cred.uid(),
                        gid: cred.gid(),
                        pid: cred.pid(),
                        admin: u.admin_uids.contains(&cred.uid()),
                    },
                ))
            }
        }
    }
}

/// Connection metrics, registered once per process.
#[derive(Clone)]
pub struct ConnMetrics {
    open: IntGauge,
    shed: IntCounterVec,
    timeouts: IntCounterVec,
}

impl ConnMetrics {
    /// Creates and registers `bootfactory_http_connections`,
    /// `bootfactory_http_connections_shed_total{reason}` and
    /// `bootfactory_http_timeouts_total{phase}`.
    pub fn register(metrics: &Metrics) -> ConnMetrics {
        let open = IntGauge::new(
            "bootfactory_http_connections",
            "HTTP connections open (all listeners).",
        )
        .expect("valid metric");
        let shed = IntCounterVec::new(
            Opts::new(
                "bootfactory_http_connections_shed_total",
                "HTTP connections closed at the connection cap: evicted (oldest without a request in flight) or refused (503, every connection busy).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let timeouts = IntCounterVec::new(
            Opts::new(
                "bootfactory_http_timeouts_total",
                "HTTP connections or requests ended by a timeout, by phase (header, idle, write, body).",
            ),
            &["phase"],
        )
        .expect("valid metric");
        metrics.register_collector(Box::new(open.clone()));
        metrics.register_collector(Box::new(shed.clone()));
        metrics.register_collector(Box::new(timeouts.clone()));
        ConnMetrics {
            open,
            shed,
            timeouts,
        }
    }
}

/// One listening socket and what it serves.
pub struct Endpoint {
    /// The bound listener.
    pub listener: Listener,
    /// The application.
    pub router: Router,
    /// Terminate TLS on accepted connections.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Milliseconds since the server started, plus one (0 means "unset" in the atomics).
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }
    fn instant(&self, ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.0 + Duration::from_millis(ms.saturating_sub(1)))
    }
}

/// What the watchdog, the I/O wrapper, the service and the bodies of one connection share.
struct ConnState {
    clock: Clock,
    /// Requests whose response has not been fully sent (or dropped).
    inflight: AtomicU32,
    /// When the first byte of the pending request head arrived (0: none pending).
    head_started: AtomicU64,
    /// When the last request finished (or the connection was accepted).
    idle_since: AtomicU64,
    /// Since when a write has been blocked (0: not blocked).
    write_blocked: AtomicU64,
    /// A request body was not read to the end.
    body_pending: AtomicBool,
    /// Evicted to make room; the watchdog closes the connection.
    evicted: AtomicBool,
    wake: Notify,
}

impl ConnState {
    fn new(clock: Clock) -> ConnState {
        let now = clock.now();
        ConnState {
            clock,
            inflight: AtomicU32::new(0),
            // The first request's header timeout runs from accept.
            head_started: AtomicU64::new(now),
            idle_since: AtomicU64::new(now),
            write_blocked: AtomicU64::new(0),
            body_pending: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// A request is in flight, or a response is still waiting to be written out (hyper may
    /// hold the end of a finished body in its write buffer).
    fn busy(&self) -> bool {
        self.inflight.load(Ordering::Acquire) > 0 || self.write_blocked.load(Ordering::Acquire) != 0
    }
}

/// Live connections of one server, oldest first.
struct ConnTable {
    inner: Mutex<TableInner>,
    max: usize,
    metrics: ConnMetrics,
}

struct TableInner {
    next_id: u64,
    conns: BTreeMap<u64, Arc<ConnState>>,
}

/// Removes its connection from the table when the connection task ends.
struct Admitted {
    table: Arc<ConnTable>,
    id: u64,
    state: Arc<ConnState>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut inner = self.table.inner.lock().expect("connection table lock");
        if inner.conns.remove(&self.id).is_some() {
            self.table.metrics.open.dec();
        }
    }
}

impl ConnTable {
    fn new(max: usize, metrics: ConnMetrics) -> ConnTable {
        ConnTable {
            inner: Mutex::new(TableInner {
                next_id: 0,
                conns: BTreeMap::new(),
            }),
            max: max.max(1),
            metrics,
        }
    }

    /// Admits a new connection, evicting the oldest one without a request in flight when at
    /// the cap; `None` when every connection is busy.
    fn admit(self: &Arc<Self>, clock: Clock) -> Option<Admitted> {
        let mut inner = self.inner.lock().expect("connection table lock");
        if inner.conns.len() >= self.max {
            let victim = inner
                .conns
                .iter()
                .find(|(_, s)| !s.busy())
                .map(|(id, _)| *id)?;
            if let Some(state) = inner.conns.remove(&victim) {
                state.evicted.store(true, Ordering::Release);
                state.wake.notify_one();
                self.metrics.open.dec();
                self.metrics.shed.with_label_values(&["evicted"]).inc();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(ConnState::new(clock));
        inner.conns.insert(id, state.clone());
        self.metrics.open.inc();
        Some(Admitted {
            table: self.clone(),
            id,
            state,
        })
    }
}

/// Serves `endpoints` until `shutdown` resolves; then stops accepting, lets requests in flight
/// finish for up to `grace`, and closes whatever is left.
pub async fn serve(
    endpoints: Vec<Endpoint>,
    limits: Limits,
    metrics: ConnMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let table = Arc::new(ConnTable::new(limits.max_connections, metrics));
    let clock = Clock(Instant::now());
    let tracker = TaskTracker::new();
    // 0 = serving, 1 = graceful shutdown, 2 = close everything now.
    let (stop_tx, stop_rx) = watch::channel(0u8);
    let mut accept_loops = Vec::new();
    for endpoint in endpoints {
        let ctx = AcceptCtx {
            limits,
            table: table.clone(),
            clock,
            tracker: tracker.clone(),
            stop: stop_rx.clone(),
        };
        accept_loops.push(tokio::spawn(accept_loop(endpoint, ctx)));
    }
    shutdown.await;
    let _ = stop_tx.send(1);
    for task in accept_loops {
        let _ = task.await;
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "in-flight requests did not finish in time; closing"
        );
        let _ = stop_tx.send(2);
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
    Ok(())
}

struct AcceptCtx {
    limits: Limits,
    table: Arc<ConnTable>,
    clock: Clock,
    tracker: TaskTracker,
    stop: watch::Receiver<u8>,
}

async fn accept_loop(endpoint: Endpoint, mut ctx: AcceptCtx) {
    let Endpoint {
        listener,
        router,
        tls,
    } = endpoint;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.stop.wait_for(|s| *s > 0) => return,
            r = listener.accept() => r,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the listener stays readable, so accepting
                // again at once would spin. Pause, and log at most every 10 s.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::error!(error = %e, "cannot accept HTTP connections; retrying");
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(admitted) = ctx.table.admit(ctx.clock) else {
            ctx.table.metrics.shed.with_label_values(&["refused"]).inc();
            match accepted {
                Accepted::Tcp(tcp, _) => refuse_tcp(tcp),
                Accepted::Unix(stream, _) => refuse_unix(stream),
            }
            continue;
        };
        let (peer, local) = match &accepted {
            Accepted::Tcp(_, peer) => (*peer, None),
            Accepted::Unix(_, local) => (LOCAL_PEER_ADDR, Some(*local)),
        };
        let conn = Conn {
            router: router.clone(),
            limits: ctx.limits,
            peer,
            local,
            metrics: ctx.table.metrics.clone(),
            stop: ctx.stop.clone(),
        };
        let tls = tls.clone();
        ctx.tracker.spawn(async move {
            let tcp = match accepted {
                Accepted::Unix(stream, _) => return conn.run(stream, false, None, admitted).await,
                Accepted::Tcp(tcp, _) => tcp,
            };
            match tls {
                None => {
                    // Plain TCP: file bodies go out with sendfile (see `file_response::sendfile`).
                    let jobs = Jobs::new();
                    let io = SendfileIo::new(tcp, jobs.clone());
                    conn.run(io, false, Some(jobs), admitted).await
                }
                Some(acceptor) => {
                    let state = admitted.state.clone();
                    let handshake = WatchedIo {
                        inner: tcp,
                        state: state.clone(),
                    };
                    let deadline = ctx_header_deadline(&state, conn.limits);
                    tokio::select! {
                        r = acceptor.accept(handshake) => match r {
                            Ok(stream) => conn.run(stream, true, None, admitted).await,
                            Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        },
                        () = tokio::time::sleep_until(deadline) => {
                            conn.metrics.timeouts.with_label_values(&["header"]).inc();
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                        () = wait_evicted(&state) => {}
                    }
                }
            }
        });
    }
}

fn ctx_header_deadline(state: &ConnState, limits: Limits) -> tokio::time::Instant {
    state
        .clock
        .instant(state.head_started.load(Ordering::Acquire))
        + limits.header_read
}

async fn wait_evicted(state: &ConnState) {
    while !state.evicted.load(Ordering::Acquire) {
        state.wake.notified().await;
    }
}

/// Errors that concern one connection only (the next accept may work at once).
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// The answer to a connection over the cap.
fn refusal() -> String {
    const BODY: &str = "too many connections; retry later\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
}

/// Answers 503 without reading anything, then closes.
fn refuse_tcp(tcp: TcpStream) {
    let _ = tcp.try_write(refusal().as_bytes());
    // Half-close before dropping so the response is not lost to a reset when nothing was
    // read yet.
    if let Ok(std) = tcp.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Write);
    }
}

/// [`refuse_tcp`] for a Unix-socket connection.
fn refuse_unix(stream: UnixStream) {
    let _ = stream.try_write(refusal().as_bytes());
    if let Ok(std) = stream.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Write);
    }
}

/// Why the watchdog ended a connection.
#[derive(Debug, Clone, Copy)]
enum Kill {
    HeaderTimeout,
    IdleTimeout,
    WriteStalled,
    Evicted,
}

struct Conn {
    router: Router,
    limits: Limits,
    peer: SocketAddr,
    local: Option<LocalPeer>,
    metrics: ConnMetrics,
    stop: watch::Receiver<u8>,
}

impl Conn {
    /// Serves the connection. `zero_copy` is the queue of `io` when it is a [`SendfileIo`]
    /// (plain TCP): its HTTP/1 requests carry it, so file bodies are sent with `sendfile`.
    async fn run<T>(mut self, io: T, tls: bool, zero_copy: Option<Jobs>, admitted: Admitted)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let state = admitted.state.clone();
        let info = ConnInfo {
            peer: self.peer,
            tls,
            local: self.local,
        };
        let service = RequestService {
            router: self.router.clone(),
            state: state.clone(),
            info,
            body_read: self.limits.body_read,
            metrics: self.metrics.clone(),
            zero_copy: zero_copy.clone(),
        };
        let service = hyper::service::service_fn(move |req| service.call(req));
        let io = TokioIo::new(WatchedIo {
            inner: io,
            state: state.clone(),
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The watchdog enforces the header timeout (hyper's would also run between requests
        // and so cut idle keep-alive connections short); the timer is still needed by hyper.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true);
        if zero_copy.is_some() {
            // Body frames must reach the socket wrapper as queued slices, never copied into
            // hyper's own buffer (which `pipeline_flush` or a non-vectored socket would do).
            builder.writev(true).pipeline_flush(false);
        }
        let mut conn = builder.serve_connection(io, service);
        let watchdog = watchdog(&state, self.limits);
        tokio::pin!(watchdog);
        let mut stopping = false;
        let ended = loop {
            if !stopping && *self.stop.borrow() >= 1 {
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            tokio::select! {
                r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break Ok(r),
                kill = &mut watchdog => break Err(kill),
                r = self.stop.changed() => {
                    if r.is_err() || *self.stop.borrow() >= 2 {
                        return;
                    }
                }
            }
        };
        match ended {
            Ok(Ok(())) => {
                let body_pending = state.body_pending.load(Ordering::Acquire);
                let parts = conn.into_parts();
                let io = parts.io.into_inner().inner;
                drop(admitted);
                if body_pending {
                    let drained = drain(io).await;
                    tracing::debug!(peer = %self.peer, drained, "drained an unread request body");
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, body_pending = state.body_pending.load(Ordering::Acquire), "HTTP connection error");
            }
            Err(kill) => {
                let phase = match kill {
                    Kill::HeaderTimeout => Some("header"),
                    Kill::IdleTimeout => Some("idle"),
                    Kill::WriteStalled => Some("write"),
                    Kill::Evicted => None,
                };
                if let Some(phase) = phase {
                    self.metrics.timeouts.with_label_values(&[phase]).inc();
                }
                tracing::debug!(peer = %self.peer, reason = ?kill, "closing HTTP connection");
            }
        }
    }
}

/// Resolves when the connection must be closed.
async fn watchdog(state: &ConnState, limits: Limits) -> Kill {
    let clock = state.clock;
    let ms = |d: Duration| d.as_millis() as u64;
    loop {
        if state.evicted.load(Ordering::Acquire) {
            return Kill::Evicted;
        }
        let now = clock.now();
        let wake_at = if state.busy() {
            let blocked = state.write_blocked.load(Ordering::Acquire);
            if blocked != 0 && now.saturating_sub(blocked) >= ms(limits.idle) {
                return Kill::WriteStalled;
            }
            if blocked != 0 {
                blocked + ms(limits.idle)
            } else {
                // Re-check a busy connection now and then: writes may block later.
                now + ms(limits.idle).div_ceil(2).max(1)
            }
        } else {
            let head = state.head_started.load(Ordering::Acquire);
            if head != 0 {
                let deadline = head + ms(limits.header_read);
                if now >= deadline {
                    return Kill::HeaderTimeout;
                }
                deadline
            } else {
                let deadline = state.idle_since.load(Ordering::Acquire) + ms(limits.idle);
                if now >= deadline {
                    return Kill::IdleTimeout;
                }
                deadline
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(clock.instant(wake_at)) => {}
            () = state.wake.notified() => {}
        }
    }
}

/// Half-closes, then reads and discards what the client is still sending (bounded), so the
/// response is not destroyed by a reset when the socket closes with unread data.
async fn drain<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) -> u64 {
    let mut drained = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let _ = io.shutdown().await;
        let mut buf = vec![0u8; 64 * 1024];
        while drained < DRAIN_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n as u64,
            }
        }
    })
    .await;
    drained
}

/// The socket, noting when a request head starts and when writes block.
struct WatchedIo<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let s = &self.state;
            if !s.busy() && s.head_started.load(Ordering::Acquire) == 0 {
                s.head_started.store(s.clock.now(), Ordering::Release);
                s.wake.notify_one();
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> WatchedIo<T> {
    fn note_write<R>(&self, r: &Poll<R>) {
        let s = &self.state;
        match r {
            Poll::Pending => {
                if s.write_blocked.load(Ordering::Relaxed) == 0 {
                    s.write_blocked.store(s.clock.now(), Ordering::Release);
                    // The watchdog may be asleep until a deadline of another phase (the
                    // header timeout, planned before this request began): the stall limit
                    // runs from now.
                    s.wake.notify_one();
                }
            }
            Poll::Ready(_) => s.write_blocked.store(0, Ordering::Release),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long an admin's bundle upload may take (the admin socket's body limit, and what an
/// import over TCP gets once its token or session is checked): the store GC's grace period
/// (7 h) is longer, so GC never takes the blobs of an import still running.
pub const ADMIN_UPLOAD_TIME: Duration = Duration::from_secs(6 * 3600);

/// How long a request's body may take, counted from the request's start: the endpoint's
/// `body_read` limit (`http.bodyReadTimeoutSeconds`), unless a handler that has authorised a
/// long upload (a bundle import by an admin) gives it more with [`BodyTime::allow`]. Every
/// request carries one in its extensions.
#[derive(Debug, Clone)]
pub struct BodyTime(Arc<AtomicU64>);

impl BodyTime {
    fn new(limit: Duration) -> BodyTime {
        BodyTime(Arc::new(AtomicU64::new(limit.as_millis() as u64)))
    }

    /// Lets the body take up to `limit` from the request's start (never less than it had).
    pub fn allow(&self, limit: Duration) {
        self.0.fetch_max(limit.as_millis() as u64, Ordering::AcqRel);
    }

    fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Acquire))
    }
}

/// Turns hyper requests into axum requests for one connection.
#[derive(Clone)]
struct RequestService {
    router: Router,
    state: Arc<ConnState>,
    info: ConnInfo,
    body_read: Duration,
    metrics: ConnMetrics,
    /// The connection's `sendfile` queue (plain TCP only).
    zero_copy: Option<Jobs>,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<axum::response::Response, io::Error>> + Send>>;

impl RequestService {
    fn call(&self, request: hyper::Request<Incoming>) -> BoxFuture {
        let state = self.state.clone();
        state.inflight.fetch_add(1, Ordering::AcqRel);
        state.head_started.store(0, Ordering::Release);
        let guard = InflightGuard(state.clone());
        let empty = http_body::Body::is_end_stream(request.body());
        state.body_pending.store(!empty, Ordering::Release);
        let started = tokio::time::Instant::now();
        let deadline = started + self.body_read;
        let metrics = self.metrics.clone();
        let allowed = BodyTime::new(self.body_read);
        let mut request = request.map(|incoming| {
            Body::new(TimedBody {
                inner: incoming,
                limit: self.body_read,
                deadline,
                started,
                allowed: allowed.clone(),
                sleep: None,
                state: state.clone(),
                metrics,
            })
        });
        request.extensions_mut().insert(ConnectInfo(self.info.peer));
        request.extensions_mut().insert(self.info);
        request.extensions_mut().insert(allowed);
        if let Some(jobs) = &self.zero_copy
            && matches!(
                request.version(),
                axum::http::Version::HTTP_10 | axum::http::Version::HTTP_11
            )
        {
            request.extensions_mut().insert(jobs.clone());
        }
        let router = self.router.clone();
        Box::pin(async move {
            let response = match router.oneshot(request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(response.map(|body| {
                Body::new(TrackedBody {
                    inner: body,
                    guard: Arc::new(guard),
                })
            }))
        })
    }
}

/// Counts a request as in flight until its response body is done (or dropped).
struct InflightGuard(Arc<ConnState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since.store(s.clock.now(), Ordering::Release);
        s.inflight.fetch_sub(1, Ordering::AcqRel);
        s.wake.notify_one();
    }
}

/// A response body that holds its request's [`InflightGuard`], and so does its last data
/// frame: hyper drops the body once the last frame is queued, but the request is in flight
/// (for the idle and write-stall limits) until that frame has left for the socket, which for a
/// `sendfile` body is the whole file.
struct TrackedBody {
    inner: Body,
    guard: Arc<InflightGuard>,
}

/// The last frame of a response, with its request's guard.
struct LastFrame {
    data: Bytes,
    _guard: Arc<InflightGuard>,
}

impl AsRef<[u8]> for LastFrame {
    fn as_ref(&self) -> &[u8] {
        // The very bytes of `data`: a `sendfile` placeholder stays one.
        &self.data
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            return polled;
        };
        if !self.inner.is_end_stream() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = frame.map_data(|data| {
            Bytes::from_owner(LastFrame {
                data,
                _guard: self.guard.clone(),
            })
        });
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body has not arrived within `http.bodyReadTimeoutSeconds`.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {} s", .0.as_secs())]
pub struct BodyTimeout(Duration);

/// A request body with a total read deadline.
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    deadline: tokio::time::Instant,
    started: tokio::time::Instant,
    allowed: BodyTime,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    state: Arc<ConnState>,
    metrics: ConnMetrics,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.state.body_pending.store(false, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(r)) => Poll::Ready(Some(r.map_err(Into::into))),
            Poll::Pending => {
                let deadline = self.deadline;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    // A handler may have given this body more time since the sleep began.
                    let allowed = self.allowed.get();
                    let extended = self.started + allowed;
                    if extended > self.deadline {
                        self.deadline = extended;
                        self.limit = allowed;
                        let mut next = Box::pin(tokio::time::sleep_until(extended));
                        if next.as_mut().poll(cx).is_pending() {
                            self.sleep = Some(next);
                            return Poll::Pending;
                        }
                    }
                    self.metrics.timeouts.with_label_values(&["body"]).inc();
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
