//! This process's resident memory and CPU use, for the worker registry and job progress
//! (read from Linux's `/proc/self` by [`crate::metrics::process`]). Elsewhere the figures are
//! absent.

use std::time::Instant;

use crate::metrics::process::{self, TICKS_PER_SECOND};

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
        let rss = process::resident_bytes().map(|b| b as f64 / (1024.0 * 1024.0));
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
    process::cpu_ticks().map(|(user, system)| user + system)
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
