use chrono::TimeDelta;

use super::*;

fn member(status: JobStatus, tokens: Option<(u64, u64)>, cost: Option<f64>) -> Member {
    Member {
        id: uuid::Uuid::now_v7(),
        status,
        last_sequence: 0,
        finished_at: status.is_terminal().then(Utc::now),
        tokens,
        cost_usd: cost,
    }
}

#[test]
fn counts_add_up_and_only_results_count_towards_tokens_and_cost() {
    let now = Utc::now();
    let members = [
        member(JobStatus::Queued, None, None),
        member(JobStatus::Running, None, None),
        member(JobStatus::Completed, Some((10, 5)), Some(0.25)),
        member(JobStatus::Failed, Some((3, 0)), None),
        member(JobStatus::Cancelled, None, None),
    ];
    let p = Progress::of(now, &members, now);
    assert_eq!(
        p.counts,
        Counts {
            queued: 1,
            running: 1,
            completed: 1,
            failed: 1,
            cancelled: 1
        }
    );
    assert_eq!(p.counts.total(), 5);
    assert_eq!((p.input_tokens, p.output_tokens), (13, 5));
    assert_eq!(p.cost_usd, Some(0.25));
    assert_eq!(p.ended_at, None);
}

#[test]
fn cost_is_unset_while_no_result_has_a_price() {
    let now = Utc::now();
    let p = Progress::of(
        now,
        &[member(JobStatus::Completed, Some((1, 1)), None)],
        now,
    );
    assert_eq!(p.cost_usd, None);
}

#[test]
fn the_estimate_extrapolates_the_rate_so_far_and_disappears_at_the_ends() {
    let created = Utc::now() - TimeDelta::seconds(10);
    let now = created + TimeDelta::seconds(10);
    let mut members = vec![
        member(JobStatus::Completed, None, None),
        member(JobStatus::Queued, None, None),
        member(JobStatus::Queued, None, None),
        member(JobStatus::Running, None, None),
    ];
    // One of four ended in 10 s: three more take 30 s.
    let p = Progress::of(created, &members, now);
    assert_eq!(p.estimated_completion, Some(now + TimeDelta::seconds(30)));

    for m in &mut members {
        m.status = JobStatus::Queued;
    }
    assert_eq!(
        Progress::of(created, &members, now).estimated_completion,
        None
    );

    for m in &mut members {
        m.status = JobStatus::Completed;
        m.finished_at = Some(now);
    }
    let done = Progress::of(created, &members, now);
    assert_eq!(done.estimated_completion, None);
    assert_eq!(done.ended_at, Some(now));
}
