//! Diesel table definitions of the SQLite store, matching `migrations/sqlite/` (kept by hand).
//! Ids are text, times are microseconds since the Unix epoch, JSON (and tags) are text.

#![allow(missing_docs)]

diesel::table! {
    jobs (id) {
        id -> Text,
        status -> Text,
        job_type -> Text,
        priority -> Text,
        queue -> Text,
        messages -> Text,
        params -> Text,
        model -> Text,
        streaming_mode -> Text,
        metadata -> Text,
        idempotency_key -> Nullable<Text>,
        attempts -> Integer,
        max_attempts -> Integer,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        last_sequence -> BigInt,
        created_at -> BigInt,
        enqueued_at -> BigInt,
        started_at -> Nullable<BigInt>,
        finished_at -> Nullable<BigInt>,
        updated_at -> BigInt,
        timeout_secs -> Nullable<Integer>,
        forgotten_at -> Nullable<BigInt>,
        tags -> Text,
        batch_id -> Nullable<Text>,
        tenant -> Text,
        discard_prompt -> Bool,
        trace_context -> Nullable<Text>,
    }
}

diesel::table! {
    job_results (job_id) {
        job_id -> Text,
        content -> Text,
        reasoning_content -> Text,
        finish_reason -> Text,
        model -> Text,
        provider -> Text,
        simulated -> Bool,
        input_tokens -> BigInt,
        output_tokens -> BigInt,
        total_tokens -> BigInt,
        usage_estimated -> Bool,
        time_to_first_token_ms -> Nullable<BigInt>,
        duration_ms -> BigInt,
        output_tokens_per_second -> Double,
        queue_wait_ms -> BigInt,
        created_at -> BigInt,
        cost_usd -> Nullable<Double>,
        cached_input_tokens -> Nullable<BigInt>,
        reasoning_tokens -> Nullable<BigInt>,
        stream_chunks -> BigInt,
        stream_bytes -> BigInt,
        inter_token_p50_ms -> Nullable<Double>,
        inter_token_p95_ms -> Nullable<Double>,
        upstream_request_id -> Nullable<Text>,
        structured_output -> Nullable<Text>,
    }
}

diesel::table! {
    job_progress_events (id) {
        id -> BigInt,
        job_id -> Text,
        attempt -> Integer,
        kind -> Text,
        name -> Text,
        time -> BigInt,
        event -> Binary,
    }
}

diesel::table! {
    job_attempt_failures (job_id, attempt) {
        job_id -> Text,
        attempt -> Integer,
        error_code -> Text,
        message -> Text,
        retryable -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    batches (id) {
        id -> Text,
        display_name -> Text,
        metadata -> Text,
        idempotency_key -> Nullable<Text>,
        created_at -> BigInt,
        tenant -> Text,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        prefix -> Text,
        secret_sha256 -> Text,
        tenant -> Text,
        role -> Text,
        name -> Text,
        requests_per_minute -> Nullable<Integer>,
        max_concurrent_jobs -> Nullable<Integer>,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        time -> BigInt,
        actor -> Text,
        tenant -> Text,
        action -> Text,
        target -> Text,
        peer -> Text,
        outcome -> Text,
        detail -> Text,
    }
}

diesel::table! {
    job_event_logs (job_id) {
        job_id -> Text,
        first_sequence -> BigInt,
        event_count -> BigInt,
        events -> Binary,
    }
}

diesel::joinable!(job_results -> jobs (job_id));
diesel::joinable!(job_attempt_failures -> jobs (job_id));
diesel::joinable!(job_progress_events -> jobs (job_id));
diesel::joinable!(jobs -> batches (batch_id));
diesel::allow_tables_to_appear_in_same_query!(
    jobs,
    job_results,
    job_attempt_failures,
    job_progress_events,
    job_event_logs,
    batches,
    api_keys,
    audit_events
);
