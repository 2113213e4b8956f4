//! API keys and the audit log on Postgres. The row types live here: nothing else reads them.

use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper,
    prelude::{Insertable, Queryable, Selectable},
};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::PgStore;
use crate::{
    audit::record as audit,
    principal::{ApiKey, KeyLimits, Role},
    store::{
        Error,
        schema::{api_keys, audit_events},
    },
};

/// A row of `api_keys`.
#[derive(Queryable, Selectable, Insertable, Debug)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
struct KeyRow {
    id: Uuid,
    prefix: String,
    secret_sha256: String,
    tenant: String,
    role: String,
    name: String,
    requests_per_minute: Option<i32>,
    max_concurrent_jobs: Option<i32>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = Error;

    fn try_from(r: KeyRow) -> Result<ApiKey, Error> {
        let role = Role::parse(&r.role)
            .ok_or_else(|| Error::Corrupt(format!("api key {}: bad role", r.prefix)))?;
        let limit = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        Ok(ApiKey {
            id: r.id,
            prefix: r.prefix,
            secret_sha256: r.secret_sha256,
            tenant: r.tenant,
            role,
            name: r.name,
            limits: KeyLimits {
                requests_per_minute: limit(r.requests_per_minute),
                max_concurrent_jobs: limit(r.max_concurrent_jobs),
            },
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

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

pub(super) async fn insert_api_key(store: &PgStore, key: &ApiKey) -> Result<(), Error> {
    let mut conn = store.conn().await?;
    let limit = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    diesel::insert_into(api_keys::table)
        .values(KeyRow {
            id: key.id,
            prefix: key.prefix.clone(),
            secret_sha256: key.secret_sha256.clone(),
            tenant: key.tenant.clone(),
            role: key.role.as_str().to_owned(),
            name: key.name.clone(),
            requests_per_minute: limit(key.limits.requests_per_minute),
            max_concurrent_jobs: limit(key.limits.max_concurrent_jobs),
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        })
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub(super) async fn api_key(store: &PgStore, prefix: &str) -> Result<Option<ApiKey>, Error> {
    let mut conn = store.conn().await?;
    let row: Option<KeyRow> = api_keys::table
        .filter(api_keys::prefix.eq(prefix))
        .select(KeyRow::as_select())
        .first(&mut conn)
        .await
        .optional()?;
    row.map(ApiKey::try_from).transpose()
}

pub(super) async fn list_api_keys(
    store: &PgStore,
    tenant: Option<&str>,
) -> Result<Vec<ApiKey>, Error> {
    let mut conn = store.conn().await?;
    let mut query = api_keys::table
        .order(api_keys::id.desc())
        .select(KeyRow::as_select())
        .into_boxed();
    if let Some(t) = tenant {
        query = query.filter(api_keys::tenant.eq(t.to_owned()));
    }
    let rows: Vec<KeyRow> = query.load(&mut conn).await?;
    rows.into_iter().map(ApiKey::try_from).collect()
}

pub(super) async fn revoke_api_key(store: &PgStore, prefix: &str) -> Result<Option<ApiKey>, Error> {
    let mut conn = store.conn().await?;
    diesel::update(api_keys::table)
        .filter(api_keys::prefix.eq(prefix))
        .filter(api_keys::revoked_at.is_null())
        .set(api_keys::revoked_at.eq(Utc::now()))
        .execute(&mut conn)
        .await?;
    drop(conn);
    api_key(store, prefix).await
}

pub(super) async fn append_audit(store: &PgStore, e: &audit::Event) -> Result<(), Error> {
    let mut conn = store.conn().await?;
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

pub(super) async fn audit_events(
    store: &PgStore,
    filter: &audit::Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<audit::Event>, Error> {
    let mut conn = store.conn().await?;
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
            Ok(audit::Event {
                outcome: audit::Outcome::parse(&r.outcome)
                    .ok_or_else(|| Error::Corrupt(format!("audit event {}: bad outcome", r.id)))?,
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
