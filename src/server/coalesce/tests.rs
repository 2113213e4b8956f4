use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Coalescing, MAX_BUFFERED};

/// A socket stand-in: takes at most `per_call` bytes per write and answers every other write
/// `Pending` (waking at once) when `stalls` is set; counts the writes that took bytes.
#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    writes: usize,
    per_call: Option<usize>,
    stalls: bool,
    stalled: bool,
    shut: bool,
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        assert!(!this.shut, "write after shutdown");
        if this.stalls && !this.stalled {
            this.stalled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.stalled = false;
        let n = buf.len().min(this.per_call.unwrap_or(usize::MAX));
        this.data.extend_from_slice(&buf[..n]);
        this.writes += 1;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().shut = true;
        Poll::Ready(Ok(()))
    }
}

struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Bytes `0, 1, 2, …` (mod 251), so that a lost, repeated or reordered byte shows.
fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn writes_wait_for_the_flush_which_yields_once_then_writes_them_in_one_call() {
    let mut io = Coalescing::new(Sink::default());
    let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let frames = [pattern(0, 80), pattern(80, 300), pattern(380, 20)];
    for frame in &frames {
        let polled = Pin::new(&mut io).poll_write(&mut cx, frame);
        assert!(matches!(polled, Poll::Ready(Ok(n)) if n == frame.len()));
    }
    assert_eq!(
        io.get_ref().writes,
        0,
        "nothing reaches the socket before the flush"
    );

    assert!(Pin::new(&mut io).poll_flush(&mut cx).is_pending());
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "the yield wakes its own task"
    );
    assert_eq!(io.get_ref().writes, 0);

    // Written while the task waited for its turn: goes out with the rest.
    let late = pattern(400, 50);
    assert!(Pin::new(&mut io).poll_write(&mut cx, &late).is_ready());
    assert!(matches!(
        Pin::new(&mut io).poll_flush(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(io.get_ref().writes, 1, "one system call for every frame");
    assert_eq!(io.get_ref().data, pattern(0, 450));

    // Nothing gathered: a flush passes straight through, with no yield.
    assert!(matches!(
        Pin::new(&mut io).poll_flush(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn short_and_stalled_socket_writes_keep_every_byte_in_order() -> io::Result<()> {
    let mut io = Coalescing::new(Sink {
        per_call: Some(1000),
        stalls: true,
        ..Sink::default()
    });
    let mut sent = 0;
    for len in [10, 5000, 1, 2 * MAX_BUFFERED + 7, 333] {
        io.write_all(&pattern(sent, len)).await?;
        sent += len;
        if len == 5000 {
            io.flush().await?;
        }
    }
    io.flush().await?;
    assert_eq!(io.get_ref().data, pattern(0, sent));
    Ok(())
}

#[tokio::test]
async fn at_most_max_buffered_bytes_wait_for_a_flush() -> io::Result<()> {
    let mut io = Coalescing::new(Sink::default());
    io.write_all(&pattern(0, 3 * MAX_BUFFERED)).await?;
    // Without any flush, all but the last 64 KiB have gone to the socket.
    assert_eq!(io.get_ref().data, pattern(0, 2 * MAX_BUFFERED));
    io.flush().await?;
    assert_eq!(io.get_ref().data, pattern(0, 3 * MAX_BUFFERED));
    Ok(())
}

#[tokio::test]
async fn vectored_writes_are_gathered_in_order_up_to_the_bound() -> io::Result<()> {
    let mut io = Coalescing::new(Sink::default());
    let (a, b) = (
        pattern(0, MAX_BUFFERED - 10),
        pattern(MAX_BUFFERED - 10, 100),
    );
    let slices = [io::IoSlice::new(&a), io::IoSlice::new(&b)];
    let n = io.write_vectored(&slices).await?;
    assert_eq!(n, MAX_BUFFERED, "takes what fits, in order");
    io.write_all(&b[10..]).await?;
    io.flush().await?;
    assert_eq!(io.get_ref().data, pattern(0, MAX_BUFFERED + 90));
    Ok(())
}

#[tokio::test]
async fn shutdown_writes_what_is_gathered_first() -> io::Result<()> {
    let mut io = Coalescing::new(Sink::default());
    io.write_all(b"goaway").await?;
    io.shutdown().await?;
    assert_eq!(io.get_ref().data, b"goaway");
    assert!(io.get_ref().shut);
    Ok(())
}
