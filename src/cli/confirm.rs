//! Consent for commands that delete or change many things at once (`cleanup`, `admin retry`
//! and `admin forget` without ids): `--dry-run` shows what would be touched, `--yes` goes
//! ahead, and otherwise a person at a terminal is asked. Without a terminal and without
//! `--yes` nobody can answer, so the command refuses before it touches anything.

use std::io::{BufRead, IsTerminal, Write};

/// `--yes` and `--dry-run`, flattened into each destructive command.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Consent {
    /// Go ahead without asking (needed where standard input is not a terminal: scripts,
    /// cron, CI).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print what would be touched (how many, oldest and newest) and change nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

/// Whether to go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `--yes`: go ahead without asking.
    Given,
    /// Ask first ([`Consent::ask`]): a person is at a terminal.
    Ask,
    /// `--dry-run`: show, change nothing.
    DryRun,
}

impl Consent {
    /// What to do for a command that would `act` (e.g. "delete jobs"), decided before
    /// anything is read or changed.
    ///
    /// Errors: standard input is not a terminal and neither `--yes` nor `--dry-run` was
    /// given: the message says to pass `--yes`.
    pub fn answer(&self, act: &str) -> anyhow::Result<Answer> {
        self.answer_for(act, std::io::stdin().is_terminal())
    }

    fn answer_for(&self, act: &str, terminal: bool) -> anyhow::Result<Answer> {
        match (self.dry_run, self.yes, terminal) {
            (true, _, _) => Ok(Answer::DryRun),
            (false, true, _) => Ok(Answer::Given),
            (false, false, true) => Ok(Answer::Ask),
            (false, false, false) => anyhow::bail!(
                "refusing to {act} without confirmation: standard input is not a terminal, so \
                 nobody can be asked; pass --yes to go ahead (--dry-run shows what it would \
                 touch)"
            ),
        }
    }

    /// Asks `question` on the terminal (standard error, answered on standard input).
    ///
    /// Errors: the answer is not yes (`nothing` says what was left alone), or the terminal
    /// cannot be read.
    pub fn ask(question: &str, nothing: &str) -> anyhow::Result<()> {
        let yes = ask(
            question,
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        )?;
        anyhow::ensure!(yes, "not confirmed: {nothing}");
        Ok(())
    }
}

/// Writes `question [y/N] ` to `output` and reads one line of `input`: true for `y` or `yes`
/// (any case), false for anything else, an empty line or the end of the input.
pub fn ask(
    question: &str,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<bool> {
    write!(output, "{question} [y/N] ")?;
    output.flush()?;
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        // Ctrl-D: leave the prompt's line.
        writeln!(output)?;
        return Ok(false);
    }
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::{Answer, Consent, ask};

    #[test]
    fn only_yes_goes_ahead() {
        for (typed, expected) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \r\n", true),
            ("n\n", false),
            ("\n", false),
            ("yep\n", false),
            ("", false),
        ] {
            let mut shown = Vec::new();
            let answer = ask("Delete 3 jobs?", &mut typed.as_bytes(), &mut shown)
                .expect("in-memory reads and writes do not fail");
            assert_eq!(answer, expected, "{typed:?}");
            assert!(
                String::from_utf8_lossy(&shown).starts_with("Delete 3 jobs? [y/N] "),
                "{typed:?}"
            );
        }
    }

    #[test]
    fn without_a_terminal_only_yes_or_a_dry_run_proceed() {
        let none = Consent::default();
        let e = none
            .answer_for("delete jobs", false)
            .expect_err("nobody to ask");
        assert!(e.to_string().contains("pass --yes"), "{e}");
        assert_eq!(
            none.answer_for("delete jobs", true).expect("a terminal"),
            Answer::Ask
        );
        let yes = Consent {
            yes: true,
            dry_run: false,
        };
        assert_eq!(yes.answer_for("x", false).expect("--yes"), Answer::Given);
        // A dry run changes nothing, so it needs no consent, and wins over --yes.
        for yes in [false, true] {
            let dry = Consent { yes, dry_run: true };
            assert_eq!(
                dry.answer_for("x", false).expect("--dry-run"),
                Answer::DryRun
            );
        }
    }
}
