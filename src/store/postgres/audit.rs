//! [`AuditStore`] on Postgres. The row types live here: nothing else reads them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, QueryDsl, SelectableHelper,
    prelude::{Insertable, Queryable, Selectable},
};
use diesel_async::RunQueryDsl;

use super::PgStore;
use crate::{
    store::audit::{Event, Filter, Outcome},
    store::{AuditStore, Error, schema::audit_events},
};

/// A row of `audit_events`.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg))]
struct AuditRow {
    id: i64,
    time: DateTime<Utc>,
    actor: String,
    tenant: String,
    action: String,
    target: String,
    peer: String,
    outcome: String,
    detail: String,
}

/// A new row of `audit_events`.
#[derive(Insertable, Debug)]
#[diesel(table_name = audit_events)]
struct NewAuditRow<'a> {
    time: DateTime<Utc>,
    actor: &'a str,
    tenant: &'a str,
    action: &'a str,
    target: &'a str,
    peer: &'a str,
    outcome: &'static str,
    detail: &'a str,
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, e: &Event) -> Result<(), Error> {
        let mut conn = self.conn().await?;
        diesel::insert_into(audit_events::table)
            .values(NewAuditRow {
                time: e.time,
                actor: &e.actor,
                tenant: &e.tenant,
                action: &e.action,
                target: &e.target,
                peer: &e.peer,
                outcome: e.outcome.as_str(),
                detail: &e.detail,
            })
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    async fn audit_events(
        &self,
        filter: &Filter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Event>, Error> {
        let mut conn = self.conn().await?;
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
            query = query.filter(audit_events::time.ge(t));
        }
        if let Some(id) = before {
            query = query.filter(audit_events::id.lt(id));
        }
        let rows: Vec<AuditRow> = query.load(&mut conn).await?;
        rows.into_iter()
            .map(|r| {
                Ok(Event {
                    outcome: Outcome::parse(&r.outcome).ok_or_else(|| {
                        Error::Corrupt(format!("audit event {}: bad outcome", r.id))
                    })?,
                    id: r.id,
                    time: r.time,
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
}
