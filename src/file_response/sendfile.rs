//! Zero-copy file bodies for plain-HTTP/1.x connections: the bytes of a stored file go from the
//! page cache to the socket with `sendfile(2)` and never through user space.
//!
//! hyper owns the HTTP/1 framing (status line, headers, `Content-Length`, keep-alive,
//! pipelining), and it only ever hands the socket byte slices. So the file travels past hyper
//! as *placeholders*, and the socket wrapper swaps them for `sendfile`:
//!
//! 1. Every plain-TCP HTTP/1 connection owns a [`Jobs`] queue, shared by its socket wrapper
//!    ([`SendfileIo`]) and, through a request extension, by the handlers of its requests.
//! 2. [`file_response`](super::file_response) answers such a request with a [`SendfileBody`].
//!    Each frame that body yields is a slice of the *marker region*: a zero-filled allocation
//!    that is never written or read, so its untouched pages cost no memory. Together the
//!    frames are exactly as long as the response, so hyper's `Content-Length` accounting is
//!    exact. With each frame the body pushes a job (file, offset, length) onto the queue.
//! 3. hyper queues body frames without copying them when the socket does vectored writes
//!    (its `WriteStrategy::Queue`; [`SendfileIo::is_write_vectored`] is `true`), and writes
//!    them in order with `writev`. [`SendfileIo`] passes ordinary slices (the response head)
//!    to the socket; a marker slice is replaced by `sendfile` from the front job's file at its
//!    offset, for at most the slice's length. What was sent is what hyper advances by.
//!
//! Jobs and marker frames correspond one to one and in order, across responses on a kept-alive
//! or pipelined connection. hyper drops a frame unsent only when it tears the connection down;
//! a job whose frame is gone with bytes unsent therefore ends the connection before anything
//! else is written — it is also what a frame *copied* into hyper's own buffer would look like
//! (the copy being placeholder zeros), so a hyper that stopped queueing frames fails closed.
//!
//! Failure is loud, never silent: a file shorter than its response (`sendfile` returns 0 before
//! the end), a marker slice without a job, or a marker slice longer than its job are I/O errors
//! that close the connection. The client sees a short body, never placeholder bytes; the file is
//! never mapped, so a file truncated under us cannot raise `SIGBUS` either.
//!
//! `sendfile` reads the file on the calling thread: a page-cache hit costs nothing, a miss
//! blocks the runtime worker for the disk read of one socket buffer's worth, as nginx without
//! `aio threads` does. TLS connections cannot use this (the bytes must be encrypted in user
//! space) and keep the streaming body.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Size of the marker region, and so the longest body frame (virtual memory only).
const MARKER_LEN: usize = 16 * 1024 * 1024;

/// The marker region: zeroed memory from the allocator's zeroing path, leaked, and never
/// written. glibc serves a request this large from fresh anonymous pages (it is at or above its
/// mmap threshold, which adapts between 128 KiB and 32 MiB), whose untouched pages cost no
/// memory; were it carved from reused heap instead, the cost is 16 MiB once per process, never
/// per download.
fn marker() -> &'static [u8] {
    static MARKER: OnceLock<&'static [u8]> = OnceLock::new();
    MARKER.get_or_init(|| vec![0u8; MARKER_LEN].leak())
}

/// Whether `slice` lies in the marker region (placeholder bytes for a file job).
fn is_marker(slice: &[u8]) -> bool {
    if slice.is_empty() {
        return false;
    }
    let region = marker().as_ptr_range();
    let start = slice.as_ptr();
    start >= region.start && start < region.end
}

/// One stretch of a file to send in place of one marker frame.
struct Job {
    /// Alive while hyper holds the frame.
    frame: Weak<()>,
    file: Arc<File>,
    offset: u64,
    remaining: usize,
}

/// A connection's queue of file stretches still to send, in the order of their marker frames.
/// Requests on a plain-HTTP/1 connection carry a clone as an extension.
#[derive(Clone, Default)]
pub struct Jobs(Arc<Mutex<VecDeque<Job>>>);

