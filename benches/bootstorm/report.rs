//! The report printed after the storms.

use super::*;
use crate::support::stats::{percentile, sorted};

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn print_report(results: &[StormResult], settings: &Settings, setup: &SetupInfo) {
    println!();
    println!(
        "Boot storm: {} simulated x86-64 UEFI machines at once, DHCP → TFTP {} → iPXE DHCP → \
         boot script → /pxe → kernel + initramfs; fixture {} {VERSION}, schematic with {}; \
         bootfactory {} (release), log level {}",
        settings.clients,
        bootfactory::ipxe::EFI_X64,
        settings.profile,
        EXTENSIONS.join(" + "),
        setup.binary.display(),
        settings.log_level,
    );
    println!(
        "Setup: fixture {:.1} s, import {:.1} s, server ready {:.1} s after start; bootfactory \
         VmHWM {:.1} MiB before the storms, {:.1} MiB at the end (since the reset before the \
         last storm)",
        setup.fixture_s,
        setup.import_s,
        setup.ready_s,
        mib(setup.startup_hwm),
        mib(setup.final_hwm)
    );
    println!();
    println!(
        "| storm | booted | total p50 (s) | p95 (s) | max (s) | wall (s) | MB moved | MB/s | DHCP resends | TFTP resends | TFTP busy, asked again |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let totals: Vec<f64> = r.reports.iter().map(|m| m.total.as_secs_f64()).collect();
        let max = sorted(&totals).last().copied().unwrap_or(f64::NAN);
        let bytes: u64 = r
            .reports
            .iter()
            .map(|m| m.tftp_bytes + m.kernel_bytes + m.initrd_bytes)
            .sum();
        let dhcp: u32 = r.reports.iter().map(|m| m.dhcp_resends).sum();
        let tftp: u32 = r.reports.iter().map(|m| m.tftp_resends).sum();
        let busy: u32 = r.reports.iter().map(|m| m.tftp_busy).sum();
        println!(
            "| {}{} | {}/{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {} | {} | {} |",
            r.name,
            if r.gated { " (gate)" } else { "" },
            r.reports.len(),
            r.clients,
            percentile(&totals, 50.0),
            percentile(&totals, 95.0),
            max,
            r.wall.as_secs_f64(),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / r.wall.as_secs_f64(),
            dhcp,
            tftp,
            busy,
        );
    }
    println!();
    println!(
        "| storm | bf peak RSS, VmHWM (MiB) | max sampled VmRSS (MiB) | max RssAnon (MiB) | max RssFile (MiB) | VmRSS before (MiB) | VmRSS after (MiB) | bf CPU (s) | of which tftp thread (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {:.1}{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.name,
            mib(r.mem_after.hwm),
            if r.hwm_reset { "" } else { " (not reset)" },
            mib(r.mem_sampled.rss),
            mib(r.mem_sampled.anon),
            mib(r.mem_sampled.file),
            mib(r.mem_before.rss),
            mib(r.mem_after.rss),
            r.cpu,
            r.tftp_cpu,
        );
    }
    println!();
    print!("| stage |");
    for r in results {
        print!(" {} p50 (s) | {} p95 (s) |", r.name, r.name);
    }
    println!();
    print!("|---|");
    for _ in results {
        print!("---:|---:|");
    }
    println!();
    for (i, stage) in STAGES.iter().enumerate() {
        print!("| {stage} |");
        for r in results {
            let v: Vec<f64> = r
                .reports
                .iter()
                .map(|m| m.stages[i].as_secs_f64())
                .collect();
            print!(
                " {:.3} | {:.3} |",
                percentile(&v, 50.0),
                percentile(&v, 95.0)
            );
        }
        println!();
    }
    println!();
    for r in results {
        let distinct = |f: fn(&MachineReport) -> u64| {
            let mut v: Vec<u64> = r.reports.iter().map(f).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let blk = {
            let mut v: Vec<usize> = r.reports.iter().map(|m| m.tftp_blksize).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        println!(
            "{}: sizes ipxe.efi {:?} (blksize {:?}), kernel {:?}, initramfs {:?}; late DHCP replies {}",
            r.name,
            distinct(|m| m.tftp_bytes),
            blk,
            distinct(|m| m.kernel_bytes),
            distinct(|m| m.initrd_bytes),
            r.strays
        );
        println!(
            "  UDP drops: bootfactory's namespace InErrors {} (receive buffer full {}, send buffer {}); machines' namespace InErrors {} (receive buffer full {})",
            r.udp_server.in_errors,
            r.udp_server.rcvbuf_errors,
            r.udp_server.sndbuf_errors,
            r.udp_clients.in_errors,
            r.udp_clients.rcvbuf_errors,
        );
        let get = |name: &str, kind: &str| {
            r.assets
                .get(&(name.to_string(), kind.to_string()))
                .copied()
                .unwrap_or(0)
        };
        for kind in ["kernel", "initramfs"] {
            let built = get("built_total", kind);
            let cached = get("delivered_cached_total", kind);
            let joined = (r.reports.len() as u64).saturating_sub(built + cached);
            println!(
                "  {kind}: built {built}, served from cache {cached}, joined the build in flight {joined} (of {} requests; joined = requests - built - cached)",
                r.reports.len()
            );
        }
        if !r.failures.is_empty() {
            // By kind: the message with its numbers (indices, sizes, digests) left out.
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for (_, e) in &r.failures {
                *kinds.entry(failure_kind(e)).or_default() += 1;
            }
            println!("  FAILED: {} machines, by kind:", r.failures.len());
            for (kind, n) in &kinds {
                println!("    {n} × {kind}");
            }
            println!("  first failures:");
            for (idx, e) in r.failures.iter().take(10) {
                println!("    machine {idx}: {e}");
            }
        }
    }
    println!(
        "bootfactory log: {} lines, {} WARN/ERROR",
        setup.log_lines,
        setup.log_problems.len()
    );
    for l in setup.log_problems.iter().take(10) {
        println!("  {l}");
    }
}

/// One storm of one run, for the scaling table.
pub(crate) struct ScaleRow {
    profile: SizeProfile,
    storm: &'static str,
    clients: usize,
    booted: usize,
    resends: u32,
    busy: u32,
    wall: f64,
    bytes: u64,
    /// VmHWM of the storm (reset before it) and VmRSS before the run's first storm, KiB.
    hwm: u64,
    rss_before: u64,
    anon_max: u64,
    cpu: f64,
}

impl ScaleRow {
    /// `baseline`: bootfactory's VmRSS before the run's first storm, KiB.
    pub(crate) fn new(run: &Settings, r: &StormResult, baseline: u64) -> ScaleRow {
        ScaleRow {
            profile: run.profile,
            storm: r.name,
            clients: r.clients,
            booted: r.reports.len(),
            resends: r
                .reports
                .iter()
                .map(|m| m.dhcp_resends + m.tftp_resends)
                .sum(),
            busy: r.reports.iter().map(|m| m.tftp_busy).sum(),
            wall: r.wall.as_secs_f64(),
            bytes: r
                .reports
                .iter()
                .map(|m| m.tftp_bytes + m.kernel_bytes + m.initrd_bytes)
                .sum(),
            hwm: r.mem_after.hwm,
            rss_before: baseline,
            anon_max: r.mem_sampled.anon,
            cpu: r.cpu,
        }
    }

    /// Wall time per machine, ms.
    fn wall_per_machine(&self) -> f64 {
        self.wall * 1000.0 / self.clients as f64
    }

    /// Peak RSS above the RSS before the first storm, per machine, KiB (the allocator keeps
    /// much of a storm's memory, so the RSS before a warm storm is no baseline).
    fn rss_per_machine(&self) -> f64 {
        self.hwm.saturating_sub(self.rss_before) as f64 / self.clients as f64
    }
}

/// The scaling table: per storm, wall time and peak RSS against the number of machines, with
/// the cost per machine, and how that cost compares with the smallest run of the same fixture
/// and storm (≤ 1.0: linear or better).
pub(crate) fn print_scaling(rows: &[ScaleRow]) {
    println!();
    println!(
        "Scaling (per storm; RSS/machine = (VmHWM − VmRSS before the first storm of the run) / machines; \
         ×first = per-machine cost over that of the fewest machines of the same fixture and storm):"
    );
    println!();
    println!(
        "| fixture | storm | machines | booted | resends | TFTP busy | wall (s) | wall/machine (ms) | ×first | MB/s | VmHWM (MiB) | RssAnon max (MiB) | RSS/machine (KiB) | ×first | bf CPU (s) | CPU/machine (ms) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let first = rows
            .iter()
            .filter(|o| o.profile == row.profile && o.storm == row.storm)
            .min_by_key(|o| o.clients)
            .unwrap_or(row);
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} |",
            row.profile,
            row.storm,
            row.clients,
            row.booted,
            row.resends,
            row.busy,
            row.wall,
            row.wall_per_machine(),
            row.wall_per_machine() / first.wall_per_machine(),
            row.bytes as f64 / 1e6 / row.wall,
            mib(row.hwm),
            mib(row.anon_max),
            row.rss_per_machine(),
            row.rss_per_machine() / first.rss_per_machine(),
            row.cpu,
            row.cpu * 1000.0 / row.clients as f64,
        );
    }
}

/// A failure message with every word that holds a digit replaced by `#`, so that failures of
/// one kind (different machines, ports, byte counts) count together.
pub(crate) fn failure_kind(e: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in e.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}
