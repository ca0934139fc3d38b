//! How large a tmpfs-backed region (a memfd, /dev/shm, a tmpfs file) can be. Its pages are
//! memory: a memfd has no size limit of its own, so reserving more than the machine has
//! ends with the OOM killer choosing a process to kill, not with an error. A create asks
//! here first and refuses what cannot fit.

use std::path::{Path, PathBuf};

/// The most bytes a new tmpfs region could get: MemAvailable + SwapFree, and no more than
/// the limit of any memory cgroup (v1 or v2) the process is in. `None` when
/// /proc/meminfo cannot be read (then nothing is refused here).
///
/// A cgroup's limit, not its limit less its usage: usage counts page cache that reclaim
/// would give back, so the difference would refuse creates that succeed.
pub(crate) fn ceiling() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let system = meminfo_bytes(&meminfo, "MemAvailable")?
        .saturating_add(meminfo_bytes(&meminfo, "SwapFree").unwrap_or(0));
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    Some(cgroup_limits(&cgroups, Path::new("/sys/fs/cgroup")).fold(system, u64::min))
}

/// A `Key:   123 kB` line of /proc/meminfo, in bytes.
fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The memory limits set on the cgroups in `/proc/self/cgroup` (`cgroups`) and on their
/// ancestors, under the cgroup mount `root`: v2 (`0::/path`, `memory.max`, at `root` or
/// at `root/unified` on a hybrid host) and v1 (`N:...memory...:/path`,
/// `memory/.../memory.limit_in_bytes`). Unlimited levels and unreadable files add nothing.
fn cgroup_limits<'a>(cgroups: &'a str, root: &'a Path) -> impl Iterator<Item = u64> + 'a {
    cgroups
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            if id == "0" && controllers.is_empty() {
                Some(vec![
                    (root.to_path_buf(), path, "memory.max"),
                    (root.join("unified"), path, "memory.max"),
                ])
            } else if controllers.split(',').any(|c| c == "memory") {
                Some(vec![(root.join("memory"), path, "memory.limit_in_bytes")])
            } else {
                None
            }
        })
        .flatten()
        .flat_map(|(mount, path, file)| {
            levels(&mount, path).filter_map(move |dir| {
                // "max" (v2) and a page-rounded i64::MAX (v1) mean no limit; neither is a
                // limit below any real size.
                std::fs::read_to_string(dir.join(file))
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
}

/// `mount/path` and each of its ancestors down to `mount` itself.
fn levels(mount: &Path, path: &str) -> impl Iterator<Item = PathBuf> {
    let parts: Vec<String> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .map(str::to_string)
        .collect();
    let mount = mount.to_path_buf();
    (0..=parts.len()).rev().map(move |depth| {
        parts[..depth]
            .iter()
            .fold(mount.clone(), |dir, p| dir.join(p))
    })
}

// Reads /proc and writes files: nothing for miri to check, and its isolation refuses both.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_are_read_in_bytes() {
        let meminfo = "MemTotal:       24576000 kB\nMemAvailable:   1000 kB\nSwapFree: 0 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemAvailable"), Some(1_024_000));
        assert_eq!(meminfo_bytes(meminfo, "SwapFree"), Some(0));
        assert_eq!(meminfo_bytes(meminfo, "Mem"), None);
        assert_eq!(meminfo_bytes(meminfo, "Cached"), None);
    }

    #[test]
    fn cgroup_limits_come_from_every_level_of_v1_and_v2() {
        let root = std::env::temp_dir().join(format!("shmlane-cgroup-{}", std::process::id()));
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("memory.max", "max\n");
        write("pod/memory.max", "1048576\n");
        write("pod/app/memory.max", "max\n");
        write("memory/memory.limit_in_bytes", "9223372036854771712\n");
        write("memory/job/memory.limit_in_bytes", "2097152\n");
        let cgroups = "4:memory:/job\n1:cpu:/elsewhere\n0::/pod/app\n";
        let mut limits: Vec<u64> = cgroup_limits(cgroups, &root).collect();
        limits.sort();
        assert_eq!(limits, [1_048_576, 2_097_152, 9_223_372_036_854_771_712]);
        // No memory controller named: no limit.
        assert_eq!(cgroup_limits("1:cpu:/x\n", &root).count(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_ceiling_is_at_most_what_the_machine_has() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total = meminfo_bytes(&meminfo, "MemTotal").unwrap()
            + meminfo_bytes(&meminfo, "SwapTotal").unwrap_or(0);
        let ceiling = ceiling().unwrap();
        assert!(ceiling > 0 && ceiling <= total, "{ceiling} of {total}");
    }
}
