//! [`AuditStore`] on SQLite. The row type lives here: nothing else reads it.

use async_trait::async_trait;
use diesel::{
    ExpressionMethods, QueryDsl, RunQueryDsl, SelectableHelper, SqliteConnection,
    prelude::{Queryable, Selectable},
};

use super::{
    SqliteStore,
    rows::{micros, time},
    schema::audit_events,
};
use crate::{
    store::audit::{Event, Filter, Outcome},
    store::{AuditStore, Error},
};

/// A row of `audit_events`.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = audit_events, check_for_backend(diesel::sqlite::Sqlite))]
struct AuditRow {
    id: i64,
    time: i64,
    actor: String,
    tenant: String,
    action: String,
    target: String,
    peer: String,
    outcome: String,
    detail: String,
}

fn append_audit(conn: &mut SqliteConnection, e: &Event) -> Result<(), Error> {
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::time.eq(micros(e.time)),
            audit_events::actor.eq(&e.actor),
            audit_events::tenant.eq(&e.tenant),
            audit_events::action.eq(&e.action),
            audit_events::target.eq(&e.target),
            audit_events::peer.eq(&e.peer),
            audit_events::outcome.eq(e.outcome.as_str()),
            audit_events::detail.eq(&e.detail),
        ))
        .execute(conn)?;
    Ok(())
}

fn audit_events(
    conn: &mut SqliteConnection,
    filter: &Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Event>, Error> {
    let mut query = audit_events::table
        .order(audit_events::id.desc())
        .limit(limit)
        .select(AuditRow::as_select())
        .into_boxed();
    if let Some(t) = &filter.tenant {
        query = query.filter(audit_events::tenant.eq(t.clone()));
    }
    if let Some(a) = &filter.actor {
        query = query.filter(audit_events::actor.eq(a.clone()));
    }
    if let Some(a) = &filter.action {
        query = query.filter(audit_events::action.eq(a.clone()));
    }
    if let Some(o) = filter.outcome {
        query = query.filter(audit_events::outcome.eq(o.as_str()));
    }
    if let Some(t) = filter.since {
        query = query.filter(audit_events::time.ge(micros(t)));
    }
    if let Some(id) = before {
        query = query.filter(audit_events::id.lt(id));
    }
    let rows: Vec<AuditRow> = query.load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(Event {
                outcome: Outcome::parse(&r.outcome)
                    .ok_or_else(|| Error::Corrupt(format!("audit event {}: bad outcome", r.id)))?,
                id: r.id,
                time: time(r.time)?,
                actor: r.actor,
                tenant: r.tenant,
                action: r.action,
                target: r.target,
                peer: r.peer,
                detail: r.detail,
            })
        })
        .collect()
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: &Event) -> Result<(), Error> {
        let event = event.clone();
        self.write(move |conn| append_audit(conn, &event)).await
    }

    async fn audit_events(
        &self,
        filter: &Filter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Event>, Error> {
        let filter = filter.clone();
        self.run(move |conn| audit_events(conn, &filter, before, limit))
            .await
    }
}
