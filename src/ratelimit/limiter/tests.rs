use super::*;
use crate::redis::Redis;
use tonic::Code;
use tonic_types::StatusExt;

/// A limiter on `backend` allowing `n` requests a minute and `n` unfinished jobs, with a
/// store that nothing listens for (port 1: every call fails at once).
fn limiter(backend: Backend, n: u32) -> Limiter {
    let store = crate::store::postgres::PgStore::new("postgres://postgres@127.0.0.1:1/none", 1)
        .expect("pools connect lazily");
    Limiter::new(
        backend,
        Arc::new(store),
        "t",
        Defaults {
            requests_per_minute: n,
            max_concurrent_jobs: n,
            max_open_streams: n,
        },
    )
}

#[tokio::test]
async fn without_redis_requests_pass_unchecked_and_are_counted() {
    // Nothing listens on port 1: every Redis and Postgres call fails at once.
    let redis = Redis::new(crate::redis::Settings {
        url: "redis://127.0.0.1:1".into(),
        prefix: "t".into(),
        pool_size: 1,
    })
    .expect("a valid URL");
    let limiter = limiter(Backend::Redis(redis), 1);
    let who = Principal::auth_off("127.0.0.1:4000".into());
    for _ in 0..3 {
        assert!(limiter.admit_request(&who).await.is_ok(), "fail-open");
    }
    let jobs = [JobId::now_v7(), JobId::now_v7()];
    assert!(limiter.reserve_jobs(&who, &jobs).await.is_ok());
    assert_eq!(limiter.unchecked(), 4);
}

#[tokio::test]
async fn in_process_limits_refuse_what_does_not_fit() {
    let limiter = limiter(Backend::Memory(Arc::default()), 2);
    let who = Principal::auth_off("127.0.0.1:4000".into());
    assert!(limiter.admit_request(&who).await.is_ok());
    assert!(limiter.admit_request(&who).await.is_ok());
    let refused = limiter
        .admit_request(&who)
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.get_details_retry_info().is_some());
    let jobs = [JobId::now_v7(), JobId::now_v7(), JobId::now_v7()];
    assert!(limiter.reserve_jobs(&who, &jobs[..2]).await.is_ok());
    // Too young to prune (their rows may not be committed): no store call, refused.
    let refused = limiter
        .reserve_jobs(&who, &jobs[2..])
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(limiter.unchecked(), 0, "nothing let through unchecked");
}
