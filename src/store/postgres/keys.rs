//! [`KeyStore`] on Postgres. The row type lives here: nothing else reads it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper,
    prelude::{Insertable, Queryable, Selectable},
};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::PgStore;
use crate::{
    principal::{ApiKey, KeyLimits, Role},
    store::{Error, KeyStore, schema::api_keys},
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

#[async_trait]
impl KeyStore for PgStore {
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error> {
        let mut conn = self.conn().await?;
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

    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error> {
        let mut conn = self.conn().await?;
        let row: Option<KeyRow> = api_keys::table
            .filter(api_keys::prefix.eq(prefix))
            .select(KeyRow::as_select())
            .first(&mut conn)
            .await
            .optional()?;
        row.map(ApiKey::try_from).transpose()
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, Error> {
        let mut conn = self.conn().await?;
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

    async fn revoke_api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error> {
        let mut conn = self.conn().await?;
        diesel::update(api_keys::table)
            .filter(api_keys::prefix.eq(prefix))
            .filter(api_keys::revoked_at.is_null())
            .set(api_keys::revoked_at.eq(Utc::now()))
            .execute(&mut conn)
            .await?;
        drop(conn);
        self.api_key(prefix).await
    }
}
