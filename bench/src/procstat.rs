//! Resource use of a process from `/proc`: peak resident set (VmHWM) and CPU seconds
//! (utime + stime), plus the machine's load average.

use std::sync::OnceLock;

/// One reading of a process.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProcSample {
    pub pid: u32,
    /// Peak resident set size (`VmHWM`) in MiB.
    pub peak_rss_mib: f64,
    /// Current resident set size (`VmRSS`) in MiB.
    pub rss_mib: f64,
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
}

impl ProcSample {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`; `None` when the process is gone.
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(Self {
            pid,
            peak_rss_mib: kib("VmHWM:") / 1024.0,
            rss_mib: kib("VmRSS:") / 1024.0,
            cpu_seconds: cpu_ticks(&stat)? as f64 / clock_ticks(),
        })
    }
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted after its last `)`: state is then field 0, utime 11,
/// stime 12.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `getconf CLK_TCK` (100 on Linux unless configured otherwise).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds of every process whose command name is `postgres` (the whole server: every
/// backend, also those serving other databases on this machine).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if stat.contains("(postgres)") {
            ticks += cpu_ticks(&stat).unwrap_or(0);
        }
    }
    ticks as f64 / clock_ticks()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [it.next().unwrap_or(0.0), it.next().unwrap_or(0.0), it.next().unwrap_or(0.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (tokio (rt) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_has_a_peak_resident_set_and_cpu_time() {
        let me = ProcSample::read(std::process::id()).unwrap();
        assert!(me.peak_rss_mib > 0.0);
        assert!(me.peak_rss_mib >= me.rss_mib);
    }
}
