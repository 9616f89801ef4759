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
        "| storm | booted | total p50 (s) | p95 (s) | max (s) | wall (s) | MB moved | MB/s | DHCP resends | TFTP resends |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
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
        println!(
            "| {}{} | {}/{} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {} | {} |",
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
            println!("  FAILED: {} machines; first failures:", r.failures.len());
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
