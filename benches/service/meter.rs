//! What a job costs, counted from outside the processes: CPU time of a process (`/proc/PID/stat`)
//! and of the machine (`/proc/stat`), and Redis commands (`INFO commandstats`); Postgres in
//! [`postgres`], the store's finished jobs in [`store`].

pub(crate) mod postgres;
pub(crate) mod store;

use std::{collections::BTreeMap, sync::OnceLock};

use anyhow::Context;

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 when unknown).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU time (ms) used so far by process `pid`, all its threads included.
pub(crate) fn process_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 * 1000.0 / ticks_per_second())
}

/// The command name of process `pid` (`/proc/PID/comm`).
pub(crate) fn process_name(pid: u32) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_owned(),
    )
}

/// Every process id in `/proc`.
pub(crate) fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time (ms) used from `before` to `after` by the processes of `after` (a process started
/// in between counts from zero; one that ended in between is not seen).
pub(crate) fn cpu_delta(before: &BTreeMap<u32, f64>, after: &BTreeMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, ms)| (ms - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// Machine-wide busy CPU time (ticks, all cores) from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MachineCpu {
    busy: u64,
}

impl MachineCpu {
    /// The counters now (zeros when `/proc/stat` cannot be read).
    pub(crate) fn now() -> MachineCpu {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return MachineCpu::default();
        };
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return MachineCpu::default();
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        MachineCpu {
            busy: total.saturating_sub(idle),
        }
    }
}

/// Reads one Redis server's command counters and CPU time.
pub(crate) struct RedisProbe {
    conn: redis::aio::MultiplexedConnection,
    /// The server's process id, when it runs on this machine (`INFO server` process_id whose
    /// `/proc/PID/comm` is redis-server).
    pid: Option<u32>,
}

/// Redis counters at one moment.
#[derive(Clone, Debug)]
pub(crate) struct RedisSnapshot {
    calls: BTreeMap<String, u64>,
    cpu_ms: Option<f64>,
}

/// What Redis did between two snapshots.
#[derive(Clone, Debug, Default)]
pub(crate) struct RedisCost {
    /// Calls per command (subcommands as `client|setname`), commands run inside scripts
    /// included.
    pub(crate) commands: BTreeMap<String, u64>,
    /// CPU time of redis-server (ms); `None` when it is not a local process.
    pub(crate) cpu_ms: Option<f64>,
}

impl RedisCost {
    /// Every call of every command.
    pub(crate) fn total(&self) -> u64 {
        self.commands.values().sum()
    }

    /// The `k` most called commands, most called first.
    pub(crate) fn top(&self, k: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .commands
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (c.clone(), *n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}

impl RedisProbe {
    /// Connects to the Redis at `url` and finds its process.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<RedisProbe> {
        let client = redis::Client::open(url)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("cannot connect to Redis at {url}"))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|pid| process_name(*pid).is_some_and(|n| n.starts_with("redis-server")));
        Ok(RedisProbe { conn, pid })
    }

    /// The counters now: one `INFO commandstats` and redis-server's CPU time.
    pub(crate) async fn snapshot(&mut self) -> anyhow::Result<RedisSnapshot> {
        let cpu_ms = self.pid.and_then(process_cpu_ms);
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await?;
        let calls = info
            .lines()
            .filter_map(|l| {
                let (name, fields) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect();
        Ok(RedisSnapshot { calls, cpu_ms })
    }
}

/// What Redis did from `before` to `after`, less the probe's own `INFO` of `before` (a
/// command is counted once it has run, so that one shows up in `after`).
pub(crate) fn redis_cost(before: &RedisSnapshot, after: &RedisSnapshot) -> RedisCost {
    let mut commands: BTreeMap<String, u64> = after
        .calls
        .iter()
        .map(|(c, n)| {
            (
                c.clone(),
                n.saturating_sub(before.calls.get(c).copied().unwrap_or(0)),
            )
        })
        .collect();
    if let Some(info) = commands.get_mut("info") {
        *info = info.saturating_sub(1);
    }
    commands.retain(|_, n| *n > 0);
    RedisCost {
        commands,
        cpu_ms: after.cpu_ms.zip(before.cpu_ms).map(|(a, b)| a - b),
    }
}

/// CPU time of the processes taking part in a run (the server, its Redis and Postgres, this
/// process with its clients and upstream, a peer), to tell their load from that of anything
/// else on the machine (another build, another test run), which competes with them.
pub(crate) struct Participants {
    pids: Vec<u32>,
    postgres: Option<postgres::PgProbe>,
    exclude: Vec<u32>,
}

/// [`Participants`]' CPU time and the machine's counters at one moment.
pub(crate) struct ParticipantsSample {
    at: std::time::Instant,
    machine: MachineCpu,
    pids: BTreeMap<u32, f64>,
    postgres: BTreeMap<u32, f64>,
}

/// How busy the machine's CPU was between two samples (percent of all cores).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Load {
    /// Used by the participants.
    pub(crate) ours_percent: f64,
    /// Used by every other process.
    pub(crate) others_percent: f64,
}

impl Load {
    /// Everything together.
    pub(crate) fn busy_percent(&self) -> f64 {
        self.ours_percent + self.others_percent
    }
}

impl Participants {
    /// This process and `pids`, plus the Postgres processes `postgres` counts (leaving out the
    /// backends in `exclude`).
    pub(crate) fn new(
        pids: impl IntoIterator<Item = u32>,
        postgres: Option<postgres::PgProbe>,
        exclude: Vec<u32>,
    ) -> Participants {
        let mut pids: Vec<u32> = pids.into_iter().collect();
        pids.push(std::process::id());
        Participants {
            pids,
            postgres,
            exclude,
        }
    }

    /// Adds a process (e.g. a peer once started).
    pub(crate) fn add(&mut self, pid: u32) {
        self.pids.push(pid);
    }

    /// CPU times now.
    pub(crate) async fn sample(&mut self) -> anyhow::Result<ParticipantsSample> {
        let postgres = match self.postgres.as_mut() {
            Some(p) => p.cpu(&self.exclude).await?,
            None => BTreeMap::new(),
        };
        Ok(ParticipantsSample {
            at: std::time::Instant::now(),
            machine: MachineCpu::now(),
            pids: self
                .pids
                .iter()
                .filter_map(|pid| Some((*pid, process_cpu_ms(*pid)?)))
                .collect(),
            postgres,
        })
    }
}

/// The load between two samples; a process missing from `before` counts from zero.
pub(crate) fn load(before: &ParticipantsSample, after: &ParticipantsSample) -> Load {
    let capacity_ms = after.at.duration_since(before.at).as_secs_f64()
        * 1000.0
        * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    if capacity_ms <= 0.0 {
        return Load::default();
    }
    let ours_ms =
        cpu_delta(&before.pids, &after.pids) + cpu_delta(&before.postgres, &after.postgres);
    let busy_ms =
        after.machine.busy.saturating_sub(before.machine.busy) as f64 * 1000.0 / ticks_per_second();
    let ours = (100.0 * ours_ms / capacity_ms).min(100.0);
    let busy = (100.0 * busy_ms / capacity_ms).min(100.0);
    Load {
        ours_percent: ours,
        others_percent: (busy - ours).max(0.0),
    }
}
