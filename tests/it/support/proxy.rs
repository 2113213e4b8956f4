//! A TCP proxy whose link can be cut (every connection through it is dropped and new ones are
//! refused until it is restored) or held (bytes towards the server wait, as if it hung, and
//! go on when released). Simulates dependency outages without touching the shared server
//! behind it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// `host:port` to connect to instead of the target.
    pub addr: String,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    held: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Proxies `target` (`host:port`) on a free loopback port.
    pub async fn start(target: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (held, _) = watch::channel(false);
        let (target, flag, cuts, holds) =
            (target.to_owned(), up.clone(), cut.clone(), held.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let target = target.clone();
                let mut cut = cuts.subscribe();
                let mut held = holds.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_client.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            // Held: the bytes wait here, then go on in order.
                            let _ = held.wait_for(|h| !h).await;
                            to_server.write_all(&buf[..n]).await?;
                        }
                    };
                    let down = tokio::io::copy(&mut from_server, &mut to_client);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            up,
            cut,
            held,
            task,
        })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Holds every byte sent towards the server (connections stay open) until
    /// [`Proxy::release`]: the server looks hung, and what was sent meanwhile runs later.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Lets held bytes go on, in order.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
