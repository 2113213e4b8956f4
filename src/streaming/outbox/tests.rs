use futures::StreamExt;

use super::*;

#[tokio::test]
async fn items_then_the_final_status_arrive_in_order() {
    let (tx, mut rx) = outbox::<u32>(1024);
    tx.send(1, 10, Duration::from_secs(1)).await.expect("sent");
    tx.send(2, 10, Duration::from_secs(1)).await.expect("sent");
    tx.end(Status::resource_exhausted("stalled"));
    assert_eq!(rx.next().await.expect("an item").expect("not an error"), 1);
    assert_eq!(rx.next().await.expect("an item").expect("not an error"), 2);
    let status = rx.next().await.expect("an item").expect_err("an error");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(rx.next().await.is_none());
}

#[tokio::test]
async fn a_queue_without_a_status_ends_quietly() {
    let (tx, mut rx) = outbox::<u32>(1024);
    tx.send(7, 1, Duration::from_secs(1)).await.expect("sent");
    drop(tx);
    assert_eq!(rx.next().await.expect("an item").expect("not an error"), 7);
    assert!(rx.next().await.is_none());
}

#[tokio::test]
async fn a_full_queue_refuses_after_the_patience_and_frees_room_when_read() {
    let short = Duration::from_millis(100);
    let budget = 100 + std::mem::size_of::<u32>() * 2;
    let (tx, mut rx) = outbox::<u32>(budget);
    tx.send(1, 50, Duration::from_secs(1)).await.expect("sent");
    tx.send(2, 50, Duration::from_secs(1)).await.expect("sent");
    assert_eq!(tx.send(3, 50, short).await, Err(Refused::Stalled));
    // Taking one item makes room for the next.
    assert_eq!(rx.next().await.expect("an item").expect("not an error"), 1);
    tx.send(3, 50, short).await.expect("sent");
    // An item bigger than the budget waits for an empty queue, then goes.
    let big = tokio::spawn(async move {
        let sent = tx.send(4, 10 * budget, Duration::from_secs(60)).await;
        (tx, sent)
    });
    tokio::time::sleep(short).await;
    assert!(!big.is_finished(), "the big item waits for an empty queue");
    assert_eq!(rx.next().await.expect("an item").expect("not an error"), 2);
    assert_eq!(rx.next().await.expect("an item").expect("not an error"), 3);
    let (_tx, sent) = big.await.expect("joined");
    assert_eq!(sent, Ok(()));
    assert_eq!(rx.next().await.expect("an item").expect("not an error"), 4);
}

#[tokio::test]
async fn an_abandoned_queue_frees_its_items_and_ends_with_the_status() {
    let (tx, mut rx) = outbox::<std::sync::Arc<u32>>(1024);
    let item = std::sync::Arc::new(5);
    tx.send(item.clone(), 10, Duration::from_secs(1))
        .await
        .expect("sent");
    assert_eq!(std::sync::Arc::strong_count(&item), 2);
    tx.abandon(Status::resource_exhausted("stalled"));
    assert_eq!(
        std::sync::Arc::strong_count(&item),
        1,
        "freed before the client reads"
    );
    let status = rx.next().await.expect("an item").expect_err("the status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(rx.next().await.is_none());
}

#[tokio::test]
async fn a_dropped_stream_refuses_at_once() {
    let (tx, rx) = outbox::<u32>(8);
    drop(rx);
    assert_eq!(
        tx.send(1, 1, Duration::from_secs(60)).await,
        Err(Refused::Gone)
    );
}

/// A source over a channel: yields what it receives until it receives 0, which hands it back.
struct Channel(tokio::sync::mpsc::UnboundedReceiver<u32>);

impl Source<u32> for Channel {
    fn poll_pull(&mut self, cx: &mut Context<'_>) -> Poll<Option<u32>> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(0) | None) => Poll::Ready(None),
            other => other,
        }
    }
}

#[tokio::test]
async fn queued_items_go_before_a_lent_sources_and_the_source_hands_itself_back() {
    let (tx, mut rx) = with_source::<u32, Channel>(1024);
    let (feed, source) = tokio::sync::mpsc::unbounded_channel();
    feed.send(10).expect("fed");
    tx.send(1, 4, Duration::from_secs(1)).await.expect("sent");
    tx.send(2, 4, Duration::from_secs(1)).await.expect("sent");
    tx.lend(Channel(source));
    let next = |rx: &mut Drain<u32, Channel>| {
        futures::FutureExt::now_or_never(rx.next()).map(|i| i.expect("open").expect("no error"))
    };
    assert_eq!(next(&mut rx), Some(1), "what was queued first");
    assert_eq!(next(&mut rx), Some(2));
    assert_eq!(next(&mut rx), Some(10), "then the source");
    assert_eq!(tx.pulled(), 1);
    assert_eq!(next(&mut rx), None, "nothing yet");
    // The receiver was waiting on the source: a new item wakes it.
    feed.send(11).expect("fed");
    assert_eq!(rx.next().await.expect("open").expect("no error"), 11);
    // The source asks for its sender: the receiver stops pulling and says so.
    let back = tx.handed_back();
    let notified = back.notified();
    feed.send(0).expect("fed");
    feed.send(12).expect("fed");
    assert_eq!(next(&mut rx), None);
    tokio::time::timeout(Duration::from_secs(1), notified)
        .await
        .expect("handed back");
    let Channel(mut source) = tx.reclaim().expect("the source comes back");
    assert_eq!(source.recv().await, Some(12), "left unpulled");
    assert_eq!(tx.pulled(), 2);
    // Lent again, it is pulled again; once the sender ends, the stream ends after it.
    feed.send(13).expect("fed");
    tx.lend(Channel(source));
    assert_eq!(rx.next().await.expect("open").expect("no error"), 13);
    drop(tx);
    assert!(rx.next().await.is_none());
}

#[tokio::test]
async fn a_reclaimed_source_is_no_longer_pulled_and_an_ended_stream_drops_it() {
    let (tx, mut rx) = with_source::<u32, Channel>(1024);
    let (feed, source) = tokio::sync::mpsc::unbounded_channel();
    tx.lend(Channel(source));
    let Channel(source) = tx.reclaim().expect("lent");
    feed.send(5).expect("fed");
    assert!(
        futures::FutureExt::now_or_never(rx.next()).is_none(),
        "nothing is pulled from a reclaimed source"
    );
    tx.lend(Channel(source));
    tx.abandon(Status::resource_exhausted("stalled"));
    assert!(feed.is_closed(), "ending the stream drops the lent source");
    let status = rx.next().await.expect("an item").expect_err("the status");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}
