//! Socket writes gathered across a connection's streams: a connection's bytes are kept until
//! it flushes, and each flush first lets the runtime run the other tasks that are ready, so
//! that the frames its other streams queue meanwhile go out in the same system call.
//!
//! Why: an event for the hundred watchers of a job on one HTTP/2 connection is a hundred
//! small DATA frames, each queued by its own stream's task. The connection's task, woken by
//! the first of them, runs right after it (tokio's LIFO slot) and writes what is there, a
//! few frames per `writev`, each of which on loopback also pays the receiver's side. h2 also
//! writes a DATA frame of 256 bytes or more on its own (`CHAIN_THRESHOLD` in h2's
//! `framed_write.rs`), so larger events went out one per call whatever the timing.
//!
//! The bytes are copied once more (into [`Coalescing`]'s buffer); HTTP/2, HTTP/1.1 (hyper)
//! and TLS (rustls) all flush after writing, as they must for any buffered transport, so no
//! byte waits longer than one turn of the runtime.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before a write goes to the socket without waiting for the flush (64 KiB:
/// four of h2's 16 KiB write buffers).
pub const MAX_BUFFERED: usize = 64 * 1024;

/// Capacity a connection keeps between flushes (4 KiB); a burst's larger buffer is given
/// back, so that an idle connection holds little (10,000 of them: 40 MiB at most).
const RETAINED: usize = 4 * 1024;

/// An I/O object whose writes are gathered until a flush, which waits for one turn of the
/// runtime before it writes (see the module's documentation). Reads pass straight through.
pub struct Coalescing<T> {
    io: T,
    out: Vec<u8>,
    /// This flush has let the runtime's other ready tasks run; its next attempt writes.
    waited: bool,
}

impl<T> Coalescing<T> {
    /// Wraps `io`.
    pub fn new(io: T) -> Coalescing<T> {
        Coalescing {
            io,
            out: Vec::new(),
            waited: false,
        }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The bytes gathered and not yet written: what a connection dropped without a flush or
    /// a shutdown would lose (see [`super::incoming::Guarded`]'s `Drop`).
    pub fn unwritten(&self) -> &[u8] {
        &self.out
    }
}

impl<T> fmt::Debug for Coalescing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescing")
            .field("buffered", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes the gathered bytes to `io` until none are left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        self.out.shrink_to(RETAINED);
        Poll::Ready(Ok(()))
    }

    /// Room for more bytes: drains first when [`MAX_BUFFERED`] are already gathered.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.len() >= MAX_BUFFERED {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let n = buf.len().min(MAX_BUFFERED - this.out.len());
        this.out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(MAX_BUFFERED - this.out.len());
            this.out.extend_from_slice(&buf[..n]);
            written += n;
            if n < buf.len() {
                break;
            }
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.out.is_empty() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if !this.waited {
            // A wake from inside the task's own poll makes tokio queue it behind the tasks
            // already ready, not in the LIFO slot: a yield.
            this.waited = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.waited = false;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
