//! Integration tests: a real llm-jobs against real Redis and Postgres, a real HTTP upstream
//! speaking the OpenAI streaming format, and real gRPC / grpc-web clients over TCP.

mod admin;
mod audit;
mod batches;
mod cancel;
mod cli;
mod connections;
mod consent;
mod contract;
mod crash;
mod fixtures;
mod flushes;
mod grpc_web;
mod limits;
mod listing;
mod logs;
mod lost_log;
mod metrics;
mod outages;
mod priority;
mod progress;
mod redaction;
mod redis_restart;
mod reflection;
mod restart;
mod results;
mod retries;
mod security;
mod store;
mod stored_logs;
mod support;
mod tls;
mod upstream_budget;
mod upstream_variety;
mod validation;
mod watchers;
