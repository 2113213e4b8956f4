//! The audit log's contract ([`llm_jobs::store::AuditStore`]) on both SQL backends: events
//! read back as written with the ids the store gave, newest first; each filter narrows to the
//! events matching it; pages walk back through the log once.
//!
//! Event times are whole seconds after a fixed point ([`at`]), which both stores keep exactly.

use chrono::{DateTime, Utc};
use llm_jobs::{
    audit::{Event, Filter, Outcome},
    store::Store,
};

use super::stores::store_contract;

store_contract! {
    events_read_back_as_written_newest_first_with_the_ids_the_store_gave;
    each_filter_narrows_to_the_events_matching_it;
    pages_walk_back_through_the_log_once;
}

/// `seconds` after a fixed point in the past.
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000 + seconds, 0).expect("a valid time")
}

/// Event `n` (its target is `target-n`), at [`at`]`(n)`.
fn event(n: i64, tenant: &str, actor: &str, action: &str, outcome: Outcome) -> Event {
    Event {
        id: 0,
        time: at(n),
        actor: actor.into(),
        tenant: tenant.into(),
        action: action.into(),
        target: format!("target-{n}"),
        peer: "192.0.2.7:50000".into(),
        outcome,
        detail: format!("detail of {n}"),
    }
}

/// Six events: of tenants `a` and `b`, by actors `k1` and `k2`, of two actions, with each
/// outcome; stored in order.
async fn six(store: &dyn Store) -> anyhow::Result<()> {
    for e in [
        event(1, "a", "k1", "CancelJob", Outcome::Ok),
        event(2, "a", "k2", "CancelJob", Outcome::Denied),
        event(3, "b", "k1", "CancelJob", Outcome::Ok),
        event(4, "a", "k1", "PauseQueue", Outcome::Ok),
        event(5, "a", "k1", "CancelJob", Outcome::Error),
        event(6, "a", "k1", "CancelJob", Outcome::Ok),
    ] {
        store.append_audit(&e).await?;
    }
    Ok(())
}

/// The numbers of `events` (from their targets), in order.
fn numbers(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .map(|e| {
            e.target
                .trim_start_matches("target-")
                .parse()
                .expect("a target of `event`")
        })
        .collect()
}

async fn events_read_back_as_written_newest_first_with_the_ids_the_store_gave(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let written = [
        event(1, "a", "k1", "CancelJob", Outcome::Ok),
        event(2, "b", "local", "keys.create", Outcome::Denied),
        event(3, "a", "anonymous", "authenticate", Outcome::Error),
    ];
    for e in &written {
        store.append_audit(e).await?;
    }
    let read = store.audit_events(&Filter::default(), None, 10).await?;
    assert_eq!(numbers(&read), [3, 2, 1]);
    assert!(read[2].id > 0, "the store gives ids");
    assert!(
        read.windows(2).all(|w| w[0].id > w[1].id),
        "newest first: {read:?}"
    );
    let as_written: Vec<Event> = read
        .iter()
        .rev()
        .map(|e| Event { id: 0, ..e.clone() })
        .collect();
    assert_eq!(as_written, written);
    Ok(())
}

async fn each_filter_narrows_to_the_events_matching_it(store: &dyn Store) -> anyhow::Result<()> {
    six(store).await?;
    let mut filter = Filter {
        tenant: Some("a".into()),
        ..Filter::default()
    };
    let listed = async |filter: &Filter| -> anyhow::Result<Vec<i64>> {
        Ok(numbers(&store.audit_events(filter, None, 100).await?))
    };
    assert_eq!(listed(&filter).await?, [6, 5, 4, 2, 1]);
    filter.actor = Some("k1".into());
    assert_eq!(listed(&filter).await?, [6, 5, 4, 1]);
    filter.action = Some("CancelJob".into());
    assert_eq!(listed(&filter).await?, [6, 5, 1]);
    filter.outcome = Some(Outcome::Ok);
    assert_eq!(listed(&filter).await?, [6, 1]);
    filter.since = Some(at(2));
    assert_eq!(listed(&filter).await?, [6]);
    let since_five = Filter {
        since: Some(at(5)),
        ..Filter::default()
    };
    assert_eq!(
        listed(&since_five).await?,
        [6, 5],
        "`since` includes its own time"
    );
    let denied = Filter {
        outcome: Some(Outcome::Denied),
        ..Filter::default()
    };
    assert_eq!(listed(&denied).await?, [2]);
    let nobody = Filter {
        tenant: Some("nobody".into()),
        ..Filter::default()
    };
    assert!(listed(&nobody).await?.is_empty());
    Ok(())
}

async fn pages_walk_back_through_the_log_once(store: &dyn Store) -> anyhow::Result<()> {
    six(store).await?;
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store.audit_events(&Filter::default(), before, 4).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        pages.push(numbers(&page));
        anyhow::ensure!(pages.len() <= 3, "the pages do not end: {pages:?}");
    }
    assert_eq!(pages, [vec![6, 5, 4, 3], vec![2, 1]]);
    let tenant_b = Filter {
        tenant: Some("b".into()),
        ..Filter::default()
    };
    let all = store.audit_events(&Filter::default(), None, 100).await?;
    let third = all[3].id;
    assert_eq!(
        numbers(
            &store
                .audit_events(&Filter::default(), Some(third), 1)
                .await?
        ),
        [2],
        "`before` excludes its own id and `limit` caps the page"
    );
    assert_eq!(
        numbers(&store.audit_events(&tenant_b, Some(third), 10).await?),
        Vec::<i64>::new(),
        "a page before the tenant's only event is empty"
    );
    Ok(())
}
