//! How the CLI looks: colour for job statuses and errors, and tables whose columns fit their
//! widest cell. Colour is written with ANSI codes and printed through `anstream`, which drops
//! the codes when the stream is not a terminal or `NO_COLOR` is set (and keeps them with
//! `CLICOLOR_FORCE`), so piped output and files stay plain text.
//!
//! Environment variables read (by `anstream`): `NO_COLOR`, `CLICOLOR`, `CLICOLOR_FORCE`,
//! `TERM`.

use std::io::Write;

use anstyle::{AnsiColor, Style};

/// The `error` that starts an error message.
pub const ERROR: Style = AnsiColor::Red.on_default().bold();

/// `text` in `style` (the codes are dropped on print where colour is off).
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// A job status as shown (`completed`, `failed`, …), coloured by what it means: green done,
/// red failed, yellow cancelled, cyan running; queued and unknown ones plain.
pub fn status(name: &str) -> String {
    let style = match name {
        "completed" => AnsiColor::Green.on_default(),
        "failed" => AnsiColor::Red.on_default(),
        "cancelled" => AnsiColor::Yellow.on_default(),
        "running" => AnsiColor::Cyan.on_default(),
        _ => Style::new(),
    };
    paint(style, name)
}

/// Rows of tab-separated cells as aligned columns two spaces apart, each as wide as its
/// widest cell (colour codes not counted), one line per row.
pub fn table(rows: impl IntoIterator<Item = String>) -> String {
    let mut out = tabwriter::TabWriter::new(Vec::new()).padding(2).ansi(true);
    for row in rows {
        // Writes into memory cannot fail.
        let _ = writeln!(out, "{row}");
    }
    out.into_inner()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{status, table};

    #[test]
    fn columns_fit_the_widest_cell_whatever_its_colour() {
        let long = "openai-a_very_long_job_type_name-urgent";
        let text = table([
            "JOB\tSTATUS\tQUEUE\tATTEMPTS".to_owned(),
            format!("a\t{}\topenai-general\t1", status("completed")),
            format!("b\t{}\t{long}\t2", status("failed")),
        ]);
        let plain = text
            .replace("\u{1b}[32m", "")
            .replace("\u{1b}[31m", "")
            .replace("\u{1b}[0m", "");
        let lines: Vec<&str> = plain.lines().collect();
        let column = |line: &str, at: &str| line.find(at).expect("the cell is there");
        assert_eq!(lines.len(), 3, "{plain}");
        assert_eq!(
            column(lines[0], "ATTEMPTS"),
            column(lines[2], "2"),
            "{plain}"
        );
        assert_eq!(column(lines[1], "1"), column(lines[2], "2"), "{plain}");
        assert_eq!(
            column(lines[0], "QUEUE"),
            column(lines[1], "openai-general")
        );
        assert_eq!(
            column(lines[0], "ATTEMPTS"),
            column(lines[0], "QUEUE") + long.len() + 2
        );
    }

    #[test]
    fn statuses_are_coloured_by_meaning() {
        assert_eq!(status("completed"), "\u{1b}[32mcompleted\u{1b}[0m");
        assert_eq!(status("failed"), "\u{1b}[31mfailed\u{1b}[0m");
        assert_eq!(status("queued"), "queued");
    }
}
