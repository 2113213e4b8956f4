//! The pub/sub side of the Redis queue: one connection per worker process for wake-ups and
//! cancels, resubscribed after Redis comes back.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::warn;

use crate::{
    job::JobId,
    queue::{Error, Signal},
    redis::Redis,
};

/// Wake-ups and cancels for this worker process, from one pub/sub connection that
/// resubscribes (with a wake-up, since signals may have been missed) after Redis comes
/// back.
///
/// Errors: Redis's, when the first subscription fails (later outages are retried).
pub(super) async fn follow(redis: &Redis) -> Result<mpsc::Receiver<Signal>, Error> {
    let (tx, rx) = mpsc::channel(1024);
    let client = redis.client.clone();
    let wake = redis.keys.channel("wake");
    let cancel = redis.keys.channel("cancel");
    // Fail fast when Redis is down at start; later outages are retried in the task.
    let first = subscribe(&client, &wake, &cancel).await?;
    tokio::spawn(async move {
        let mut stream = Some(first);
        loop {
            let mut messages = match stream.take() {
                Some(s) => s,
                None => match subscribe(&client, &wake, &cancel).await {
                    Ok(s) => {
                        if tx.send(Signal::Wake).await.is_err() {
                            return;
                        }
                        s
                    }
                    Err(e) => {
                        warn!(error = %e, "queue signals: Redis pub/sub unavailable, retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = tx.closed() => return,
                        }
                    }
                },
            };
            loop {
                let msg = tokio::select! {
                    msg = messages.next() => msg,
                    _ = tx.closed() => return,
                };
                let Some(msg) = msg else { break };
                let signal = if msg.get_channel_name() == cancel {
                    match msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|s| JobId::parse_str(&s).ok())
                    {
                        Some(id) => Signal::Cancel(id),
                        None => continue,
                    }
                } else {
                    Signal::Wake
                };
                if tx.send(signal).await.is_err() {
                    return;
                }
            }
            warn!("queue signals: Redis pub/sub connection lost, reconnecting");
        }
    });
    Ok(rx)
}

async fn subscribe(
    client: &redis::Client,
    wake: &str,
    cancel: &str,
) -> Result<redis::aio::PubSubStream, Error> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    sink.subscribe(&[wake, cancel]).await?;
    Ok(stream)
}
