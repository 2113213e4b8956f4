//! This process's resident memory and CPU use, read from Linux's `/proc/self` (see proc(5):
//! `statm` field 2 is resident pages; `stat` fields 14 and 15 are user and system time in
//! clock ticks). Elsewhere the figures are absent.

use std::time::Instant;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on every mainstream Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// Page size of `statm` (4 KiB on x86-64 and most aarch64 kernels).
const PAGE_BYTES: f64 = 4096.0;

/// Samples CPU use between calls.
#[derive(Debug)]
pub struct Sampler {
    last: Option<(Instant, u64)>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            last: cpu_ticks().map(|t| (Instant::now(), t)),
        }
    }
}

impl Sampler {
    /// Resident memory (MiB) now, and CPU percent (of one core) since the previous sample.
    pub fn sample(&mut self) -> (Option<f64>, Option<f64>) {
        let rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)?
                    .parse::<f64>()
                    .ok()
                    .map(|pages| pages * PAGE_BYTES / (1024.0 * 1024.0))
            });
        let now = (Instant::now(), cpu_ticks());
        let cpu = match (self.last, now) {
            // Shorter windows give meaningless percentages (ticks are 10 ms).
            (Some((t0, c0)), (t1, Some(c1))) if t1 - t0 >= std::time::Duration::from_secs(1) => {
                let busy = (c1.saturating_sub(c0)) as f64 / TICKS_PER_SECOND;
                Some(100.0 * busy / (t1 - t0).as_secs_f64())
            }
            _ => None,
        };
        if let (t, Some(c)) = now
            && (cpu.is_some() || self.last.is_none())
        {
            self.last = Some((t, c));
        }
        (rss, cpu)
    }
}

fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_memory_and_cpu_of_this_process() {
        let mut s = Sampler::default();
        let (rss, cpu) = s.sample();
        assert!(rss.is_some_and(|m| m > 1.0 && m < 100_000.0), "{rss:?}");
        assert_eq!(
            cpu, None,
            "no CPU figure over a window shorter than a second"
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (_, cpu) = s.sample();
        assert!(
            cpu.is_some_and(|c| (0.0..=100.0 * 64.0).contains(&c)),
            "{cpu:?}"
        );
    }
}
