//! Server resources (the runbook's `df -h`, `free -h`, `top`): disk space and inodes per
//! mount point, memory and swap, load averages against cores, each judged against warn/crit
//! thresholds. Reads `/proc` and calls `statvfs`; nothing is started.

use crate::HostError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tej_core::{Finding, Metric, Threshold};

/// Thresholds for [`resource_findings`] (percentages; load is per core).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceThresholds {
    /// Disk space used, percent.
    pub disk: Threshold,
    /// Inodes used, percent.
    pub inodes: Threshold,
    /// Memory used (total minus available), percent.
    pub memory: Threshold,
    /// Swap used, percent.
    pub swap: Threshold,
    /// 5-minute load average divided by the number of cores.
    pub load_per_core: Threshold,
}

impl Default for ResourceThresholds {
    fn default() -> Self {
        ResourceThresholds::from(&tej_core::config::HostConfig::default())
    }
}

impl From<&tej_core::config::HostConfig> for ResourceThresholds {
    fn from(c: &tej_core::config::HostConfig) -> Self {
        ResourceThresholds {
            disk: Threshold::above(c.disk_warn_percent, c.disk_crit_percent),
            inodes: Threshold::above(c.disk_warn_percent, c.disk_crit_percent),
            memory: Threshold::above(c.memory_warn_percent, c.memory_crit_percent),
            swap: Threshold::above(50.0, 80.0),
            load_per_core: Threshold::above(1.0, 2.0),
        }
    }
}

/// Where the kernel's files are (tests point this at a fake `/proc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceOptions {
    /// The proc filesystem, normally `/proc`.
    pub proc_root: PathBuf,
    /// File-system types that are never reported (pseudo file systems).
    pub ignore_fs_types: Vec<String>,
}

impl Default for ResourceOptions {
    fn default() -> Self {
        ResourceOptions {
            proc_root: PathBuf::from("/proc"),
            ignore_fs_types: [
                "tmpfs",
                "overlay",
                "aufs",
                "shm",
                "proc",
                "procfs",
                "sysfs",
                "devpts",
                "devtmpfs",
                "cgroup",
                "cgroup2",
                "securityfs",
                "pstore",
                "debugfs",
                "tracefs",
                "mqueue",
                "hugetlbfs",
                "configfs",
                "fusectl",
                "bpf",
                "autofs",
                "binfmt_misc",
                "nsfs",
                "rpc_pipefs",
                "selinuxfs",
                "squashfs",
                "ramfs",
                "efivarfs",
                "fuse.lxcfs",
                "overlay-proc",
                "iso9660",
                "erofs",
                "nfsd",
                "fuse.gvfsd-fuse",
                "fuse.portal",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl ResourceOptions {
    /// The defaults with `[host] exclude_fs_types` from tej.toml when it is set.
    pub fn from_host(host: &tej_core::config::HostConfig) -> ResourceOptions {
        let mut o = ResourceOptions::default();
        if let Some(types) = &host.exclude_fs_types {
            o.ignore_fs_types = types.clone();
        }
        o
    }
}

/// Mount points never reported whatever their type: what lives below them belongs to the
/// kernel or to containers (node_exporter's `mount-points-exclude`).
pub const EXCLUDED_MOUNT_ROOTS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run/credentials",
    "/var/lib/docker",
    "/var/lib/containers/storage",
    "/var/lib/kubelet/pods",
    "/run/docker/netns",
    "/run/netns",
    "/snap",
];

fn excluded_mount_point(mp: &Path) -> bool {
    EXCLUDED_MOUNT_ROOTS.iter().any(|r| mp.starts_with(r))
}

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountUsage {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The device or source.
    pub device: String,
    /// File-system type.
    pub fs_type: String,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Bytes used.
    pub used_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// Used percent as `df` shows it: used / (used + available).
    pub used_percent: f64,
    /// Inodes in total (`None` where the file system has no fixed inode table).
    pub inodes_total: Option<u64>,
    /// Inodes used.
    pub inodes_used: Option<u64>,
    /// Inodes used, percent.
    pub inodes_percent: Option<f64>,
}

/// Memory and swap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryUsage {
    /// `MemTotal`, bytes.
    pub total_bytes: u64,
    /// `MemAvailable`, bytes.
    pub available_bytes: u64,
    /// (total - available) / total, percent.
    pub used_percent: f64,
    /// `SwapTotal`, bytes.
    pub swap_total_bytes: u64,
    /// Swap in use, bytes.
    pub swap_used_bytes: u64,
    /// Swap used, percent (0 without swap).
    pub swap_used_percent: f64,
}

/// Load averages.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadUsage {
    /// 1-minute load average.
    pub one: f64,
    /// 5-minute load average.
    pub five: f64,
    /// 15-minute load average.
    pub fifteen: f64,
    /// CPU cores available.
    pub cores: u32,
}

/// What [`check_resources`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// Mounted file systems.
    pub mounts: Vec<MountUsage>,
    /// Memory and swap.
    pub memory: MemoryUsage,
    /// Load.
    pub load: LoadUsage,
}

