//! How large a tmpfs-backed region (a memfd, /dev/shm, a tmpfs file) can be. Its pages are
//! memory: a memfd has no size limit of its own, so reserving more than the machine has
//! ends with the OOM killer choosing a process to kill, not with an error. A create asks
//! here first and refuses what cannot fit.

use std::path::{Path, PathBuf};

/// The most bytes a new tmpfs region could get: MemAvailable + SwapFree, and no more than
/// the headroom of any memory cgroup (v1 or v2) the process is in. `None` when
/// /proc/meminfo cannot be read (then nothing is refused here).
pub(crate) fn ceiling() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let system = meminfo_bytes(&meminfo, "MemAvailable")?
        .saturating_add(meminfo_bytes(&meminfo, "SwapFree").unwrap_or(0));
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    Some(cgroup_headrooms(&cgroups, Path::new("/sys/fs/cgroup")).fold(system, u64::min))
}

/// A `Key:   123 kB` line of /proc/meminfo, in bytes.
fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The files of one cgroup version's memory controller.
struct Controller {
    limit: &'static str,
    usage: &'static str,
    /// The memory.stat keys of the page cache that reclaim can give back (file pages; tmpfs
    /// and memfd pages are not among them), counted over the whole subtree.
    reclaimable: [&'static str; 2],
}

const V2: Controller = Controller {
    limit: "memory.max",
    usage: "memory.current",
    reclaimable: ["active_file", "inactive_file"],
};

const V1: Controller = Controller {
    limit: "memory.limit_in_bytes",
    usage: "memory.usage_in_bytes",
    reclaimable: ["total_active_file", "total_inactive_file"],
};

/// How many more bytes each memory cgroup with a limit, in `/proc/self/cgroup` (`cgroups`)
/// or above one there, lets its processes have, under the cgroup mount `root`: v2
/// (`0::/path`, at `root` or at `root/unified` on a hybrid host) and v1
/// (`N:...memory...:/path`, at `root/memory`). A cgroup charges a memfd's or tmpfs file's
/// pages to the process that touches them first and kills a process of its own when they
/// do not fit (a memory cgroup OOM kill, not an error), so a create must fit under every
/// level. The headroom is the limit less the usage, plus the page cache that reclaim would
/// give back (usage counts it). Unlimited levels and unreadable files add nothing; a level
/// whose usage cannot be read counts its whole limit.
fn cgroup_headrooms<'a>(cgroups: &'a str, root: &'a Path) -> impl Iterator<Item = u64> + 'a {
    cgroups
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            if id == "0" && controllers.is_empty() {
                Some(vec![
                    (root.to_path_buf(), path, &V2),
                    (root.join("unified"), path, &V2),
                ])
            } else if controllers.split(',').any(|c| c == "memory") {
                Some(vec![(root.join("memory"), path, &V1)])
            } else {
                None
            }
        })
        .flatten()
        .flat_map(|(mount, path, controller)| {
            levels(&mount, path).filter_map(move |dir| headroom(&dir, controller))
        })
}

/// The headroom of the cgroup at `dir` (see [`cgroup_headrooms`]); `None` when it has no
/// limit or none can be read.
fn headroom(dir: &Path, controller: &Controller) -> Option<u64> {
    let number = |file: &str| read_number(&dir.join(file));
    // "max" (v2) does not parse; a page-rounded i64::MAX (v1) is no limit either, but is
    // above any real size, so it needs no case of its own.
    let limit = number(controller.limit)?;
    let Some(usage) = number(controller.usage) else {
        return Some(limit);
    };
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let reclaimable: u64 = stat
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            controller
                .reclaimable
                .contains(&key)
                .then(|| value.trim().parse::<u64>().ok())?
        })
        .sum();
    Some(
        limit
            .saturating_sub(usage)
            .saturating_add(reclaimable)
            .min(limit),
    )
}

/// The number a kernel file (a cgroup or sysfs setting) holds; `None` when it cannot be read
/// or holds something else ("max", say).
pub(crate) fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
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
    fn cgroup_headrooms_come_from_every_level_of_v1_and_v2() {
        let root = std::env::temp_dir().join(format!("shmlane-cgroup-{}", std::process::id()));
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("memory.max", "max\n");
        // 1 MiB, of which 768 KiB used, 68 KiB of it page cache (shmem is not).
        write("pod/memory.max", "1048576\n");
        write("pod/memory.current", "786432\n");
        write(
            "pod/memory.stat",
            "anon 1\nfile 73728\nactive_file 65536\ninactive_file 4096\nshmem 4096\n",
        );
        write("pod/app/memory.max", "max\n");
        write("pod/app/memory.current", "4096\n");
        // v1's "no limit", some of it used: still above any real size.
        write("memory/memory.limit_in_bytes", "9223372036854771712\n");
        write("memory/memory.usage_in_bytes", "4096\n");
        // A limit whose usage cannot be read counts whole.
        write("memory/job/memory.limit_in_bytes", "2097152\n");
        // Over its limit (charges are batched): only its page cache is room; the subtree's
        // counts (total_*) are the ones read.
        write("memory/job/task/memory.limit_in_bytes", "4194304\n");
        write("memory/job/task/memory.usage_in_bytes", "4198400\n");
        write(
            "memory/job/task/memory.stat",
            "active_file 1\ntotal_active_file 8192\ntotal_inactive_file 4096\n",
        );
        let cgroups = "4:memory:/job/task\n1:cpu:/elsewhere\n0::/pod/app\n";
        let mut rooms: Vec<u64> = cgroup_headrooms(cgroups, &root).collect();
        rooms.sort();
        assert_eq!(
            rooms,
            [12_288, 331_776, 2_097_152, 9_223_372_036_854_767_616]
        );
        // No memory controller named: no limit.
        assert_eq!(cgroup_headrooms("1:cpu:/x\n", &root).count(), 0);
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
