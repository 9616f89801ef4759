//! bootfactory's memory and CPU, from `/proc`.

use super::*;

/// Memory figures of a process from `/proc/<pid>/status`, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mem {
    /// `VmRSS`: resident now.
    pub(crate) rss: u64,
    /// `VmHWM`: peak resident since start or the last reset.
    pub(crate) hwm: u64,
    /// `RssAnon`: heap, stacks (what the process allocated).
    pub(crate) anon: u64,
    /// `RssFile`: mapped files (binary, libraries, mmapped blobs).
    pub(crate) file: u64,
}

pub(crate) fn mem(pid: u32) -> Option<Mem> {
    let [rss, hwm, anon, file] =
        support::procfs::status_fields(pid, ["VmRSS:", "VmHWM:", "RssAnon:", "RssFile:"]);
    Some(Mem {
        rss: rss?,
        hwm: hwm?,
        anon: anon.unwrap_or(0),
        file: file.unwrap_or(0),
    })
}

/// Resets `VmHWM` to the current RSS (`echo 5 > /proc/<pid>/clear_refs`).
pub(crate) fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// User + system CPU seconds of `pid` (all its threads, living and gone).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of the threads of `pid` named `name` (e.g. the TFTP server's `tftp` thread).
pub(crate) fn thread_cpu_seconds(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| stat_cpu_seconds(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// utime + stime of a `/proc/.../stat` file, seconds.
pub(crate) fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / hz,
        _ => f64::NAN,
    }
}

/// Samples the memory of `pid` every [`SAMPLE_EVERY`] and keeps the largest of each figure.
pub(crate) struct RssSampler {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<std::thread::JoinHandle<Mem>>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut max = Mem::default();
                loop {
                    if let Some(m) = mem(pid) {
                        max.rss = max.rss.max(m.rss);
                        max.hwm = max.hwm.max(m.hwm);
                        max.anon = max.anon.max(m.anon);
                        max.file = max.file.max(m.file);
                    }
                    if stop.load(Ordering::Relaxed) {
                        return max;
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the largest figures seen.
    pub(crate) fn finish(mut self) -> Mem {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// UDP counters of a network namespace, from a `/proc/.../net/snmp` file.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UdpCounters {
    /// `InErrors`: datagrams not delivered (includes the two below).
    pub(crate) in_errors: u64,
    /// `RcvbufErrors`: dropped because the socket's receive buffer was full.
    pub(crate) rcvbuf_errors: u64,
    /// `SndbufErrors`: sends refused for want of send buffer.
    pub(crate) sndbuf_errors: u64,
}

impl UdpCounters {
    /// Reads `path` (`/proc/<pid>/net/snmp`: the namespace of that process;
    /// `/proc/thread-self/net/snmp`: the calling thread's).
    pub(crate) fn read(path: &str) -> UdpCounters {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return UdpCounters::default();
        };
        let get = |name: &str| {
            names
                .split_whitespace()
                .position(|n| n == name)
                .and_then(|i| values.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        UdpCounters {
            in_errors: get("InErrors"),
            rcvbuf_errors: get("RcvbufErrors"),
            sndbuf_errors: get("SndbufErrors"),
        }
    }

    /// Counts since `before`.
    pub(crate) fn since(self, before: UdpCounters) -> UdpCounters {
        UdpCounters {
            in_errors: self.in_errors.saturating_sub(before.in_errors),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
        }
    }
}
