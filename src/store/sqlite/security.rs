//! API keys and the audit log on SQLite. The row types live here: nothing else reads them.

use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper,
    SqliteConnection,
    prelude::{Queryable, Selectable},
};

use super::{
    rows::{micros, time, time_opt, uuid},
    schema::{api_keys, audit_events},
};
use crate::{
    audit::record as audit,
    principal::{ApiKey, KeyLimits, Role},
    store::Error,
};

/// A row of `api_keys`.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = api_keys, check_for_backend(diesel::sqlite::Sqlite))]
struct KeyRow {
    id: String,
    prefix: String,
    secret_sha256: String,
    tenant: String,
    role: String,
    name: String,
    requests_per_minute: Option<i32>,
    max_concurrent_jobs: Option<i32>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = Error;

    fn try_from(r: KeyRow) -> Result<ApiKey, Error> {
        let role = Role::parse(&r.role)
            .ok_or_else(|| Error::Corrupt(format!("api key {}: bad role", r.prefix)))?;
        let limit = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        Ok(ApiKey {
            id: uuid(&r.id)?,
            prefix: r.prefix,
            secret_sha256: r.secret_sha256,
            tenant: r.tenant,
            role,
            name: r.name,
            limits: KeyLimits {
                requests_per_minute: limit(r.requests_per_minute),
                max_concurrent_jobs: limit(r.max_concurrent_jobs),
            },
            created_at: time(r.created_at)?,
            revoked_at: time_opt(r.revoked_at)?,
        })
    }
}

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

pub(super) fn insert_api_key(conn: &mut SqliteConnection, key: &ApiKey) -> Result<(), Error> {
    let limit = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(key.id.to_string()),
            api_keys::prefix.eq(&key.prefix),
            api_keys::secret_sha256.eq(&key.secret_sha256),
            api_keys::tenant.eq(&key.tenant),
            api_keys::role.eq(key.role.as_str()),
            api_keys::name.eq(&key.name),
            api_keys::requests_per_minute.eq(limit(key.limits.requests_per_minute)),
            api_keys::max_concurrent_jobs.eq(limit(key.limits.max_concurrent_jobs)),
            api_keys::created_at.eq(micros(key.created_at)),
            api_keys::revoked_at.eq(key.revoked_at.map(micros)),
        ))
        .execute(conn)?;
    Ok(())
}

pub(super) fn api_key(conn: &mut SqliteConnection, prefix: &str) -> Result<Option<ApiKey>, Error> {
    let row: Option<KeyRow> = api_keys::table
        .filter(api_keys::prefix.eq(prefix))
        .select(KeyRow::as_select())
        .get_result(conn)
        .optional()?;
    row.map(ApiKey::try_from).transpose()
}

pub(super) fn list_api_keys(
    conn: &mut SqliteConnection,
    tenant: Option<&str>,
) -> Result<Vec<ApiKey>, Error> {
    let mut query = api_keys::table
        .order((api_keys::created_at.desc(), api_keys::id.desc()))
        .select(KeyRow::as_select())
        .into_boxed();
    if let Some(t) = tenant {
        query = query.filter(api_keys::tenant.eq(t.to_owned()));
    }
    let rows: Vec<KeyRow> = query.load(conn)?;
    rows.into_iter().map(ApiKey::try_from).collect()
}

pub(super) fn revoke_api_key(
    conn: &mut SqliteConnection,
    prefix: &str,
) -> Result<Option<ApiKey>, Error> {
    diesel::update(api_keys::table)
        .filter(api_keys::prefix.eq(prefix))
        .filter(api_keys::revoked_at.is_null())
        .set(api_keys::revoked_at.eq(micros(chrono::Utc::now())))
        .execute(conn)?;
    api_key(conn, prefix)
}

pub(super) fn append_audit(conn: &mut SqliteConnection, e: &audit::Event) -> Result<(), Error> {
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

pub(super) fn audit_events(
    conn: &mut SqliteConnection,
    filter: &audit::Filter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<audit::Event>, Error> {
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
            Ok(audit::Event {
                outcome: audit::Outcome::parse(&r.outcome)
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
