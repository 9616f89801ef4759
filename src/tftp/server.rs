//! The TFTP service: async-tftp with our handler, run on a dedicated thread.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tftp::packet;
use async_tftp::server::{Handler, TftpServer, TftpServerBuilder};
use bytes::Bytes;
use futures_lite::AsyncRead;
use tracing::{info, warn};

use super::files::{DirLookup, ExtraDir, Refusal, TftpFiles, resolve_request};
use super::net::{effective_max_block_size, link_info, listen_socket, validate_ifname};
use super::sessions::{Busy, Permit, Sessions};
use super::{MAX_SEND_RETRIES, MAX_TIMEOUT, TftpConfig, TftpStats, fd_session_cap};

/// A bound, not yet running, TFTP server.
///
/// Create it with [`TftpService::bind`] (errors such as a missing capability or a port in use
/// surface there), then drive it with [`TftpService::run`].
pub struct TftpService {
    server: TftpServer<BootHandler>,
    local_addr: SocketAddr,
    stats: Arc<TftpStats>,
    max_sessions: usize,
}

impl std::fmt::Debug for TftpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpService")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
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
        let window_limit = config.window_size_limit.max(1);
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
        let handler = BootHandler {
            files: Arc::new(files),
            extra,
            stats: Arc::clone(&stats),
            sessions,
            window_limit,
            busy_log: BusyLog::default(),
        };
        let server = TftpServerBuilder::with_handler(handler)
            .std_socket(socket)?
            .timeout(timeout)
            // A client's `timeout` (up to 255 s) would also become the engine's retransmission
            // timeout and keep an abandoned transfer alive for 25 minutes (module docs).
            .ignore_client_timeout()
            .block_size_limit(max_block)
            .window_size_limit(window_limit)
            .max_send_retries(MAX_SEND_RETRIES)
            .build()
            .await?;
        Ok(TftpService {
            server,
            local_addr,
            stats,
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
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` completes, then stops (in-flight transfers are dropped and the
    /// socket is closed before this returns). Also returns if the engine fails.
    ///
    /// async-tftp is built on async-io, so the server runs on its own thread (`tftp`) under a
    /// minimal executor; this future only waits for it. Dropping the future also stops it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let server = self.server;
        let local_addr = self.local_addr;
        std::thread::Builder::new()
            .name("tftp".into())
            .spawn(move || {
                let result = futures_lite::future::block_on(futures_lite::future::or(
                    async move { server.serve().await.map_err(anyhow::Error::from) },
                    async move {
                        // A send or a dropped sender: both mean stop.
                        let _ = stop_rx.await;
                        Ok(())
                    },
                ));
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

/// Our async-tftp handler: path policy, lookup, accounting.
struct BootHandler {
    files: Arc<TftpFiles>,
    extra: Option<ExtraDir>,
    stats: Arc<TftpStats>,
    sessions: Arc<Sessions>,
    window_limit: u16,
    busy_log: BusyLog,
}

/// Busy refusals come in floods: one log line per [`BUSY_LOG_INTERVAL`] at most, with the count
/// of the ones not logged (the exact figures are in the metrics).
#[derive(Debug, Default)]
struct BusyLog {
    last: Option<Instant>,
    suppressed: u64,
}

const BUSY_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl BootHandler {
    fn log_busy(&mut self, client: &SocketAddr, name: &str, busy: &Busy) {
        let now = Instant::now();
        match self.busy_log.last {
            Some(last) if now.duration_since(last) < BUSY_LOG_INTERVAL => {
                self.busy_log.suppressed += 1;
            }
            _ => {
                warn!(
                    peer = %client,
                    file = %name,
                    reason = %busy,
                    not_logged_since_last = self.busy_log.suppressed,
                    "TFTP request refused: busy (logged at most every 10 s; see \
                     bootfactory_tftp_requests_total)"
                );
                self.busy_log = BusyLog {
                    last: Some(now),
                    suppressed: 0,
                };
            }
        }
    }

    fn refuse(&self, client: &SocketAddr, requested: &str, why: Refusal) -> packet::Error {
        TftpStats::bump(&self.stats.refused, 1);
        warn!(peer = %client, file = ?requested, reason = %why, "TFTP request refused");
        packet::Error::PermissionDenied
    }

    fn open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(TransferReader, Option<u64>), packet::Error> {
        TftpStats::bump(&self.stats.requests, 1);
        let Some(requested) = path.to_str() else {
            return Err(self.refuse(client, &path.to_string_lossy(), Refusal::NotUtf8));
        };
        let name = match resolve_request(requested) {
            Ok(name) => name,
            Err(why) => return Err(self.refuse(client, requested, why)),
        };
        // Admission before anything is opened: the engine binds the transfer's socket only
        // after this returns a reader, and the permit lives in the reader.
        let permit = match self.sessions.try_admit(client.ip()) {
            Ok(permit) => permit,
            Err(busy) => {
                self.log_busy(client, &name, &busy);
                return Err(packet::Error::Msg(busy.to_string()));
            }
        };
        if let Some(data) = self.files.get(&name) {
            let size = data.len() as u64;
            let reader = self.reader(
                *client,
                name,
                "embedded",
                Source::Memory(data.clone()),
                size,
                permit,
            );
            return Ok((reader, Some(size)));
        }
        if let Some(dir) = &self.extra {
            match dir.open(&name) {
                DirLookup::Found(file, size) => {
                    let reader =
                        self.reader(*client, name, "extra_dir", Source::File(file), size, permit);
                    return Ok((reader, Some(size)));
                }
                DirLookup::NotFound => {}
                DirLookup::Refused(why) => return Err(self.refuse(client, requested, why)),
                DirLookup::Error(e) => {
                    warn!(peer = %client, file = %name, error = %crate::errors::chain(&e), "TFTP: cannot open file");
                    return Err(packet::Error::Msg("cannot read file".into()));
                }
            }
        }
        TftpStats::bump(&self.stats.not_found, 1);
        info!(peer = %client, file = ?requested, "TFTP file not found");
        Err(packet::Error::FileNotFound)
    }

    fn reader(
        &self,
        peer: SocketAddr,
        name: String,
        origin: &'static str,
        source: Source,
        size: u64,
        permit: Permit,
    ) -> TransferReader {
        TransferReader {
            _permit: permit,
            source,
            size,
            pos: 0,
            peer,
            name,
            origin,
            started: Instant::now(),
            blksize: 0,
            eof: false,
            window_limit: self.window_limit,
            stats: Arc::clone(&self.stats),
        }
    }
}

impl Handler for BootHandler {
    type Reader = TransferReader;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        self.open(client, path)
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        TftpStats::bump(&self.stats.requests, 1);
        Err(self.refuse(client, &path.to_string_lossy(), Refusal::Write))
    }
}

enum Source {
    Memory(Bytes),
    /// Read synchronously on the TFTP thread: extra-directory files are small local files
    /// (scripts, menus) and come from the page cache.
    File(File),
}

/// Feeds one transfer and accounts for it; the engine drops it when the transfer ends.
pub(crate) struct TransferReader {
    source: Source,
    /// Size announced in `tsize`; never read past it even if the file grows.
    size: u64,
    pos: u64,
    peer: SocketAddr,
    name: String,
    origin: &'static str,
    started: Instant,
    /// Largest read the engine asked for: it reads each block with a buffer of exactly the
    /// negotiated block size, so this is the blksize of the transfer.
    blksize: usize,
    eof: bool,
    window_limit: u16,
    stats: Arc<TftpStats>,
    /// The transfer's admission slot, freed when the engine drops the reader (after it has
    /// closed the transfer's socket).
    _permit: Permit,
}

impl AsyncRead for TransferReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.blksize = this.blksize.max(buf.len());
        let remaining = this.size.saturating_sub(this.pos);
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = if want == 0 {
            0
        } else {
            match &mut this.source {
                Source::Memory(data) => {
                    // pos < size == data.len(), so this fits in usize.
                    let start = this.pos as usize;
                    buf[..want].copy_from_slice(&data[start..start + want]);
                    want
                }
                Source::File(file) => loop {
                    match file.read(&mut buf[..want]) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                },
            }
        };
        if n == 0 && !buf.is_empty() {
            this.eof = true;
        }
        this.pos += n as u64;
        TftpStats::bump(&this.stats.bytes_sent, n as u64);
        Poll::Ready(Ok(n))
    }
}

impl Drop for TransferReader {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let complete = self.eof && self.pos == self.size;
        if complete {
            TftpStats::bump(&self.stats.served, 1);
            let secs = elapsed.as_secs_f64();
            let mbps = if secs > 0.0 {
                self.pos as f64 / secs / 1e6
            } else {
                0.0
            };
            info!(
                peer = %self.peer,
                file = %self.name,
                source = self.origin,
                bytes = self.pos,
                blksize = self.blksize,
                window_limit = self.window_limit,
                duration_ms,
                mb_per_s = format_args!("{mbps:.2}"),
                "TFTP transfer complete"
            );
        } else {
            info!(
                peer = %self.peer,
                file = %self.name,
                source = self.origin,
                bytes = self.pos,
                size = self.size,
                blksize = self.blksize,
                window_limit = self.window_limit,
                duration_ms,
                "TFTP transfer ended before the whole file was sent (client aborted or stopped \
                 answering, e.g. a tsize probe)"
            );
        }
    }
}
