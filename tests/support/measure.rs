//! What the benchmarks measure with: percentiles, a daemon's memory, the store's usage, the
//! kernel's memory, and the re-exec into a private mount namespace they all start with.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Re-executes this binary inside a private mount namespace (once: `flag` marks the inner run)
/// and exits with its status; returns in the inner run. Per-call info logs would be measured
/// too, so the daemon logs at warn unless RUST_LOG says otherwise.
pub fn reexec_in_private_mount_namespace(flag: &str) {
    if std::env::var_os(flag).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("bench binary path");
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(flag, "1")
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .status()
        .expect("run unshare (needs root)");
    std::process::exit(status.code().unwrap_or(1));
}

/// The words after the binary that are not flags (`cargo bench` passes `--bench`): sections.
pub fn sections() -> Vec<String> {
    std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// VmHWM: the peak resident set size, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// CPU time (user + system) the process has used so far, from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("(comm)").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// Established TCP connections of process `pid` to `port` (on any address): its sockets'
/// inodes (/proc/<pid>/fd) matched against the kernel's table (/proc/<pid>/net/tcp, tcp6).
pub fn tcp_connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let established = "01";
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields.get(2).and_then(|remote| remote.rsplit_once(':'));
            remote_port.and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok()) == Some(port)
                && fields.get(3) == Some(&established)
                && fields.get(9).is_some_and(|inode| inodes.contains(*inode))
        })
        .count()
}

/// VmRSS: the resident set size now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Pages in use on the filesystem of `path` (a tmpfs: its content).
pub fn used_bytes(path: &Path) -> u64 {
    let vfs = nix::sys::statvfs::statvfs(path).expect("statvfs of the store");
    (vfs.blocks() - vfs.blocks_free()) as u64 * vfs.fragment_size() as u64
}

/// (Shmem, Slab = SReclaimable + SUnreclaim) from /proc/meminfo, in KiB: tmpfs pages, and the
/// inodes and dentries that `df` does not count.
pub fn shmem_and_slab_kib() -> (u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Shmem:"), field("SReclaimable:") + field("SUnreclaim:"))
}

/// Shmem + Slab, in KiB: the kernel memory a tmpfs's content costs.
pub fn kernel_kib() -> u64 {
    let (shmem, slab) = shmem_and_slab_kib();
    shmem + slab
}

/// The `pct` percentile of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * pct).div_ceil(100).saturating_sub(1);
    sorted[rank.min(sorted.len() - 1)]
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `value` as a multiple of `baseline`.
pub fn ratio(value: Duration, baseline: Duration) -> f64 {
    value.as_secs_f64() / baseline.as_secs_f64().max(f64::MIN_POSITIVE)
}
