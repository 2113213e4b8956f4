//! The cost scenario's rows (each llm-jobs figure beside the BullMQ peer's), its breakdown of
//! Redis commands per job, and its raw figures.

use serde_json::{Value, json};

use super::{Measured, per_job_map, top_commands};
use crate::{
    INSTANT_TOKENS, Scale,
    meter::Load,
    peer::{Peer, PeerCost},
    report::{Report, row},
};

/// Commands listed in the breakdown, from each side.
const TOP: usize = 10;

/// Everything the scenario measured.
pub(crate) struct Figures<'a> {
    /// Its sizes.
    pub(crate) scale: Scale,
    /// Whether the Redis was the benchmark's own.
    pub(crate) redis_private: bool,
    /// llm-jobs on Redis + Postgres.
    pub(crate) redis_postgres: &'a Measured,
    /// llm-jobs embedded.
    pub(crate) embedded: &'a Measured,
    /// The BullMQ peer.
    pub(crate) bullmq: &'a Peer,
}

/// Adds the rows, the breakdown section and the raw figures.
pub(crate) fn add(report: &mut Report, f: &Figures<'_>) {
    let s = f.scale;
    let peer = match f.bullmq {
        Peer::Ran(p) => Some(p),
        Peer::Skipped(_) => None,
    };
    let skipped = match f.bullmq {
        Peer::Skipped(why) => format!("BullMQ skipped ({why})"),
        Peer::Ran(_) => String::new(),
    };
    let n = s.cost_jobs;
    let peer_rate = peer.map_or(skipped.clone(), |p| {
        format!("BullMQ: {:.0} jobs/s", p.jobs_per_s)
    });
    let ratio = |m: &Measured| peer.map(|p| m.jobs_per_s() / p.jobs_per_s);
    let rate = |m: &Measured| {
        let r = ratio(m).map_or(String::new(), |r| format!("; {r:.2}× BullMQ"));
        format!("{:.0} jobs/s ({:.1} s{r})", m.jobs_per_s(), m.secs)
    };
    let peer_cpu = |p: &PeerCost| {
        let node = p.node_cpu_ms.map(|c| c / n as f64);
        let redis = p.redis.cpu_ms.map(|c| c / n as f64);
        (node, redis, node.zip(redis).map(|(a, b)| a + b))
    };
    let peer_cpu_text = peer.map_or(skipped.clone(), |p| {
        let (node, redis, total) = peer_cpu(p);
        let f = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.2}"));
        format!(
            "BullMQ: node {} + Redis {} = {}",
            f(node),
            f(redis),
            f(total)
        )
    });
    let job = format!(
        "{n} jobs × {INSTANT_TOKENS} tokens, {} callers, {} worker slots",
        s.cost_callers, s.cost_slots
    );

    // Redis + Postgres.
    let rp = f.redis_postgres;
    let scenario = "Cost, Redis + Postgres";
    report.push(row(
        scenario,
        &format!("end-to-end jobs/s ({job})"),
        peer_rate.clone(),
        rate(rp),
        "≥ 1× BullMQ (aim 1.5×)",
        ratio(rp).map(|r| r >= 1.0),
    ));
    let server = rp.server_cpu_ms / n as f64;
    let redis_cpu = rp
        .redis
        .as_ref()
        .and_then(|r| r.cpu_ms)
        .map(|c| c / n as f64);
    let pg_cpu = rp.postgres.as_ref().map(|p| p.cpu_ms / n as f64);
    let total = redis_cpu.zip(pg_cpu).map(|(r, p)| server + r + p);
    report.push(row(
        scenario,
        "server CPU per job (ms): llm-jobs + Redis + Postgres",
        peer_cpu_text.clone(),
        format!(
            "{server:.2} + {} + {} = {}",
            redis_cpu.map_or("n/a".into(), |v| format!("{v:.2}")),
            pg_cpu.map_or("n/a".into(), |v| format!("{v:.2}")),
            total.map_or("n/a".into(), |v| format!("{v:.2}"))
        ),
        "≤ 1 ms",
        total.map(|t| t <= 1.0),
    ));
    let commands = rp.redis.as_ref().map(|r| r.total() as f64 / n as f64);
    report.push(row(
        scenario,
        "Redis commands per job (inside scripts included)",
        peer.map_or(skipped.clone(), |p| {
            format!("BullMQ: {:.1}", p.redis.total() as f64 / n as f64)
        }),
        commands.map_or("n/a".into(), |c| format!("{c:.1}")),
        "≤ 40",
        commands.map(|c| c <= 40.0),
    ));
    let xacts = rp.postgres.as_ref().map(|p| p.xacts as f64 / n as f64);
    report.push(row(
        scenario,
        "Postgres transactions per job",
        "- (BullMQ keeps results in Redis)",
        xacts.map_or("n/a".into(), |x| format!("{x:.2}")),
        "≤ 0.2",
        xacts.map(|x| x <= 0.2),
    ));
    let statements = rp.postgres.as_ref().map(|p| match &p.statements {
        Ok(st) => format!("{:.2}", *st as f64 / n as f64),
        Err(why) => format!("skipped: {why}"),
    });
    report.push(row(
        scenario,
        "Postgres statements per job",
        "-",
        statements.unwrap_or_else(|| "n/a".into()),
        "-",
        None,
    ));

    // Embedded.
    let em = f.embedded;
    let scenario = "Cost, embedded";
    report.push(row(
        scenario,
        &format!("end-to-end jobs/s ({job})"),
        peer_rate,
        rate(em),
        "≥ 2× BullMQ",
        ratio(em).map(|r| r >= 2.0),
    ));
    report.push(row(
        scenario,
        "server CPU per job (ms): llm-jobs",
        peer_cpu_text,
        format!("{:.2}", em.server_cpu_ms / n as f64),
        "-",
        None,
    ));

    // The peer itself.
    let redis_note = if f.redis_private {
        "a Redis of the benchmark's own"
    } else {
        "the shared Redis"
    };
    report.push(row(
        "Cost, BullMQ peer",
        &format!(
            "bench_llm.mjs, W = {}, on {redis_note} and the same upstream",
            s.cost_slots
        ),
        "-",
        match peer {
            Some(p) => {
                let (node, redis, _) = peer_cpu(p);
                format!(
                    "{:.0} jobs/s (adds {:.0}/s); CPU per job node {} + Redis {} ms; {:.1} Redis commands per job",
                    p.jobs_per_s,
                    p.add_jobs_per_s,
                    node.map_or("n/a".into(), |v| format!("{v:.2}")),
                    redis.map_or("n/a".into(), |v| format!("{v:.2}")),
                    p.redis.total() as f64 / n as f64
                )
            }
            None => skipped.clone(),
        },
        "-",
        None,
    ));

    if let Some(redis) = &rp.redis {
        let top = top_commands(redis, n, peer.map(|p| (&p.redis, n)), TOP);
        let mut md = format!(
            "Redis commands per job, cost scenario: the {TOP} most called of each side \
             (inside scripts included)\n\n| command | llm-jobs, Redis + Postgres | BullMQ peer |\n|---|---|---|\n"
        );
        for (c, a, b) in &top {
            md.push_str(&format!(
                "| {c} | {a:.2} | {} |\n",
                b.map_or("-".into(), |b| format!("{b:.2}"))
            ));
        }
        md.push_str(&format!(
            "| all | {:.2} | {} |\n",
            redis.total() as f64 / n as f64,
            peer.map_or("-".into(), |p| format!(
                "{:.2}",
                p.redis.total() as f64 / n as f64
            ))
        ));
        report.sections.push(md);
    }
    let load = |l: &Load| {
        format!(
            "{:.0} % by the processes of the run, {:.0} % by others",
            l.ours_percent, l.others_percent
        )
    };
    let mut md = format!(
        "Machine CPU during the cost runs (percent of all cores; other processes compete with \
         the run):\n\n- llm-jobs, Redis + Postgres: {}\n- llm-jobs, embedded: {}\n",
        load(&rp.load),
        load(&em.load)
    );
    if let Some(p) = peer {
        md.push_str(&format!("- BullMQ peer: {}\n", load(&p.load)));
    }
    report.sections.push(md);
    report.raw.insert("cost".into(), raw(f));
}

