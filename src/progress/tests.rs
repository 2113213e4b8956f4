use super::*;

fn state(stage: Stage, status: StageStatus) -> StageState {
    StageState {
        stage,
        status,
        start_time: None,
        duration_ms: None,
    }
}

#[test]
fn estimate_prefers_recent_jobs_then_max_tokens() {
    let e = estimate(&[10, 30, 20, 40, 50], Some(1000));
    assert_eq!(
        (e.tokens, e.basis, e.sample_size),
        (Some(30), EstimateBasis::RecentJobs, 5)
    );
    let capped = estimate(&[100; 5], Some(64));
    assert_eq!(capped.tokens, Some(64), "output cannot exceed max_tokens");
    let few = estimate(&[10, 20], Some(256));
    assert_eq!(
        (few.tokens, few.basis),
        (Some(256), EstimateBasis::MaxTokens)
    );
    assert_eq!(estimate(&[], None).basis, EstimateBasis::None);
}

#[test]
fn fraction_stays_below_one_until_completed() {
    assert_eq!(fraction(5, Some(10), false), Some(0.5));
    assert_eq!(fraction(50, Some(10), false), Some(MAX_RUNNING_FRACTION));
    assert_eq!(fraction(50, Some(10), true), Some(1.0));
    assert_eq!(fraction(5, None, false), None);
    assert_eq!(fraction(5, None, true), Some(1.0));
}

#[test]
fn milestones_fire_once_per_threshold() {
    assert_eq!(
        crossed(Some(0.1), Some(0.6)),
        vec![MilestoneKind::Progress25, MilestoneKind::Progress50]
    );
    assert!(crossed(Some(0.6), Some(0.7)).is_empty());
    assert_eq!(crossed(None, Some(0.99)).len(), 3);
    assert!(crossed(None, None).is_empty());
}

#[test]
fn stage_changes_rebuild_an_attempt() {
    let mut stages = Stages::new(1, Utc::now());
    assert_eq!(stages.current(), Stage::Queued);
    stages.apply(&StageChanged {
        attempt: 1,
        current: Some(state(Stage::Dispatched, StageStatus::Active)),
        previous: Some(state(Stage::Queued, StageStatus::Completed)),
        skipped: vec![],
    });
    assert_eq!(stages.current(), Stage::Dispatched);
    stages.apply(&StageChanged {
        attempt: 1,
        current: Some(state(Stage::Cancelled, StageStatus::Completed)),
        previous: Some(state(Stage::Dispatched, StageStatus::Failed)),
        skipped: vec![
            Stage::Connecting,
            Stage::AwaitingFirstToken,
            Stage::Generating,
            Stage::Finalizing,
        ],
    });
    assert_eq!(stages.current(), Stage::Cancelled);
    let statuses: Vec<StageStatus> = stages.states.iter().map(StageState::status).collect();
    assert_eq!(
        statuses,
        [
            StageStatus::Completed,
            StageStatus::Failed,
            StageStatus::Skipped,
            StageStatus::Skipped,
            StageStatus::Skipped,
            StageStatus::Skipped,
            StageStatus::Completed
        ]
    );
    // A retry starts a fresh attempt.
    stages.apply(&StageChanged {
        attempt: 2,
        current: Some(state(Stage::Queued, StageStatus::Active)),
        previous: None,
        skipped: vec![],
    });
    assert_eq!((stages.attempt, stages.current()), (2, Stage::Queued));
    assert_eq!(stages.states.len(), 6);
}
