//! Figures of a process read from `/proc`.

/// The numeric value of each of `names` (e.g. `"VmRSS:"`) in `/proc/<pid>/status`, in KiB for
/// the memory fields; `None` for a field the file lacks, all `None` when the process is gone.
pub fn status_fields<const N: usize>(pid: u32, names: [&str; N]) -> [Option<u64>; N] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    names.map(|name| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    })
}
