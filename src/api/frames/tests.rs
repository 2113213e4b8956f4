use std::time::Duration;

use http_body_util::BodyExt;

use super::*;
use crate::streaming::{EventStream, outbox};

fn framed() -> (outbox::Outbox<Bytes, impl outbox::Source<Bytes>>, Framed) {
    let (tx, events): (_, EventStream) = outbox::with_source(1024);
    (
        tx,
        Framed {
            events,
            ended: false,
            end_seen: None,
        },
    )
}

/// The `grpc-status` of the trailers that `body` sends next.
async fn next_status(body: &mut Framed) -> Vec<u8> {
    let frame = body.frame().await.expect("a frame").expect("no error");
    let trailers = frame.into_trailers().expect("trailers");
    trailers
        .get("grpc-status")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default()
}

#[tokio::test]
async fn events_ready_together_go_in_one_frame_then_the_trailers_say_ok() {
    let (tx, mut body) = framed();
    for part in ["ab", "cd", "ef"] {
        tx.send(Bytes::from(part), 2, Duration::from_secs(1))
            .await
            .expect("queued");
    }
    drop(tx);
    let frame = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(frame.into_data().expect("data"), Bytes::from("abcdef"));
    assert_eq!(next_status(&mut body).await, b"0");
    assert!(http_body::Body::is_end_stream(&body));
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn a_single_event_goes_out_as_it_is_and_an_ending_status_becomes_the_trailers() {
    let (tx, mut body) = framed();
    let event = Bytes::from_static(b"\0\0\0\0\x02hi");
    tx.send(event.clone(), event.len(), Duration::from_secs(1))
        .await
        .expect("queued");
    let frame = body.frame().await.expect("a frame").expect("no error");
    let data = frame.into_data().expect("data");
    assert_eq!(
        data.as_ptr(),
        event.as_ptr(),
        "the shared bytes, not a copy"
    );
    tx.end(Status::resource_exhausted("the client stopped reading"));
    assert_eq!(next_status(&mut body).await, b"8");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn a_status_that_ends_a_frame_of_events_is_kept_for_the_trailers() {
    let (tx, mut body) = framed();
    for part in ["ab", "cd"] {
        tx.send(Bytes::from(part), 2, Duration::from_secs(1))
            .await
            .expect("queued");
    }
    // The shutdown's status, right behind queued events (seen while they are gathered).
    tx.end(Status::unavailable("the server is shutting down"));
    let frame = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(frame.into_data().expect("data"), Bytes::from("abcd"));
    assert_eq!(next_status(&mut body).await, b"14", "UNAVAILABLE, not OK");
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn a_long_catch_up_goes_out_in_frames_that_stop_gathering_at_the_batch_size() {
    let (tx, mut body) = framed();
    let parts: Vec<Bytes> = (0..5u8)
        .map(|i| Bytes::from(vec![b'a' + i; 6 * 1024]))
        .collect();
    for part in &parts {
        // Counted as one byte each: the queue's budget is not what this test is about.
        tx.send(part.clone(), 1, Duration::from_secs(1))
            .await
            .expect("queued");
    }
    drop(tx);
    let first = body.frame().await.expect("a frame").expect("no error");
    // 6 and 12 KiB are below the batch size; the third event takes the frame past it.
    assert_eq!(first.into_data().expect("data"), parts[..3].concat());
    let second = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(second.into_data().expect("data"), parts[3..].concat());
    assert_eq!(next_status(&mut body).await, b"0");
}
