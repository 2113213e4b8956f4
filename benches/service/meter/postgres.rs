//! Postgres's side of a job: transactions (`pg_stat_database`), statements
//! (`pg_stat_statements`, when the server loads it) and the CPU time of its processes.
//!
//! Transaction counts reach `pg_stat_database` when a backend flushes its statistics, at most
//! once a second and when it goes idle; so the counters are read after a quiet 1.5 s (a
//! backend's `pg_stat_force_next_flush()`, PG 15, flushes only that backend's own). The probe
//! runs its queries on the `postgres` database, so they count against that one, not the
//! benchmark's.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use diesel::{
    QueryableByName,
    sql_types::{BigInt, Integer, Text},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::{all_pids, process_cpu_ms, process_name};
use crate::server::postgres_url;

/// How long to wait for every backend's statistics to reach `pg_stat_database`.
pub(crate) const STATS_FLUSH: std::time::Duration = std::time::Duration::from_millis(1500);

/// Reads the counters of one database of the benchmark's Postgres.
pub(crate) struct PgProbe {
    admin: AsyncPgConnection,
    database: String,
    /// `Ok` when statements can be counted, else why not.
    statements: Result<(), String>,
}

/// Counters of the database at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PgCounters {
    /// Committed plus rolled-back transactions.
    pub(crate) xacts: i64,
    /// Statements run (`pg_stat_statements` calls); `None` when not available.
    pub(crate) statements: Option<i64>,
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(QueryableByName)]
struct Backend {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

impl PgProbe {
    /// Connects to the `postgres` database and checks whether statements can be counted.
    pub(crate) async fn connect(database: &str) -> anyhow::Result<PgProbe> {
        let mut admin = AsyncPgConnection::establish(&format!("{}/postgres", postgres_url()))
            .await
            .context("cannot connect to Postgres")?;
        let preload: Setting =
            diesel::sql_query("SELECT current_setting('shared_preload_libraries') AS v")
                .get_result(&mut admin)
                .await?;
        let statements = if !preload.v.contains("pg_stat_statements") {
            Err("pg_stat_statements is not in shared_preload_libraries".to_owned())
        } else {
            diesel::sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&mut admin)
                .await
                .map(|_| ())
                .map_err(|e| format!("pg_stat_statements: {e}"))
        };
        Ok(PgProbe {
            admin,
            database: database.to_owned(),
            statements,
        })
    }

    /// Why statements are not counted, if they are not.
    pub(crate) fn statements_unavailable(&self) -> Option<&str> {
        self.statements.as_ref().err().map(String::as_str)
    }

    /// Transactions and statements of the database so far (as flushed: see [`STATS_FLUSH`]).
    pub(crate) async fn counters(&mut self) -> anyhow::Result<PgCounters> {
        let xacts: Number = diesel::sql_query(
            "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database \
             WHERE datname = $1",
        )
        .bind::<Text, _>(&self.database)
        .get_result(&mut self.admin)
        .await?;
        let statements = match self.statements {
            Ok(()) => {
                let n: Number = diesel::sql_query(
                    "SELECT coalesce(sum(s.calls), 0)::bigint AS n FROM pg_stat_statements s \
                     JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
                )
                .bind::<Text, _>(&self.database)
                .get_result(&mut self.admin)
                .await?;
                Some(n.n)
            }
            Err(_) => None,
        };
        Ok(PgCounters {
            xacts: xacts.n,
            statements,
        })
    }

    /// CPU time so far (ms) of every process named `postgres` (postmaster, background
    /// processes, backends) except `exclude` and the backends of other databases (this
    /// probe's own, and any test run of someone else on the same server).
    pub(crate) async fn cpu(&mut self, exclude: &[u32]) -> anyhow::Result<BTreeMap<u32, f64>> {
        let mut cpu: BTreeMap<u32, f64> = all_pids()
            .into_iter()
            .filter(|pid| process_name(*pid).as_deref() == Some("postgres"))
            .filter_map(|pid| Some((pid, process_cpu_ms(pid)?)))
            .collect();
        let others: Vec<Backend> = diesel::sql_query(
            "SELECT pid FROM pg_stat_activity WHERE datname IS NOT NULL AND datname <> $1",
        )
        .bind::<Text, _>(&self.database)
        .load(&mut self.admin)
        .await?;
        let skip: BTreeSet<u32> = others
            .iter()
            .filter_map(|b| u32::try_from(b.pid).ok())
            .chain(exclude.iter().copied())
            .collect();
        cpu.retain(|pid, _| !skip.contains(pid));
        Ok(cpu)
    }
}