/// Decodes `/proc/mounts` octal escapes (`\040` is a space).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/mounts`: (device, mount point, type) for each real file system, once.
/// Pseudo file systems (`ignore`) and mount points below [`EXCLUDED_MOUNT_ROOTS`] are left
/// out; a later mount on the same point hides the earlier one; a device mounted at several
/// places (bind mounts) is reported at its shortest mount point. [`parse_mountinfo`] tells
/// bind mounts apart better and is preferred when the kernel provides it.
pub fn parse_mounts(text: &str, ignore: &[String]) -> Vec<(String, PathBuf, String)> {
    let mut out: Vec<(String, PathBuf, String)> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mp), Some(ty)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if ignore.iter().any(|i| i == ty) {
            continue;
        }
        let mp = PathBuf::from(unescape_mount(mp));
        if excluded_mount_point(&mp) {
            continue;
        }
        out.retain(|(_, m, _)| m != &mp);
        out.push((unescape_mount(dev), mp, ty.to_string()));
    }
    let mut keep: Vec<(String, PathBuf, String)> = Vec::new();
    for (dev, mp, ty) in out {
        match keep.iter_mut().find(|(d, _, _)| *d == dev) {
            Some(k) if mp.as_os_str().len() < k.1.as_os_str().len() => *k = (dev, mp, ty),
            Some(_) => {}
            None => keep.push((dev, mp, ty)),
        }
    }
    keep
}

/// Parses `/proc/self/mountinfo`: (source, mount point, type) for each real file system,
/// once. Pseudo file systems (`ignore`) and mount points below [`EXCLUDED_MOUNT_ROOTS`] are
/// left out; a file system mounted at several places (bind mounts, a sandbox's view of the
/// root) is reported at the mount of its root directory with the shortest path.
pub fn parse_mountinfo(text: &str, ignore: &[String]) -> Vec<(String, PathBuf, String)> {
    // (device id, is the fs root, mount point, source, type)
    let mut all: Vec<(String, bool, PathBuf, String, String)> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let r: Vec<&str> = right.split_whitespace().collect();
        if l.len() < 5 || r.len() < 2 {
            continue;
        }
        let (dev_id, root, mp) = (l[2], l[3], PathBuf::from(unescape_mount(l[4])));
        let (ty, source) = (r[0], unescape_mount(r[1]));
        if ignore.iter().any(|i| i == ty) || excluded_mount_point(&mp) {
            continue;
        }
        // A later mount on the same point hides the earlier one.
        all.retain(|(_, _, m, _, _)| m != &mp);
        all.push((dev_id.to_string(), root == "/", mp, source, ty.to_string()));
    }
    let mut out: Vec<(String, PathBuf, String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    // The root mount of each device first, then the shortest mount point.
    all.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(a.2.as_os_str().len().cmp(&b.2.as_os_str().len()))
    });
    let order: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .filter_map(|(l, _)| {
            l.split_whitespace()
                .nth(4)
                .map(|m| PathBuf::from(unescape_mount(m)))
        })
        .collect();
    for (dev, _, mp, source, ty) in all {
        if seen.contains(&dev) {
            continue;
        }
        seen.push(dev);
        out.push((source, mp, ty));
    }
    // Report in mount order.
    out.sort_by_key(|(_, mp, _)| order.iter().rposition(|m| m == mp).unwrap_or(usize::MAX));
    out
}

