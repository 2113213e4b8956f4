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
