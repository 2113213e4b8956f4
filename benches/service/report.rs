//! The results: one table row per figure (beside its baseline and target), free-form sections
//! after the table, and the raw figures as JSON; written to `results.md` and `results.json`.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

/// One row of the results table.
pub(crate) struct Row {
    scenario: String,
    metric: String,
    baseline: String,
    measured: String,
    target: String,
    met: Option<bool>,
}

/// A row; `met` is `None` when the figure has no target (or cannot be judged).
pub(crate) fn row(
    scenario: &str,
    metric: &str,
    baseline: impl Into<String>,
    measured: impl Into<String>,
    target: &str,
    met: Option<bool>,
) -> Row {
    Row {
        scenario: scenario.into(),
        metric: metric.into(),
        baseline: baseline.into(),
        measured: measured.into(),
        target: target.into(),
        met,
    }
}

/// Everything a run measured.
#[derive(Default)]
pub(crate) struct Report {
    /// The table, in the order the scenarios ran.
    pub(crate) rows: Vec<Row>,
    /// Raw figures per scenario, for results.json.
    pub(crate) raw: BTreeMap<String, Value>,
    /// Markdown printed after the table (titled breakdowns such as Redis commands per job).
    pub(crate) sections: Vec<String>,
}

impl Report {
    /// Adds a row.
    pub(crate) fn push(&mut self, r: Row) {
        self.rows.push(r);
    }

    /// Prints the table and writes `out/results.md` and `out/results.json`.
    pub(crate) fn write(&self, full: bool, out: &Path) -> anyhow::Result<()> {
        let machine = machine();
        let mut md = format!(
            "Machine: {machine}. Scale: {}. llm-jobs {} (`{}` profile).\n\n",
            if full { "full" } else { "quick (smoke)" },
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        md.push_str(
            "| Scenario | Metric | Baseline | llm-jobs | Target | Met |\n|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.scenario,
                r.metric,
                r.baseline,
                r.measured,
                r.target,
                // Targets are for the full scale on a release build; a smoke run judges nothing.
                match (full, r.met) {
                    (true, Some(true)) => "yes",
                    (true, Some(false)) => "**no**",
                    _ => "-",
                }
            ));
        }
        for s in &self.sections {
            md.push('\n');
            md.push_str(s);
        }
        println!("\n{md}");
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join("results.md"), &md)?;
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(
                &json!({"machine": machine, "full": full, "scenarios": self.raw}),
            )?,
        )?;
        eprintln!("wrote {}", out.join("results.md").display());
        Ok(())
    }
}

/// Cores, CPU model and memory of this machine.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({cpu}), {mem} memory")
}
