//! The API keys' contract ([`llm_jobs::store::KeyStore`]) on both SQL backends: a key reads
//! back as stored, a taken prefix is refused, listings are newest first and per tenant, and a
//! revoke keeps its first time.
//!
//! Creation times are whole seconds after a fixed point ([`at`]), which both stores keep
//! exactly; each key's id is a UUIDv7 of its creation time, so id order is time order too.

use chrono::{DateTime, Utc};
use llm_jobs::{
    principal::{ApiKey, KeyLimits, Role},
    store::{Error, Store},
};

use super::stores::store_contract;

store_contract! {
    a_stored_key_reads_back_as_it_was_stored;
    a_taken_prefix_is_refused_and_the_first_key_stays;
    keys_list_newest_first_and_only_of_the_tenant_asked;
    a_revoke_keeps_the_first_time_and_an_unknown_key_is_none;
}

/// A prefix no check stores.
const UNKNOWN: &str = "ffffffffffff";

/// `seconds` after a fixed point in the past.
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000 + seconds, 0).expect("a valid time")
}

/// A key of `tenant` with `role`, made `seconds` after [`at`]'s point.
fn key(prefix: &str, tenant: &str, role: Role, seconds: i64) -> ApiKey {
    let created_at = at(seconds);
    let stamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(created_at.timestamp()).expect("after 1970"),
        0,
    );
    ApiKey {
        id: uuid::Uuid::new_v7(stamp),
        prefix: prefix.into(),
        secret_sha256: format!("{prefix:0>64}"),
        tenant: tenant.into(),
        role,
        name: format!("key {prefix}"),
        limits: KeyLimits::default(),
        created_at,
        revoked_at: None,
    }
}

fn prefixes(keys: &[ApiKey]) -> Vec<&str> {
    keys.iter().map(|k| k.prefix.as_str()).collect()
}

async fn a_stored_key_reads_back_as_it_was_stored(store: &dyn Store) -> anyhow::Result<()> {
    let plain = key("0123456789ab", "acme", Role::User, 1);
    let limited = ApiKey {
        limits: KeyLimits {
            requests_per_minute: Some(600),
            max_concurrent_jobs: Some(3),
        },
        revoked_at: Some(at(5)),
        ..key("ba9876543210", "acme", Role::Operator, 2)
    };
    store.insert_api_key(&plain).await?;
    store.insert_api_key(&limited).await?;
    assert_eq!(store.api_key(&plain.prefix).await?, Some(plain));
    assert_eq!(store.api_key(&limited.prefix).await?, Some(limited));
    assert_eq!(store.api_key(UNKNOWN).await?, None);
    Ok(())
}

async fn a_taken_prefix_is_refused_and_the_first_key_stays(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let first = key("0123456789ab", "acme", Role::User, 1);
    let second = key("0123456789ab", "other", Role::Admin, 2);
    store.insert_api_key(&first).await?;
    let refused = store
        .insert_api_key(&second)
        .await
        .expect_err("a second key with a taken prefix is refused");
    assert!(
        matches!(refused, Error::Query(_)) && !refused.is_transient(),
        "a taken prefix is a permanent query error (generate another), got {refused:?}"
    );
    assert_eq!(store.api_key(&first.prefix).await?, Some(first.clone()));
    assert_eq!(store.list_api_keys(None).await?, vec![first]);
    Ok(())
}

async fn keys_list_newest_first_and_only_of_the_tenant_asked(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let oldest = key("000000000001", "acme", Role::User, 1);
    let middle = key("000000000002", "other", Role::Admin, 2);
    let newest = key("000000000003", "acme", Role::Admin, 3);
    // Stored out of order: the listing's order is the keys' age, not the order of writes.
    for k in [&middle, &newest, &oldest] {
        store.insert_api_key(k).await?;
    }
    assert_eq!(
        prefixes(&store.list_api_keys(None).await?),
        ["000000000003", "000000000002", "000000000001"]
    );
    assert_eq!(
        store.list_api_keys(Some("acme")).await?,
        vec![newest, oldest]
    );
    assert_eq!(store.list_api_keys(Some("other")).await?, vec![middle]);
    assert!(store.list_api_keys(Some("nobody")).await?.is_empty());
    Ok(())
}

async fn a_revoke_keeps_the_first_time_and_an_unknown_key_is_none(
    store: &dyn Store,
) -> anyhow::Result<()> {
    let revoked = key("0123456789ab", "acme", Role::User, 1);
    let kept = key("ba9876543210", "acme", Role::User, 2);
    store.insert_api_key(&revoked).await?;
    store.insert_api_key(&kept).await?;
    let before = Utc::now();
    let first = store
        .revoke_api_key(&revoked.prefix)
        .await?
        .expect("a stored key is found");
    let after = Utc::now();
    let time = first.revoked_at.expect("a revoked key has its time");
    let slack = chrono::TimeDelta::seconds(1);
    assert!(
        before - slack <= time && time <= after + slack,
        "revoked at {time}, between {before} and {after}"
    );
    assert_eq!(
        first,
        ApiKey {
            revoked_at: Some(time),
            ..revoked.clone()
        }
    );
    let again = store
        .revoke_api_key(&revoked.prefix)
        .await?
        .expect("a revoked key is still found");
    assert_eq!(
        again.revoked_at,
        Some(time),
        "a second revoke keeps the first time"
    );
    assert_eq!(store.api_key(&revoked.prefix).await?, Some(again));
    assert_eq!(store.api_key(&kept.prefix).await?, Some(kept));
    assert_eq!(store.revoke_api_key(UNKNOWN).await?, None);
    Ok(())
}