/// Parses `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Result<MemoryUsage, HostError> {
    let get = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let v: u64 = parts.next()?.parse().ok()?;
            Some(match parts.next() {
                Some("kB") => v.saturating_mul(1024),
                _ => v,
            })
        })
    };
    let total = get("MemTotal")
        .filter(|&t| t > 0)
        .ok_or_else(|| HostError::Internal("meminfo has no MemTotal".into()))?;
    let available = get("MemAvailable").unwrap_or_else(|| {
        get("MemFree").unwrap_or(0) + get("Buffers").unwrap_or(0) + get("Cached").unwrap_or(0)
    });
    let available = available.min(total);
    let swap_total = get("SwapTotal").unwrap_or(0);
    let swap_free = get("SwapFree").unwrap_or(0).min(swap_total);
    let swap_used = swap_total - swap_free;
    Ok(MemoryUsage {
        total_bytes: total,
        available_bytes: available,
        used_percent: (total - available) as f64 * 100.0 / total as f64,
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_used,
        swap_used_percent: if swap_total == 0 {
            0.0
        } else {
            swap_used as f64 * 100.0 / swap_total as f64
        },
    })
}

/// Parses `/proc/loadavg` (the core count is supplied).
pub fn parse_loadavg(text: &str, cores: u32) -> Result<LoadUsage, HostError> {
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>());
    match (f.next(), f.next(), f.next()) {
        (Some(Ok(one)), Some(Ok(five)), Some(Ok(fifteen)))
            if one.is_finite() && five.is_finite() && fifteen.is_finite() =>
        {
            Ok(LoadUsage {
                one,
                five,
                fifteen,
                cores: cores.max(1),
            })
        }
        _ => Err(HostError::Internal(format!(
            "cannot parse loadavg {:?}",
            text.trim()
        ))),
    }
}

/// Space and inodes of the file system holding `path` (`statvfs`).
pub fn mount_usage(path: &Path, device: &str, fs_type: &str) -> Result<MountUsage, HostError> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| HostError::io(path, std::io::Error::from_raw_os_error(e as i32)))?;
    let frsize = s.fragment_size() as u64;
    let blocks = s.blocks() as u64;
    let bfree = s.blocks_free() as u64;
    let bavail = s.blocks_available() as u64;
    let total = blocks.saturating_mul(frsize);
    let used = blocks.saturating_sub(bfree).saturating_mul(frsize);
    let avail = bavail.saturating_mul(frsize);
    let denom = used + avail;
    let files = s.files() as u64;
    let ffree = s.files_free() as u64;
    let (it, iu, ip) = if files > 0 {
        let iu = files.saturating_sub(ffree);
        (
            Some(files),
            Some(iu),
            Some(iu as f64 * 100.0 / files as f64),
        )
    } else {
        (None, None, None)
    };
    Ok(MountUsage {
        mount_point: path.to_path_buf(),
        device: device.to_string(),
        fs_type: fs_type.to_string(),
        total_bytes: total,
        used_bytes: used,
        available_bytes: avail,
        used_percent: if denom == 0 {
            0.0
        } else {
            used as f64 * 100.0 / denom as f64
        },
        inodes_total: it,
        inodes_used: iu,
        inodes_percent: ip,
    })
}

