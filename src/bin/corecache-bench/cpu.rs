//! CPU time of a process from /proc/PID/stat: utime and stime, all threads included.

use std::io;
use std::ops::Sub;

/// CPU seconds a process spent in user space and in the kernel.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
}

impl CpuTimes {
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

impl Sub for CpuTimes {
    type Output = CpuTimes;
    fn sub(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// CPU time used so far by process `pid` (all its threads).
pub fn process_cpu_times(pid: u32) -> io::Result<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (utime, stime) = parse_stat(&stat).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad /proc/{pid}/stat"))
    })?;
    let tick = clock_ticks();
    Ok(CpuTimes {
        user: utime as f64 / tick,
        system: stime as f64 / tick,
    })
}

/// This process's CPU seconds (the load generator's own cost).
pub fn self_cpu_seconds() -> f64 {
    process_cpu_times(std::process::id()).map_or(0.0, CpuTimes::total)
}

fn clock_ticks() -> f64 {
    let t = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(0);
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (utime, stime) in clock ticks. Fields 14 and 15 of the line; the command name
/// (field 2) is in parentheses and may contain spaces, so count after the last ')'.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line =
            "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat(line), Some((250, 75)));
        assert!(process_cpu_times(std::process::id()).is_ok());
    }
}
