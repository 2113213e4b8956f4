//! Diesel table definitions of the Postgres store, matching `migrations/postgres/` (kept by
//! hand: there is no diesel CLI step).

#![allow(missing_docs)]

diesel::table! {
    jobs (id) {
        id -> Uuid,
        status -> Text,
        job_type -> Text,
        priority -> Text,
        queue -> Text,
        messages -> Jsonb,
        params -> Jsonb,
        model -> Text,
        streaming_mode -> Text,
        metadata -> Jsonb,
        idempotency_key -> Nullable<Text>,
        attempts -> Int4,
        max_attempts -> Int4,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        last_sequence -> Int8,
        created_at -> Timestamptz,
        enqueued_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
        timeout_secs -> Nullable<Int4>,
        forgotten_at -> Nullable<Timestamptz>,
        tags -> Array<Text>,
        batch_id -> Nullable<Uuid>,
        tenant -> Text,
        discard_prompt -> Bool,
        trace_context -> Nullable<Text>,
    }
}

diesel::table! {
    job_results (job_id) {
        job_id -> Uuid,
        content -> Text,
        reasoning_content -> Text,
        finish_reason -> Text,
        model -> Text,
        provider -> Text,
        simulated -> Bool,
        input_tokens -> Int8,
        output_tokens -> Int8,
        total_tokens -> Int8,
        usage_estimated -> Bool,
        time_to_first_token_ms -> Nullable<Int8>,
        duration_ms -> Int8,
        output_tokens_per_second -> Float8,
        queue_wait_ms -> Int8,
        created_at -> Timestamptz,
        cost_usd -> Nullable<Float8>,
        cached_input_tokens -> Nullable<Int8>,
        reasoning_tokens -> Nullable<Int8>,
        stream_chunks -> Int8,
        stream_bytes -> Int8,
        inter_token_p50_ms -> Nullable<Float8>,
        inter_token_p95_ms -> Nullable<Float8>,
        upstream_request_id -> Nullable<Text>,
        structured_output -> Nullable<Jsonb>,
    }
}

diesel::table! {
    job_progress_events (id) {
        id -> Int8,
        job_id -> Uuid,
        attempt -> Int4,
        kind -> Text,
        name -> Text,
        time -> Timestamptz,
        event -> Bytea,
    }
}

diesel::table! {
    job_attempt_failures (job_id, attempt) {
        job_id -> Uuid,
        attempt -> Int4,
        error_code -> Text,
        message -> Text,
        retryable -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    batches (id) {
        id -> Uuid,
        display_name -> Text,
        metadata -> Jsonb,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamptz,
        tenant -> Text,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        prefix -> Text,
        secret_sha256 -> Text,
        tenant -> Text,
        role -> Text,
        name -> Text,
        requests_per_minute -> Nullable<Int4>,
        max_concurrent_jobs -> Nullable<Int4>,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Int8,
        time -> Timestamptz,
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
        job_id -> Uuid,
        first_sequence -> Int8,
        event_count -> Int8,
        events -> Bytea,
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
