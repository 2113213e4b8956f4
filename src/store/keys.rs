//! API keys as stored: the hash of each key's secret, never the secret.

use async_trait::async_trait;

use super::Error;
use crate::principal::ApiKey;

/// The API keys.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new API key. Errors: `Query` when its prefix is taken (generate another).
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), Error>;

    /// The key with `prefix`, revoked or not; `None` when unknown.
    async fn api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error>;

    /// Every key (of `tenant` when given), newest first.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, Error>;

    /// Revokes the key with `prefix` (a second revoke keeps the first time) and returns it;
    /// `None` when unknown.
    async fn revoke_api_key(&self, prefix: &str) -> Result<Option<ApiKey>, Error>;
}
