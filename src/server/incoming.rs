//! Accepted connections, guarded: a cap on how many are open at once, and a deadline by which
//! a new one must have sent the HTTP/2 preface. Without them, sockets that connect and send
//! nothing stay open forever, and enough of them exhaust the process's file descriptors and
//! lock every client out. Idle connections that did finish the handshake are the business of
//! HTTP/2 keepalive pings (see [`crate::server::serve`]).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tracing::warn;

use super::coalesce::Coalescing;

/// Bytes of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, RFC 9113 §3.4). Any
/// HTTP/1.1 request (grpc-web) is longer, and so is a TLS ClientHello.
pub const PREFACE_BYTES: usize = 24;

/// How connections are guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once (`None`: no cap); the rest are closed when accepted.
    pub max_connections: Option<usize>,
    /// Time a new connection gets to send [`PREFACE_BYTES`] (and to finish TLS).
    pub handshake_timeout: Duration,
    /// HTTP/2 keepalive ping interval (`None`: no pings).
    pub keepalive_interval: Option<Duration>,
    /// Time to answer a keepalive ping before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// The connections accepted on `listener` (with `TCP_NODELAY`), each holding one of
/// `limits.max_connections` slots until it closes. A connection accepted while every slot is
/// taken is closed at once (its client sees the connection end and may try again), with a
/// warning at most every 10 s counting them: refusing costs no file descriptor for longer
/// than the accept, where waiting for a slot would leave clients hanging without an answer.
/// Each accepted connection counts as open in `metrics` until it closes.
pub fn guard(
    listener: TcpListener,
    limits: Limits,
    metrics: crate::metrics::Metrics,
) -> impl Stream<Item = io::Result<Guarded>> {
    let slots = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let mut refused = 0u64;
    let mut last_warning: Option<Instant> = None;
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .filter_map(move |accepted| {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => return Some(Err(e)),
            };
            let permit = match &slots {
                None => None,
                Some(slots) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        refused += 1;
                        if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                            warn!(
                                refused,
                                max_connections = limits.max_connections,
                                "connection cap reached: closing new connections \
                                 (LLMJOBS_MAX_CONNECTIONS)"
                            );
                            last_warning = Some(Instant::now());
                            refused = 0;
                        }
                        return None;
                    }
                },
            };
            Some(Ok(Guarded {
                inner: Coalescing::new(stream),
                deadline: Some(Box::pin(tokio::time::sleep(limits.handshake_timeout))),
                received: 0,
                _slot: permit,
                _open: metrics.connected(),
            }))
        })
}

/// An accepted connection: until it has sent [`PREFACE_BYTES`], a read that would wait past
/// the handshake deadline fails with `TimedOut` instead, which ends the connection. Its
/// writes are gathered until each flush ([`Coalescing`]).
#[derive(Debug)]
pub struct Guarded {
    inner: Coalescing<TcpStream>,
    deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
    _slot: Option<OwnedSemaphorePermit>,
    _open: crate::metrics::Connected,
}

impl Drop for Guarded {
    /// Writes what is gathered and unwritten, without waiting: a TLS handshake refused (no
    /// common protocol, an old TLS version, plaintext on the TLS port) queues its alert and
    /// then drops the connection without a flush, and the client should still hear why.
    fn drop(&mut self) {
        let unwritten = self.inner.unwritten();
        if !unwritten.is_empty() {
            let _ = self.inner.get_ref().try_write(unwritten);
        }
    }
}

impl Connected for Guarded {
    // The plain TCP peer info, so `Request::remote_addr` keeps working (audit, rate limits).
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.get_ref().connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = this.deadline.as_mut() {
            match &polled {
                Poll::Ready(Ok(())) => {
                    this.received += buf.filled().len() - before;
                    if this.received >= PREFACE_BYTES {
                        this.deadline = None;
                    }
                }
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not complete the handshake in time",
                    )));
                }
                _ => {}
            }
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl From<&crate::config::Server> for Limits {
    /// The limits the gRPC listener's settings ask for (0 turns a limit or keepalive off).
    fn from(cfg: &crate::config::Server) -> Limits {
        Limits {
            max_connections: (cfg.max_connections > 0).then_some(cfg.max_connections),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms.max(1)),
            keepalive_interval: (cfg.http2_keepalive_secs > 0)
                .then(|| Duration::from_secs(cfg.http2_keepalive_secs)),
            keepalive_timeout: Duration::from_secs(cfg.http2_keepalive_timeout_secs.max(1)),
        }
    }
}
