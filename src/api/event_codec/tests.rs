//! The codec gives prost's bytes, and archives of its events read back as they were.

use chrono::{DateTime, Utc};
use prost::Message;

use super::*;
use crate::{
    events::{
        Error,
        archive::{FORMAT_LZ4, of_events},
        event::{Completed, Queued},
    },
    job::{JobId, Priority},
};

fn at(seconds: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, nanos).unwrap_or_default()
}

fn delta(seq: u64, text: &str, n: u64) -> Event {
    Event {
        sequence: seq,
        time: at(1_790_000_000, u32::try_from(n * 1_000_017).unwrap_or(0)),
        job_id: JobId::nil(),
        kind: EventKind::TokenDelta(TokenDelta {
            text: text.into(),
            output_tokens: n,
            ..Default::default()
        }),
    }
}

fn samples() -> Vec<Event> {
    let id = JobId::now_v7();
    let mut events = vec![
        delta(7, "héllo", 3),
        delta(0, "", 0),
        Event {
            job_id: id,
            time: at(0, 0),
            ..delta(1, "x", 1)
        },
        Event {
            kind: EventKind::TokenDelta(TokenDelta {
                text: String::new(),
                output_tokens: 9,
                reasoning_text: "hmm".repeat(100),
            }),
            ..delta(300, "", 0)
        },
        Event {
            kind: EventKind::Queued(Queued {
                queue: "openai-chat".into(),
                priority: Priority::High,
                job_type: "chat".into(),
                tenant: "t".into(),
            }),
            ..delta(1, "", 0)
        },
    ];
    for e in &mut events {
        if e.job_id.is_nil() {
            e.job_id = id;
        }
    }
    events
}

#[test]
fn events_encode_as_prost_encodes_their_wire_events() {
    let codec = ProtoCodec;
    for e in samples() {
        let whole = event(&e, true);
        let framed = codec.encode(&e);
        let body = whole.encode_to_vec();
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(
            framed[1..GRPC_PREFIX],
            u32::try_from(body.len()).expect("small").to_be_bytes(),
            "the gRPC length prefix"
        );
        assert_eq!(&framed[GRPC_PREFIX..], body, "{e:?}");
        let stored = event(&e, false);
        let mut out = Vec::new();
        codec.encode_stored(&e, false, &mut out);
        assert_eq!(out, stored.encode_to_vec(), "{e:?}");
        let mut out = vec![1, 2];
        codec.encode_stored(&e, true, &mut out);
        assert_eq!(out[2..], stored.encode_length_delimited_to_vec(), "{e:?}");
        assert_eq!(
            codec.decode(&codec.encode(&e)[GRPC_PREFIX..]).ok(),
            Some(e.clone())
        );
        let mut rest = &out[2..];
        let back = codec.decode_delimited(&mut rest).ok();
        assert!(rest.is_empty());
        assert_eq!(
            back,
            Some(Event {
                sequence: 0,
                job_id: JobId::nil(),
                ..e
            })
        );
    }
}

#[test]
fn events_come_back_with_their_sequences_times_and_text() -> Result<(), Error> {
    let codec = ProtoCodec;
    let id = JobId::now_v7();
    let mut events: Vec<Event> = (0..200)
        .map(|i| delta(5 + i, &format!(" word{}", i % 7), i + 1))
        .collect();
    events.push(Event {
        kind: EventKind::Completed(Completed::default()),
        ..delta(205, "", 0)
    });
    let archive = of_events(&codec, &events).expect("consecutive sequences");
    assert_eq!(archive.first_sequence, 5);
    assert_eq!(archive.last_sequence(), Some(205));
    let back = archive.events(&codec, id)?;
    let expected: Vec<Event> = events
        .into_iter()
        .map(|e| Event { job_id: id, ..e })
        .collect();
    assert_eq!(back, expected);
    // Compact: well under the encoded events' own size.
    let plain: usize = expected.iter().map(|e| codec.encode(e).len() + 1).sum();
    assert!(
        archive.data.len() * 2 < plain,
        "{} of {plain}",
        archive.data.len()
    );
    Ok(())
}

#[test]
fn a_gap_or_damage_is_refused() {
    let codec = ProtoCodec;
    let id = JobId::now_v7();
    assert!(of_events(&codec, &[delta(1, "a", 1), delta(3, "b", 2)]).is_none());
    assert!(of_events(&codec, &[]).is_none());
    let mut archive = of_events(&codec, &[delta(1, "a", 1), delta(2, "b", 2)]).expect("an archive");
    archive.count = 3;
    assert!(matches!(archive.events(&codec, id), Err(Error::Corrupt(_))));
    archive.count = 2;
    archive.data[0] = 9;
    assert!(matches!(archive.events(&codec, id), Err(Error::Corrupt(_))));
    archive.data = vec![FORMAT_LZ4, 0xff, 0xff, 0xff, 0x7f];
    assert!(matches!(archive.events(&codec, id), Err(Error::Corrupt(_))));
}