fn read(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|e| HostError::io(path, e))
}

/// Measures disks, memory and load now.
///
/// A mount point that cannot be examined (permission, stale network mount) is left out
/// rather than failing the whole check; missing `/proc` files are errors.
pub fn check_resources(opts: &ResourceOptions) -> Result<ResourceReport, HostError> {
    let mountinfo = opts.proc_root.join("self/mountinfo");
    let found = if mountinfo.exists() {
        parse_mountinfo(&read(&mountinfo)?, &opts.ignore_fs_types)
    } else {
        parse_mounts(
            &read(&opts.proc_root.join("mounts"))?,
            &opts.ignore_fs_types,
        )
    };
    let mut mounts = Vec::new();
    for (dev, mp, ty) in found {
        match mount_usage(&mp, &dev, &ty) {
            Ok(m) if m.total_bytes > 0 => mounts.push(m),
            Ok(_) => {}
            Err(e) => tracing::debug!("skipping mount {}: {e}", mp.display()),
        }
    }
    let memory = parse_meminfo(&read(&opts.proc_root.join("meminfo"))?)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let load = parse_loadavg(&read(&opts.proc_root.join("loadavg"))?, cores)?;
    Ok(ResourceReport {
        mounts,
        memory,
        load,
    })
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Findings for a [`ResourceReport`]: disk space and inodes per mount, memory, swap, load.
pub fn resource_findings(r: &ResourceReport, t: &ResourceThresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in &r.mounts {
        let mp = m.mount_point.display().to_string();
        out.push(
            Finding::measured(
                "disk.usage",
                "disk_used_percent",
                m.used_percent,
                "%",
                t.disk,
                format!(
                    "{mp} is {:.0}% full ({:.1} GiB free of {:.1} GiB)",
                    m.used_percent,
                    gib(m.available_bytes),
                    gib(m.total_bytes)
                ),
            )
            .target(&mp),
        );
        if let (Some(p), Some(used), Some(total)) =
            (m.inodes_percent, m.inodes_used, m.inodes_total)
        {
            out.push(
                Finding::measured(
                    "disk.inodes",
                    "inodes_used_percent",
                    p,
                    "%",
                    t.inodes,
                    format!("{mp} uses {p:.0}% of its inodes ({used} of {total})"),
                )
                .target(&mp),
            );
        }
    }
    let mem = &r.memory;
    out.push(Finding::measured(
        "memory.usage",
        "memory_used_percent",
        mem.used_percent,
        "%",
        t.memory,
        format!(
            "memory {:.0}% used ({:.1} GiB available of {:.1} GiB)",
            mem.used_percent,
            gib(mem.available_bytes),
            gib(mem.total_bytes)
        ),
    ));
    if mem.swap_total_bytes > 0 {
        out.push(Finding::measured(
            "memory.swap",
            "swap_used_percent",
            mem.swap_used_percent,
            "%",
            t.swap,
            format!(
                "swap {:.0}% used ({:.1} GiB of {:.1} GiB)",
                mem.swap_used_percent,
                gib(mem.swap_used_bytes),
                gib(mem.swap_total_bytes)
            ),
        ));
    }
    let l = &r.load;
    let per_core = l.five / f64::from(l.cores.max(1));
    out.push(
        Finding::measured(
            "cpu.load",
            "load5_per_core",
            per_core,
            "ratio",
            t.load_per_core,
            format!(
                "load {:.2} {:.2} {:.2} on {} cores ({per_core:.2} per core over 5 min)",
                l.one, l.five, l.fifteen, l.cores
            ),
        )
        .metric(Metric::new("load1", l.one, ""))
        .metric(Metric::new("load15", l.fifteen, "")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tej_core::Severity;

    #[test]
    fn mounts_skip_pseudo_and_decode_escapes() {
        let text = "proc /proc proc rw 0 0\n/dev/vda1 / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/vdb /mnt/my\\040disk xfs rw 0 0\n/dev/vdc / ext4 rw 0 0\ngarbage\n";
        let m = parse_mounts(text, &ResourceOptions::default().ignore_fs_types);
        assert_eq!(
            m,
            vec![
                (
                    "/dev/vdb".into(),
                    PathBuf::from("/mnt/my disk"),
                    "xfs".into()
                ),
                ("/dev/vdc".into(), PathBuf::from("/"), "ext4".into()),
            ]
        );
    }

    /// `/proc/mounts` of a Docker host: pseudo file systems, tmpfs, a container's overlay
    /// `merged` directory, a sandbox's bind mounts of the root file system and of /var.
    const MOUNTS_FIXTURE: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime 0 0
/dev/vda1 / ext4 rw,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
/dev/vdb1 /var ext4 rw,relatime 0 0
overlay /var/lib/docker/overlay2/3f1c/merged overlay rw,relatime,lowerdir=/x,upperdir=/y,workdir=/z 0 0
nsfs /run/docker/netns/abc nsfs rw 0 0
/dev/vda1 /etc/hosts ext4 rw,relatime 0 0
/dev/vdb1 /var/lib/docker/containers/ab/mounts/shm ext4 rw,relatime 0 0
/dev/vdb1 /srv/sandbox/var ext4 rw,relatime 0 0
/dev/vdc /mnt/my\\040disk xfs rw 0 0
";

    /// The same host as `/proc/self/mountinfo` (bind mounts have a root other than `/`).
    const MOUNTINFO_FIXTURE: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:14 - proc proc rw
24 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4010000k
26 28 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=805000k
28 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
31 24 0:27 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
40 28 252:17 / /var rw,relatime shared:30 - ext4 /dev/vdb1 rw
90 40 0:50 / /var/lib/docker/overlay2/3f1c/merged rw,relatime - overlay overlay rw,lowerdir=/x
91 26 0:4 net:[4026532] /run/docker/netns/abc rw shared:40 - nsfs nsfs rw
92 28 252:1 /var/lib/docker/containers/ab/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
93 40 252:17 /lib/docker/containers/ab/mounts/shm /var/lib/docker/containers/ab/mounts/shm rw - ext4 /dev/vdb1 rw
94 28 252:17 / /srv/sandbox/var rw,relatime - ext4 /dev/vdb1 rw
95 28 252:32 / /mnt/my\\040disk rw - xfs /dev/vdc rw
";

    fn rows(v: &[(String, PathBuf, String)]) -> Vec<(&str, &str)> {
        v.iter()
            .map(|(d, m, _)| (d.as_str(), m.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn one_row_per_real_file_system() {
        let opts = ResourceOptions::default();
        let want = vec![
            ("/dev/vda1", "/"),
            ("/dev/vdb1", "/var"),
            ("/dev/vdc", "/mnt/my disk"),
        ];
        let m = parse_mounts(MOUNTS_FIXTURE, &opts.ignore_fs_types);
        assert_eq!(rows(&m), want, "{m:#?}");
        let m = parse_mountinfo(MOUNTINFO_FIXTURE, &opts.ignore_fs_types);
        assert_eq!(rows(&m), want, "{m:#?}");
        // The exclusion list is configurable: with tmpfs reported, /run and /dev/shm are
        // two file systems (two rows); xfs excluded, the disk is gone.
        let host = tej_core::config::HostConfig {
            exclude_fs_types: Some(vec!["proc".into(), "sysfs".into(), "xfs".into()]),
            ..tej_core::config::HostConfig::default()
        };
        let opts = ResourceOptions::from_host(&host);
        let m = parse_mountinfo(MOUNTINFO_FIXTURE, &opts.ignore_fs_types);
        let got = rows(&m);
        assert!(got.contains(&("tmpfs", "/run")), "{got:?}");
        assert!(!got.iter().any(|(_, m)| m.ends_with("merged")), "{got:?}");
        assert!(!got.iter().any(|(_, m)| *m == "/mnt/my disk"), "{got:?}");
        assert!(!got.iter().any(|(_, m)| *m == "/etc/hosts"), "{got:?}");
    }

    #[test]
    fn meminfo_and_loadavg() {
        let m = parse_meminfo(
            "MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 100 kB\nSwapTotal: 400 kB\nSwapFree: 100 kB\n",
        )
        .unwrap();
        assert_eq!(m.total_bytes, 1_024_000);
        assert!((m.used_percent - 90.0).abs() < 1e-9);
        assert!((m.swap_used_percent - 75.0).abs() < 1e-9);
        // Old kernels without MemAvailable.
        let m = parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 5 kB\n")
            .unwrap();
        assert!((m.used_percent - 80.0).abs() < 1e-9);
        assert!(parse_meminfo("nonsense").is_err());
        let l = parse_loadavg("0.50 3.00 1.00 1/100 1234\n", 2).unwrap();
        assert_eq!(l.five, 3.0);
        assert!(parse_loadavg("x y z", 2).is_err());
        assert!(parse_loadavg("NaN 1 1", 2).is_err());
    }

    #[test]
    fn findings_use_thresholds() {
        let r = ResourceReport {
            mounts: vec![MountUsage {
                mount_point: "/var".into(),
                device: "/dev/x".into(),
                fs_type: "ext4".into(),
                total_bytes: 100,
                used_bytes: 91,
                available_bytes: 9,
                used_percent: 91.0,
                inodes_total: Some(100),
                inodes_used: Some(85),
                inodes_percent: Some(85.0),
            }],
            memory: MemoryUsage {
                total_bytes: 100,
                available_bytes: 50,
                used_percent: 50.0,
                swap_total_bytes: 0,
                swap_used_bytes: 0,
                swap_used_percent: 0.0,
            },
            load: LoadUsage {
                one: 1.0,
                five: 5.0,
                fifteen: 1.0,
                cores: 2,
            },
        };
        let f = resource_findings(&r, &ResourceThresholds::default());
        let by = |c: &str| f.iter().find(|x| x.check == c).map(|x| x.severity);
        assert_eq!(by("disk.usage"), Some(Severity::Critical));
        assert_eq!(by("disk.inodes"), Some(Severity::Warning));
        assert_eq!(by("memory.usage"), Some(Severity::Ok));
        assert_eq!(by("memory.swap"), None);
        assert_eq!(by("cpu.load"), Some(Severity::Critical));
        assert_eq!(f[0].target, "/var");
    }

    #[test]
    fn live_host_is_measured() {
        let r = check_resources(&ResourceOptions::default()).unwrap();
        let root = r
            .mounts
            .iter()
            .find(|m| m.mount_point == Path::new("/"))
            .expect("root file system is reported");
        assert!(root.total_bytes > 0 && root.used_percent <= 100.0);
        assert!(r.memory.total_bytes > 0);
        assert!(r.load.cores >= 1);
        assert!(!resource_findings(&r, &ResourceThresholds::default()).is_empty());
    }

    #[test]
    fn fake_proc_root() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("mounts"),
            format!("/dev/fake {mp} ext4 rw 0 0\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("meminfo"),
            "MemTotal: 1000 kB\nMemAvailable: 10 kB\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("loadavg"), "0.1 0.2 0.3 1/1 1\n").unwrap();
        let r = check_resources(&ResourceOptions {
            proc_root: dir.path().into(),
            ..ResourceOptions::default()
        })
        .unwrap();
        assert_eq!(r.mounts.len(), 1);
        assert_eq!(r.mounts[0].device, "/dev/fake");
        let f = resource_findings(&r, &ResourceThresholds::default());
        assert!(
            f.iter()
                .any(|x| x.check == "memory.usage" && x.severity == Severity::Critical)
        );
    }
}
