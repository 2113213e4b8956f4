use super::*;
use crate::job::{GenerationParams, Priority, StreamingMode};

fn job() -> Job {
    Job {
        id: uuid::Uuid::now_v7(),
        status: JobStatus::Running,
        job_type: "general".into(),
        priority: Priority::Normal,
        queue: "openai-general".into(),
        messages: vec![],
        params: GenerationParams::default(),
        streaming_mode: StreamingMode::Realtime,
        metadata: Default::default(),
        attempts: 1,
        max_attempts: 3,
        timeout: None,
        tags: vec![],
        batch_id: None,
        error: None,
        last_sequence: 0,
        created_at: Utc::now(),
        enqueued_at: Utc::now(),
        started_at: Some(Utc::now()),
        finished_at: None,
        tenant: "t".into(),
        trace_context: None,
    }
}

fn stage_of(kind: &Kind) -> (Stage, Option<(Stage, StageStatus)>) {
    match kind {
        Kind::StageChanged(c) => (
            c.current.as_ref().expect("a current stage").stage(),
            c.previous.as_ref().map(|p| (p.stage(), p.status())),
        ),
        other => panic!("not a stage change: {other:?}"),
    }
}

#[test]
fn a_normal_run_walks_every_stage_in_order() {
    let estimate = progress::estimate(&[], Some(4));
    let mut t = Tracker::new(&job(), estimate, Duration::ZERO);
    let mut seen = vec![stage_of(&t.advance(Stage::Dispatched))];
    seen.push(stage_of(&t.advance(Stage::Connecting)));
    seen.push(stage_of(&t.advance(Stage::AwaitingFirstToken)));
    let [generating, _] = t.first_token(Duration::from_millis(5));
    seen.push(stage_of(&generating));
    let updates = t.tokens(3, 10.0);
    assert!(matches!(updates[0], Kind::Progress(ref p) if p.fraction == Some(0.75)));
    assert_eq!(updates.len(), 4, "progress + the 25/50/75 % milestones");
    seen.push(stage_of(&t.advance(Stage::Finalizing)));
    seen.push(stage_of(&t.end(Stage::Completed)));
    use {Stage as S, StageStatus as St};
    assert_eq!(
        seen,
        [
            (S::Dispatched, Some((S::Queued, St::Completed))),
            (S::Connecting, Some((S::Dispatched, St::Completed))),
            (S::AwaitingFirstToken, Some((S::Connecting, St::Completed))),
            (S::Generating, Some((S::AwaitingFirstToken, St::Completed))),
            (S::Finalizing, Some((S::Generating, St::Completed))),
            (S::Completed, Some((S::Finalizing, St::Completed))),
        ]
    );
    let snap = t.snapshot();
    assert_eq!(snap.stage(), Stage::Completed);
    assert_eq!(snap.fraction, Some(1.0));
    assert_eq!(snap.stages.len(), 7);
    // 6 stage changes + first token + 3 progress milestones.
    assert_eq!(t.take_history().len(), 10);
    assert!(t.take_history().is_empty(), "history is taken once");
}

#[test]
fn updates_are_rate_limited_and_need_new_tokens() {
    let mut t = Tracker::new(
        &job(),
        progress::estimate(&[], None),
        Duration::from_secs(60),
    );
    assert_eq!(t.tokens(1, 1.0).len(), 1, "the first update goes out");
    assert!(
        t.tokens(2, 1.0).is_empty(),
        "the next waits for the interval"
    );
    let mut t = Tracker::new(&job(), progress::estimate(&[], None), Duration::ZERO);
    assert_eq!(t.tokens(1, 1.0).len(), 1);
    assert!(t.tokens(1, 1.0).is_empty(), "no update without new tokens");
}

#[test]
fn a_failure_skips_the_rest_and_a_retry_queues_the_next_attempt() {
    let mut t = Tracker::new(&job(), progress::estimate(&[], None), Duration::ZERO);
    t.advance(Stage::Dispatched);
    t.advance(Stage::Connecting);
    let [milestone, change] = t.retry("upstream_server_error", Utc::now());
    assert!(matches!(milestone, Kind::Milestone(ref m) if m.kind == MilestoneKind::Retry));
    let Kind::StageChanged(c) = change else {
        panic!("not a stage change")
    };
    assert_eq!(c.attempt, 2);
    assert_eq!(
        c.previous.expect("a previous stage").status(),
        StageStatus::Failed
    );
    assert_eq!(c.skipped.len(), 3, "awaiting, generating, finalizing");
    assert_eq!(t.snapshot().stage(), Stage::Queued);
    assert_eq!(t.snapshot().attempt, 2);
}
