//! [`KeyStore`] on SQLite. The row type lives here: nothing else reads it.

use async_trait::async_trait;
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, RunQueryDsl, SelectableHelper,
    SqliteConnection,
    prelude::{Queryable, Selectable},
};

use super::{
    SqliteStore,
    rows::{micros, time, time_opt, uuid},
    schema::api_keys,
};
use crate::{
    principal::{ApiKey, KeyLimits, Role},
    store::{Error, KeyStore},
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

fn insert_api_key(conn: &mut SqliteConnection, key: &ApiKey) -> Result<(), Error> {
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

fn api_key(conn: &mut SqliteConnection, prefix: &str) -> Result<Option<ApiKey>, Error> {
    let row: Option<KeyRow> = api_keys::table
        .filter(api_keys::prefix.eq(prefix))
        .select(KeyRow::as_select())
        .get_result(conn)
        .optional()?;
    row.map(ApiKey::try_from).transpose()
}

fn list_api_keys(conn: &mut SqliteConnection, tenant: Option<&str>) -> Result<Vec<ApiKey>, Error> {
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

fn revoke_api_key(conn: &mut SqliteConnection, prefix: &str) -> Result<Option<ApiKey>, Error> {
    diesel::update(api_keys::table)
        .filter(api_keys::prefix.eq(prefix))
        .filter(api_keys::revoked_at.is_null())
        .set(api_keys::revoked_at.eq(micros(chrono::Utc::now())))
        .execute(conn)?;
    api_key(conn, prefix)
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        let key = key.clone();
        self.write(move |conn| insert_api_key(conn, &key)).await
    }

    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error> {
        let prefix = prefix.to_owned();
        self.run(move |conn| api_key(conn, &prefix)).await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, Error> {
        let tenant = tenant.map(str::to_owned);
        self.run(move |conn| list_api_keys(conn, tenant.as_deref()))
            .await
    }

    async fn revoke_api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error> {
        let prefix = prefix.to_owned();
        self.write(move |conn| revoke_api_key(conn, &prefix)).await
    }
}
