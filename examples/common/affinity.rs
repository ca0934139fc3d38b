//! CPU pinning for the two-party benches: each party on its own CPU where two exist.

/// CPUs online. Not `available_parallelism`, which counts only the CPUs the caller may run
/// on: once a process pinned itself to one, its forked children would see one and not pin.
pub fn cpus() -> usize {
    // SAFETY: sysconf only reads a system setting.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize
}

/// Pins the calling thread to `cpu` when the machine has at least two CPUs, unless
/// SHMLANE_PIN=0.
pub fn pin(cpu: usize) -> bool {
    if std::env::var("SHMLANE_PIN").is_ok_and(|v| v == "0") || cpus() < 2 {
        return false;
    }
    // SAFETY: cpu_set_t is plain data; the macros and the syscall take valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[allow(dead_code)] // the spsc bench's threads just end
pub fn unpin() {
    // SAFETY: as in `pin`, with every CPU set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
