//! This process's resident memory, CPU time and open file descriptors, read from Linux's
//! `/proc/self` when metrics are collected (see proc(5): `statm` field 2 is resident pages;
//! `stat` fields 14 and 15 are user and system time in clock ticks; `fd/` has one entry per
//! open descriptor). Elsewhere the figures are absent and nothing is reported.
//!
//! Metrics (OpenTelemetry process conventions): `process.memory.usage` (By),
//! `process.cpu.time` (s, by `cpu.mode` user/system), `process.unix.file_descriptor.count`.

use opentelemetry::{KeyValue, metrics::Meter};

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on every mainstream Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;
/// Page size of `statm` (4 KiB on x86-64 and most aarch64 kernels).
const PAGE_BYTES: u64 = 4096;

/// Resident memory in bytes.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

/// User and system CPU time so far, in clock ticks ([`TICKS_PER_SECOND`]).
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Open file descriptors (sockets included).
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Registers the process instruments on `meter`; their callbacks read `/proc/self`.
pub(super) fn register(meter: &Meter) {
    meter
        .i64_observable_up_down_counter("process.memory.usage")
        .with_unit("By")
        .with_description("Resident memory of this process")
        .with_callback(|o| {
            if let Some(b) = resident_bytes() {
                o.observe(i64::try_from(b).unwrap_or(i64::MAX), &[]);
            }
        })
        .build();
    let user = [KeyValue::new("cpu.mode", "user")];
    let system = [KeyValue::new("cpu.mode", "system")];
    meter
        .f64_observable_counter("process.cpu.time")
        .with_unit("s")
        .with_description("CPU time this process has used")
        .with_callback(move |o| {
            if let Some((u, s)) = cpu_ticks() {
                o.observe(u as f64 / TICKS_PER_SECOND, &user);
                o.observe(s as f64 / TICKS_PER_SECOND, &system);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter("process.unix.file_descriptor.count")
        .with_unit("{file_descriptor}")
        .with_description("File descriptors this process has open")
        .with_callback(|o| {
            if let Some(n) = open_fds() {
                o.observe(i64::try_from(n).unwrap_or(i64::MAX), &[]);
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        let rss = resident_bytes().expect("statm is readable on Linux");
        assert!(rss > 1024 * 1024, "{rss}");
        let (user, system) = cpu_ticks().expect("stat is readable on Linux");
        assert!(user + system < 1_000_000_000, "{user} {system}");
        assert!(open_fds().expect("fd/ is readable on Linux") >= 3);
    }
}