fn raw(f: &Figures<'_>) -> Value {
    let s = f.scale;
    let n = s.cost_jobs;
    let measured = |m: &Measured| {
        json!({
            "jobs": m.jobs,
            "secs": m.secs,
            "jobs_per_second": m.jobs_per_s(),
            "server_cpu_ms_per_job": m.server_cpu_ms / n as f64,
            "redis_cpu_ms_per_job": m.redis.as_ref().and_then(|r| r.cpu_ms).map(|c| c / n as f64),
            "postgres_cpu_ms_per_job": m.postgres.as_ref().map(|p| p.cpu_ms / n as f64),
            "redis_commands_per_job": m.redis.as_ref().map(|r| r.total() as f64 / n as f64),
            "redis_commands_per_job_by_command": m.redis.as_ref().map(|r| per_job_map(r, n)),
            "postgres_transactions_per_job": m.postgres.as_ref().map(|p| p.xacts as f64 / n as f64),
            "postgres_statements_per_job": m.postgres.as_ref().and_then(|p| p.statements.as_ref().ok()).map(|st| *st as f64 / n as f64),
            "machine_cpu": m.load,
        })
    };
    let bullmq = match f.bullmq {
        Peer::Ran(p) => json!({
            "jobs_per_second": p.jobs_per_s,
            "add_jobs_per_second": p.add_jobs_per_s,
            "node_cpu_ms_per_job": p.node_cpu_ms.map(|c| c / n as f64),
            "redis_cpu_ms_per_job": p.redis.cpu_ms.map(|c| c / n as f64),
            "redis_commands_per_job": p.redis.total() as f64 / n as f64,
            "redis_commands_per_job_by_command": per_job_map(&p.redis, n),
            "machine_cpu": p.load,
        }),
        Peer::Skipped(why) => json!({"skipped": why}),
    };
    json!({
        "jobs": n,
        "tokens_per_job": INSTANT_TOKENS,
        "callers": s.cost_callers,
        "worker_slots": s.cost_slots,
        "redis_private": f.redis_private,
        "redis_postgres": measured(f.redis_postgres),
        "embedded": measured(f.embedded),
        "bullmq": bullmq,
    })
}
