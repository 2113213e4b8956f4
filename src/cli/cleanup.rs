//! `llm-jobs cleanup`: delete jobs that ended long ago, with their results and history, in
//! batches, on the store directly (no server needed). The age needs a unit; `--dry-run` counts
//! what would go; a terminal is asked first unless `--yes` ([`super::confirm`]).

use chrono::{DateTime, SecondsFormat, Utc};

use super::confirm::{Answer, Consent};
use crate::store::Deletable;

/// `cleanup` arguments.
#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub database: crate::config::Database,
    /// Age of the jobs to delete, with its unit: `30d`, `12h`, `90m` or `45s` (by when they
    /// ended); more than zero.
    #[arg(long = "older-than", value_parser = parse_age, allow_hyphen_values = true)]
    pub older_than: std::time::Duration,
    /// Jobs deleted per statement.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    pub batch: i64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub consent: Consent,
}

/// `30d`, `12h`, `90m`, `45s` as a duration. A bare number is refused: whether `30` meant
/// seconds or days is a guess, and a wrong guess deletes the wrong jobs. Zero is refused, since
/// an age of zero would delete every job that has ended (refused at parse time, as other zeros
/// that cannot be meant are: exit 2, naming the flag).
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    nonzero_age(
        s,
        "would delete every job that has ended: give an age above zero, e.g. 30d",
    )
}

/// `--since` of `admin audit`: an age as [`parse_age`] reads it. Zero is refused too, as it
/// would select nothing.
pub fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    nonzero_age(s, "would select nothing: give an age above zero, e.g. 90m")
}

/// An age with its unit; zero is refused with `zero` (what it would do) after the value.
fn nonzero_age(s: &str, zero: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a number and a unit (d, h, m, s), got {s:?}"))?;
    if n == 0 {
        return Err(format!("{s:?} {zero}"));
    }
    let unit_secs: u64 = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        "" => {
            return Err(format!(
                "{s:?} has no unit: say {s}d, {s}h, {s}m or {s}s (a bare number is not read as \
                 seconds)"
            ));
        }
        other => return Err(format!("unknown unit {other:?}: use d, h, m or s")),
    };
    // Ages beyond a hundred thousand years are typos (and would overflow the date arithmetic).
    n.checked_mul(unit_secs)
        .filter(|secs| *secs <= 100_000 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long ago (at most 100000 years)"))
}

/// A time as the CLI prints it: RFC 3339 in UTC, to the second.
fn when(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What would go, in one line: `3 job(s) that ended before B (the oldest ended at O, the
/// newest at N)`.
fn describe(d: &Deletable, before: DateTime<Utc>) -> String {
    let span = match (d.oldest, d.newest) {
        (Some(o), Some(n)) => format!(
            " (the oldest ended at {}, the newest at {})",
            when(o),
            when(n)
        ),
        _ => String::new(),
    };
    format!("{} job(s) that ended before {}{span}", d.jobs, when(before))
}

/// Runs `cleanup`. Errors: no consent (see [`Consent::answer`]), a declined question, or the
/// store.
pub async fn run(a: CleanupArgs) -> anyhow::Result<()> {
    // Decided before the store is opened: a script without --yes changes nothing.
    let answer = a.consent.answer("delete jobs")?;
    a.database.require_existing().map_err(anyhow::Error::msg)?;
    let store = crate::store::open(&a.database).await?;
    let before = Utc::now() - chrono::Duration::from_std(a.older_than)?;
    if answer != Answer::Given {
        let d = store.deletable(before).await?;
        if d.jobs == 0 {
            println!("no job ended before {}: nothing to delete", when(before));
            return Ok(());
        }
        if answer == Answer::DryRun {
            println!(
                "would delete {} with their results and history; nothing deleted (--dry-run)",
                describe(&d, before)
            );
            return Ok(());
        }
        Consent::ask(
            &format!(
                "Delete {} with their results and history?",
                describe(&d, before)
            ),
            "nothing deleted",
        )?;
    }
    let mut total = 0;
    loop {
        let n = store.delete_finished(before, a.batch.max(1)).await?;
        total += n;
        if n == 0 {
            break;
        }
        eprintln!("deleted {total} job(s) so far");
    }
    println!(
        "deleted {total} job(s) that ended before {} (with their results and history)",
        when(before)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_age;

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_age("3 weeks").is_err());
        // Zero in any unit would delete every ended job.
        for zero in ["0", "0s", "0m", "0h", "0d", "000d"] {
            assert!(parse_age(zero).is_err(), "{zero}");
        }
        // Overflowing ages are refused, not wrapped into a recent date.
        assert!(parse_age("213503982334602d").is_err());
        assert!(parse_age("99999999999999999999s").is_err());
    }

    #[test]
    fn a_bare_number_needs_a_unit() {
        for bare in ["30", "86400"] {
            let e = parse_age(bare).expect_err("no unit");
            assert!(e.contains("no unit"), "{bare}: {e}");
        }
        let e = parse_age("30").expect_err("no unit");
        assert!(e.contains("30d") && e.contains("30s"), "{e}");
    }
}
