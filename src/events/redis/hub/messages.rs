//! The messages of a job's channel: one append's events each, delivered to the job's live
//! watchers as they come.

use tracing::warn;

use super::HubInner;
use crate::{
    events::{Codec, Live, Published},
    job::JobId,
};

/// Delivers one published message to the job's watchers: `<first sequence>/<count>:`
/// followed by the length-delimited events of one append, which become consecutive
/// [`Live::Event`]s. A message that does not decode as announced delivers what did and then a
/// [`Live::Resync`] (the log has it all).
pub(super) fn dispatch(hub: &HubInner, prefix: &str, msg: &redis::Msg) {
    let Some(job_id) = msg
        .get_channel_name()
        .strip_prefix(prefix)
        .and_then(|id| JobId::parse_str(id).ok())
    else {
        return;
    };
    let lives = decode_message(&*hub.codec, job_id, msg.get_payload_bytes());
    let jobs = hub
        .jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(w) = jobs.get(&job_id) {
        for live in lives {
            let _ = w.tx.send(live);
        }
    }
}

/// The live items of one message on a job's channel (see [`dispatch`]).
fn decode_message(codec: &dyn Codec, job_id: JobId, payload: &[u8]) -> Vec<Live> {
    let header = payload.iter().position(|b| *b == b':').and_then(|colon| {
        let (first, count) = std::str::from_utf8(&payload[..colon])
            .ok()?
            .split_once('/')?;
        Some((
            first.parse::<u64>().ok()?,
            count.parse::<usize>().ok()?,
            &payload[colon + 1..],
        ))
    });
    let Some((first, count, mut rest)) = header else {
        warn!(job_id = %job_id, "event hub: malformed message");
        return vec![Live::Resync];
    };
    let mut lives = Vec::with_capacity(count);
    for sequence in (first..).take(count) {
        match codec.decode_delimited(&mut rest) {
            Ok(mut event) => {
                event.sequence = sequence;
                event.job_id = job_id;
                lives.push(Live::Event(Published::new(codec, event)));
            }
            Err(e) => {
                warn!(job_id = %job_id, sequence, error = %e, "event hub: undecodable event");
                lives.push(Live::Resync);
                return lives;
            }
        }
    }
    if !rest.is_empty() {
        warn!(job_id = %job_id, "event hub: more in a message than it announced");
        lives.push(Live::Resync);
    }
    lives
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventKind, event, event::TokenDelta, testing::TextCodec};

    fn delta(text: &str) -> Event {
        event(EventKind::TokenDelta(TokenDelta {
            text: text.into(),
            ..Default::default()
        }))
    }

    /// The message `append.lua` publishes for `events` starting at `first`.
    fn message(first: u64, events: &[Event]) -> Vec<u8> {
        let mut out = format!("{first}/{}:", events.len()).into_bytes();
        for e in events {
            TextCodec.encode_stored(e, true, &mut out);
        }
        out
    }

    #[test]
    fn one_message_becomes_consecutive_events() {
        let id = JobId::now_v7();
        // A long text needs a two-byte length.
        let events = [delta("a"), delta(&"b".repeat(300)), delta("")];
        let lives = decode_message(&TextCodec, id, &message(41, &events));
        let got: Vec<(u64, String)> = lives
            .iter()
            .map(|l| match l {
                Live::Event(e) => match &e.event().kind {
                    EventKind::TokenDelta(d) => (e.event().sequence, d.text.clone()),
                    other => panic!("unexpected {other:?}"),
                },
                Live::Resync => panic!("unexpected resync"),
            })
            .collect();
        assert_eq!(
            got,
            [(41, "a".into()), (42, "b".repeat(300)), (43, String::new())]
        );
        assert!(
            lives
                .iter()
                .all(|l| matches!(l, Live::Event(e) if e.event().job_id == id))
        );
    }

    #[test]
    fn a_damaged_message_delivers_what_decodes_then_a_resync() {
        let id = JobId::now_v7();
        let mut bytes = message(7, &[delta("ok"), delta("cut short")]);
        bytes.truncate(bytes.len() - 3);
        let lives = decode_message(&TextCodec, id, &bytes);
        assert_eq!(lives.len(), 2);
        assert!(matches!(&lives[0], Live::Event(e) if e.event().sequence == 7));
        assert!(matches!(lives[1], Live::Resync));
        // The second is a message of the previous format (one event, no count).
        for malformed in [&b"no sequence"[..], b"7:\x02\x08\x01", b"7/x:"] {
            assert!(
                matches!(
                    decode_message(&TextCodec, id, malformed).as_slice(),
                    [Live::Resync]
                ),
                "{malformed:?}"
            );
        }
        let mut extra = message(7, &[delta("one")]);
        TextCodec.encode_stored(&delta("two"), true, &mut extra);
        let lives = decode_message(&TextCodec, id, &extra);
        assert!(matches!(lives.as_slice(), [Live::Event(_), Live::Resync]));
    }
}