impl Jobs {
    /// A fresh, empty queue (one per connection).
    pub fn new() -> Jobs {
        Jobs::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // A panic while holding the lock leaves the queue consistent (every update is one
        // statement), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stretches queued (frames handed to hyper and not fully sent).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// The placeholder bytes of one frame; owns the token that keeps its job alive.
struct MarkerFrame {
    len: usize,
    _token: Arc<()>,
}

impl AsRef<[u8]> for MarkerFrame {
    fn as_ref(&self) -> &[u8] {
        &marker()[..self.len]
    }
}

/// A response body of `len` bytes of `file` from `offset`, sent by the connection's
/// [`SendfileIo`]. Only for requests that carry the connection's [`Jobs`].
pub struct SendfileBody {
    jobs: Jobs,
    file: Arc<File>,
    offset: u64,
    remaining: u64,
}

impl SendfileBody {
    /// The body for `len` bytes of `file` from `offset`.
    pub fn new(jobs: Jobs, file: File, offset: u64, len: u64) -> SendfileBody {
        SendfileBody {
            jobs,
            file: Arc::new(file),
            offset,
            remaining: len,
        }
    }
}

impl http_body::Body for SendfileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(MARKER_LEN as u64) as usize;
        let token = Arc::new(());
        self.jobs.lock().push_back(Job {
            frame: Arc::downgrade(&token),
            file: self.file.clone(),
            offset: self.offset,
            remaining: len,
        });
        self.offset += len as u64;
        self.remaining -= len as u64;
        let frame = Bytes::from_owner(MarkerFrame { len, _token: token });
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Most bytes one `sendfile` call may move: on a page-cache miss the call reads them from disk
/// on the runtime worker, so one call must not hold it for long (1 MiB ≈ a few ms of disk).
const MAX_SENDFILE: usize = 1024 * 1024;

/// Read buffer of the copy fallback (files on a filesystem that refuses `sendfile`).
const COPY_BUFFER: usize = 64 * 1024;

/// Plain-TCP connections open now (live [`SendfileIo`]s).
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Connections that may fill their send buffers freely; past this many, each new one is held
/// to [`NOTSENT_LOWAT`].
const UNBOUNDED_CONNECTIONS: usize = 16;

/// Most bytes a socket may hold not yet sent once many connections are open
/// (`TCP_NOTSENT_LOWAT`; bytes in flight come on top). `sendfile` fills a send buffer at once
/// (auto-tuned up to `tcp_wmem`'s 4 MiB): a thousand downloads to slower readers would hold
/// gigabytes of kernel memory and push TCP into memory pressure (`net.ipv4.tcp_mem`), where
/// transfers stall for a minute (seen in the boot storm bench at 1,000 machines). A few
/// connections keep the kernel's default, which a single fast download needs: the first
/// [`UNBOUNDED_CONNECTIONS`] cost at most 4 MiB each.
const NOTSENT_LOWAT: u32 = 256 * 1024;

/// The `TCP_NOTSENT_LOWAT` for a connection opened when `live` connections (itself included)
/// are open, or `None` to leave the kernel's default.
fn notsent_lowat(live: usize) -> Option<u32> {
    (live > UNBOUNDED_CONNECTIONS).then_some(NOTSENT_LOWAT)
}

/// A plain TCP socket that sends marker slices with `sendfile` from its [`Jobs`].
pub struct SendfileIo {
    tcp: TcpStream,
    jobs: Jobs,
    /// Set once `sendfile` was refused (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`: some FUSE and
    /// network filesystems): the connection then copies file bytes through this buffer.
    copy: Option<Box<[u8]>>,
    /// `TCP_CORK` is on: set while a file stretch longer than one call is part-sent (see
    /// [`SendfileIo::cork_for`]), cleared when it completes.
    corked: bool,
}

impl SendfileIo {
    /// Wraps an accepted socket; `jobs` is the queue its requests' bodies push to.
    pub fn new(tcp: TcpStream, jobs: Jobs) -> SendfileIo {
        let live = LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some(lowat) = notsent_lowat(live) {
            let _ = socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(lowat);
        }
        SendfileIo {
            tcp,
            jobs,
            copy: None,
            corked: false,
        }
    }

    /// Corks the socket before the first call of a file stretch that takes more than one
    /// (`remaining` > `count`). The connection runs with `TCP_NODELAY`, so without the cork
    /// TCP pushes a short segment wherever the pages `sendfile` hands it do not fill one: a
    /// 105 MB body took ~3,470 segments (data and ACKs, loopback) against nginx's ~2,330, and
    /// 15 % less throughput with the server on one CPU. Corked, TCP sends only full segments
    /// (~2,200–2,300, as nginx, whose `tcp_nopush` does the same around its `sendfile`); the
    /// stretch's last bytes are pushed when [`Self::advance_front`] uncorks. A one-call
    /// stretch is not corked: two more system calls would save nothing.
    fn cork_for(&mut self, remaining: usize, count: usize) {
        if !self.corked && remaining > count {
            self.corked = socket2::SockRef::from(&self.tcp).set_tcp_cork(true).is_ok();
        }
    }

    /// Fails when the front job's frame is gone although bytes of it are unsent. hyper drops a
    /// frame unsent only when it tears the connection down — or when it copied the frame into
    /// its own buffer instead of queueing it, and then the copy (placeholder zeros) is what
    /// it is about to write. Either way the connection must end here.
    fn check_front(&self) -> io::Result<()> {
        let jobs = self.jobs.lock();
        match jobs.front() {
            Some(job) if job.frame.strong_count() == 0 => Err(io::Error::other(
                "a file placeholder was dropped unsent (copied or abandoned by the HTTP layer)",
            )),
            _ => Ok(()),
        }
    }

    /// Sends up to `want` bytes (a marker slice's length) of the front job.
    fn poll_sendfile(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        self.check_front()?;
        let (file, offset, count, remaining) = {
            let jobs = self.jobs.lock();
            let Some(job) = jobs.front() else {
                return Poll::Ready(Err(io::Error::other(
                    "a file placeholder reached the socket without a file to send",
                )));
            };
            if want > job.remaining {
                return Poll::Ready(Err(io::Error::other(
                    "a file placeholder is longer than its file stretch",
                )));
            }
            (
                job.file.clone(),
                job.offset,
                want.min(MAX_SENDFILE),
                job.remaining,
            )
        };
        self.cork_for(remaining, count);
        let Ok(mut off) = nix::libc::off_t::try_from(offset) else {
            return Poll::Ready(Err(io::Error::other("file offset out of range")));
        };
        loop {
            if self.copy.is_some() {
                return self.poll_copy(cx, &file, offset, count);
            }
            std::task::ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile(self.tcp.as_fd(), file.as_fd(), Some(&mut off), count)
                    .map_err(io::Error::from)
            });
            match sent {
                Err(e) if refuses_sendfile(&e) => {
                    tracing::debug!(error = %e, "sendfile refused for this file; copying instead");
                    self.copy = Some(vec![0u8; COPY_BUFFER].into_boxed_slice());
                    continue;
                }
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended before its response did",
                    )));
                }
                Ok(n) => {
                    self.advance_front(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Records `n` bytes of the front job as sent; once it is complete, uncorks the socket,
    /// which pushes its last bytes at once.
    fn advance_front(&mut self, n: usize) {
        let completed = {
            let mut jobs = self.jobs.lock();
            match jobs.front_mut() {
                Some(job) => {
                    job.offset += n as u64;
                    job.remaining -= n;
                    let completed = job.remaining == 0;
                    if completed {
                        jobs.pop_front();
                    }
                    completed
                }
                None => false,
            }
        };
        if completed && self.corked {
            // A failure leaves the cork on (and the flag set, so the next stretch's completion
            // tries again): the kernel sends held bytes within 200 ms, and a close pushes them.
            self.corked = socket2::SockRef::from(&self.tcp)
                .set_tcp_cork(false)
                .is_err();
        }
    }

    /// The fallback when the file's filesystem refuses `sendfile`: read up to one buffer at
    /// `offset` and write it. A partial write is re-read next time (the bytes are the file's,
    /// so sending them again from the new offset is exact).
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        count: usize,
    ) -> Poll<io::Result<usize>> {
        use std::os::unix::fs::FileExt;
        std::task::ready!(self.tcp.poll_write_ready(cx))?;
        let Some(buf) = self.copy.as_mut() else {
            return Poll::Ready(Err(io::Error::other("copy buffer missing")));
        };
        let want = count.min(buf.len());
        let read = file.read_at(&mut buf[..want], offset)?;
        if read == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before its response did",
            )));
        }
        loop {
            let Some(buf) = self.copy.as_ref() else {
                return Poll::Ready(Err(io::Error::other("copy buffer missing")));
            };
            match self.tcp.try_write(&buf[..read]) {
                Ok(n) => {
                    self.advance_front(n);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes ordinary slices; `more` (a marker follows) holds them back with `MSG_MORE` so
    /// the head and the first file bytes leave in the same segment.
    fn poll_plain(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        more: bool,
    ) -> Poll<io::Result<usize>> {
        if !more {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        }
        use nix::sys::socket::{MsgFlags, sendmsg};
        loop {
            std::task::ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                sendmsg::<()>(
                    std::os::fd::AsRawFd::as_raw_fd(&self.tcp),
                    bufs,
                    &[],
                    MsgFlags::from_bits_retain(nix::libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl Drop for SendfileIo {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Errors with which a filesystem refuses `sendfile` for a file (not a socket failure).
fn refuses_sendfile(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EINVAL | nix::libc::ENOSYS | nix::libc::EOPNOTSUPP)
    )
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_marker(buf) {
            return self.poll_sendfile(cx, buf.len());
        }
        if let Err(e) = self.check_front() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Empty slices carry nothing; drop them from the front so the first one decides.
        let skip = bufs.iter().take_while(|b| b.is_empty()).count();
        let bufs = &bufs[skip..];
        let Some(first) = bufs.first() else {
            return Poll::Ready(Ok(0));
        };
        if is_marker(first) {
            return self.poll_sendfile(cx, first.len());
        }
        // Ordinary slices up to the first marker (the next call sends the marker). Never after
        // a placeholder that was dropped unsent: these slices could be its copy.
        if let Err(e) = self.check_front() {
            return Poll::Ready(Err(e));
        }
        let plain = bufs.iter().take_while(|b| !is_marker(b)).count();
        let more = plain < bufs.len();
        self.poll_plain(cx, &bufs[..plain], more)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper must queue body frames as they are (its `WriteStrategy::Queue`), never
        // flatten them into its own buffer: the marker slices must reach this wrapper.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (SendfileIo, TcpStream, Jobs) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let jobs = Jobs::new();
        (SendfileIo::new(server, jobs.clone()), client, jobs)
    }

    fn temp_file(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    /// Writes every slice the way hyper does: vectored, advancing by what was written.
    async fn write_all_vectored(io: &mut SendfileIo, frames: &[Bytes]) -> io::Result<()> {
        let mut frames: Vec<Bytes> = frames.to_vec();
        while frames.iter().any(|f| !f.is_empty()) {
            let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
            let mut n =
                std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, &slices))
                    .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            for f in frames.iter_mut() {
                let k = n.min(f.len());
                bytes::Buf::advance(f, k);
                n -= k;
            }
        }
        io.flush().await
    }

    async fn frames_of(body: SendfileBody) -> Vec<Bytes> {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
        {
            out.push(frame.unwrap().into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn head_then_file_then_head_reach_the_socket_in_order() {
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut io, mut client, jobs) = pair().await;
        let body = SendfileBody::new(jobs.clone(), temp_file(&content), 1000, 50_000);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(50_000));
        let mut frames = vec![Bytes::from_static(b"HEAD1\r\n")];
        frames.extend(frames_of(body).await);
        assert!(frames[1..].iter().all(|f| is_marker(f)));
        frames.push(Bytes::from_static(b"TAIL"));
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 7 + 50_000 + 4];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        write_all_vectored(&mut io, &frames).await.unwrap();
        drop(frames);
        let got = reader.await.unwrap();
        assert_eq!(&got[..7], b"HEAD1\r\n");
        assert_eq!(&got[7..50_007], &content[1000..51_000]);
        assert_eq!(&got[50_007..], b"TAIL");
        assert_eq!(jobs.len(), 0);
    }

    /// A stretch longer than one `sendfile` call is sent corked (full segments only), and its
    /// completion uncorks: the tail is pushed at once, not held for the kernel's 200 ms cork
    /// timer, and the next response's head is not held either. A one-call stretch never
    /// corks.
    #[tokio::test]
    async fn a_long_stretch_is_corked_until_its_last_byte() {
        let len = MAX_SENDFILE * 2 + 12_345;
        let content: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8).collect();
        let (mut io, mut client, jobs) = pair().await;
        let cork_of = |io: &SendfileIo| socket2::SockRef::from(&io.tcp).tcp_cork().unwrap();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; len + 1000];
            client.read_exact(&mut got).await.unwrap();
            got
        });

        let frames = frames_of(SendfileBody::new(
            jobs.clone(),
            temp_file(&content),
            0,
            len as u64,
        ))
        .await;
        let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
        let first = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &slices))
            .await
            .unwrap();
        assert!(first < len, "one call sent the whole stretch");
        assert!(
            io.corked && cork_of(&io),
            "a multi-call stretch is sent corked"
        );
        let mut rest: Vec<Bytes> = frames.clone();
        bytes::Buf::advance(&mut rest[0], first);
        drop(slices);
        write_all_vectored(&mut io, &rest).await.unwrap();
        assert!(
            !io.corked && !cork_of(&io),
            "the completed stretch uncorked"
        );

        // A short stretch after it: sent in one call, never corked.
        let small = frames_of(SendfileBody::new(
            jobs.clone(),
            temp_file(&content),
            7,
            1000,
        ))
        .await;
        write_all_vectored(&mut io, &small).await.unwrap();
        assert!(!io.corked && !cork_of(&io));
        drop((frames, rest, small));
        let got = reader.await.unwrap();
        assert_eq!(&got[..len], &content[..]);
        assert_eq!(&got[len..], &content[7..1007]);
        assert_eq!(jobs.len(), 0);
    }

    #[tokio::test]
    async fn a_marker_without_a_job_is_an_error() {
        let (mut io, _client, _jobs) = pair().await;
        let stray = Bytes::from_static(&marker()[..10]);
        let err = write_all_vectored(&mut io, &[stray]).await.unwrap_err();
        assert!(err.to_string().contains("without a file"), "{err}");
    }

    #[tokio::test]
    async fn a_short_file_is_an_error_not_zeros() {
        let (mut io, mut client, jobs) = pair().await;
        // The response promises 5000 bytes; the file has 3000.
        let body = SendfileBody::new(jobs, temp_file(&[b'x'; 3000]), 0, 5000);
        let frames = frames_of(body).await;
        let err = write_all_vectored(&mut io, &frames).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop(io);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, vec![b'x'; 3000]);
    }

    #[tokio::test]
    async fn a_frame_dropped_unsent_ends_the_connection() {
        let (mut io, _client, jobs) = pair().await;
        let first = SendfileBody::new(jobs.clone(), temp_file(b"abandoned"), 0, 9);
        drop(frames_of(first).await);
        // Nothing may be written after it: not its copy, not the next response.
        let err = write_all_vectored(&mut io, &[Bytes::from_static(b"\0\0\0")])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("dropped unsent"), "{err}");
        let second = SendfileBody::new(jobs.clone(), temp_file(b"sent"), 0, 4);
        let frames = frames_of(second).await;
        assert!(write_all_vectored(&mut io, &frames).await.is_err());
    }

    #[tokio::test]
    async fn a_file_sendfile_refuses_is_copied_exactly() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let (mut io, mut client, jobs) = pair().await;
        // As after `EINVAL` from a filesystem without `sendfile`.
        io.copy = Some(vec![0u8; COPY_BUFFER].into_boxed_slice());
        let body = SendfileBody::new(jobs.clone(), temp_file(&content), 10, 200_000);
        let frames = frames_of(body).await;
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 200_000];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        write_all_vectored(&mut io, &frames).await.unwrap();
        drop(frames);
        assert_eq!(reader.await.unwrap(), &content[10..200_010]);
        assert_eq!(jobs.len(), 0);
    }

    #[test]
    fn many_connections_are_held_to_a_small_unsent_queue() {
        assert_eq!(notsent_lowat(1), None);
        assert_eq!(notsent_lowat(UNBOUNDED_CONNECTIONS), None);
        assert_eq!(
            notsent_lowat(UNBOUNDED_CONNECTIONS + 1),
            Some(NOTSENT_LOWAT)
        );
        assert_eq!(notsent_lowat(10_000), Some(NOTSENT_LOWAT));
    }

    #[test]
    fn sendfile_refusals_are_told_from_socket_errors() {
        assert!(refuses_sendfile(&io::Error::from_raw_os_error(
            nix::libc::EINVAL
        )));
        assert!(refuses_sendfile(&io::Error::from_raw_os_error(
            nix::libc::ENOSYS
        )));
        assert!(!refuses_sendfile(&io::Error::from_raw_os_error(
            nix::libc::EPIPE
        )));
        assert!(!refuses_sendfile(&io::ErrorKind::WouldBlock.into()));
    }

    #[tokio::test]
    async fn a_marker_longer_than_its_job_is_an_error() {
        let (mut io, _client, jobs) = pair().await;
        let body = SendfileBody::new(jobs, temp_file(b"0123456789"), 0, 4);
        let frames = frames_of(body).await;
        // A slice of the marker region longer than the job (not a frame the body made).
        let longer = Bytes::from_static(&marker()[..8]);
        let err = write_all_vectored(&mut io, &[longer]).await.unwrap_err();
        assert!(err.to_string().contains("longer"), "{err}");
        drop(frames);
    }

    #[test]
    fn only_the_marker_region_is_a_marker() {
        assert!(is_marker(&marker()[5..9]));
        assert!(!is_marker(&marker()[..0]));
        assert!(!is_marker(b"ordinary"));
        let big = vec![0u8; 64];
        assert!(!is_marker(&big));
    }
}
