//! What PID 1 asks of the kernel: mounting the pseudo filesystems, loading kernel modules from
//! files (`finit_module`), reaping children, and powering off or rebooting.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn path_cstring(p: &Path) -> io::Result<CString> {
    cstring(
        p.to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?,
    )
}

/// `mount(2)`: mounts `source` of type `fstype` at `target` with `flags` (`MS_*`) and the
/// filesystem's own `data` options.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (source, target, fstype, data) = (
        cstring(source)?,
        path_cstring(target)?,
        cstring(fstype)?,
        cstring(data)?,
    );
    // SAFETY: `int mount(const char *source, const char *target, const char *filesystemtype,
    // unsigned long mountflags, const void *data)`: all four pointers are NUL-terminated
    // strings that outlive the call; the kernel copies them.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Outcome of loading one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleLoad {
    /// Loaded now.
    Loaded,
    /// The kernel already had it (`EEXIST`).
    AlreadyLoaded,
}

/// `finit_module(2)`: loads the kernel module in `file` (an uncompressed `.ko`) with
/// `params` (`"name=value ..."`).
pub fn finit_module(file: &File, params: &str) -> io::Result<ModuleLoad> {
    let params = cstring(params)?;
    // SAFETY: `int finit_module(int fd, const char *param_values, int flags)` (syscall
    // `__NR_finit_module`, 313 on x86_64): `fd` is an open descriptor borrowed from `file` for
    // the call, `param_values` a NUL-terminated string that outlives it, flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if r == 0 {
        return Ok(ModuleLoad::Loaded);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(ModuleLoad::AlreadyLoaded);
    }
    Err(e)
}

/// Reaps every child that has exited, without blocking; returns their pids and raw statuses.
pub fn reap_children() -> Vec<(i32, i32)> {
    let mut reaped = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `pid_t waitpid(pid_t pid, int *wstatus, int options)` with a pointer to a
        // local int that lives across the call; WNOHANG makes it return at once.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return reaped;
        }
        reaped.push((pid, status));
    }
}

/// How PID 1 ends the machine's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// `LINUX_REBOOT_CMD_POWER_OFF`.
    PowerOff,
    /// `LINUX_REBOOT_CMD_RESTART`.
    Reboot,
}

/// Flushes the filesystems and powers off or reboots. Returns only on failure (not PID 1, or
/// no CAP_SYS_BOOT).
pub fn shutdown(how: Shutdown) -> io::Error {
    // `#define LINUX_REBOOT_CMD_POWER_OFF 0x4321FEDC`, `#define LINUX_REBOOT_CMD_RESTART
    // 0x01234567` (<uapi/linux/reboot.h>).
    let cmd = match how {
        Shutdown::PowerOff => libc::LINUX_REBOOT_CMD_POWER_OFF,
        Shutdown::Reboot => libc::LINUX_REBOOT_CMD_RESTART,
    };
    // SAFETY: `void sync(void)` takes nothing; `int reboot(int cmd)` takes an integer
    // command and no pointers.
    unsafe {
        libc::sync();
        libc::reboot(cmd);
    }
    io::Error::last_os_error()
}

/// One `getrandom` call for all of `buf` (at most 256 bytes, which the kernel never splits).
fn getrandom(buf: &mut [u8], flags: libc::c_uint) -> io::Result<()> {
    assert!(buf.len() <= 256, "getrandom: at most 256 bytes at once");
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; getrandom writes at most that.
        let r = unsafe {
            libc::syscall(
                libc::SYS_getrandom,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                flags,
            )
        };
        if r == buf.len() as libc::c_long {
            return Ok(());
        }
        let e = if r < 0 {
            io::Error::last_os_error()
        } else {
            io::Error::other(format!("getrandom gave {r} of {} bytes", buf.len()))
        };
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Fills `buf` (at most 256 bytes) from the kernel without ever waiting for its random number
/// generator to be seeded (`GRND_INSECURE`, Linux 5.6+). Good for telling things apart (a DHCP
/// transaction id), not for keys. Early in boot a plain `getrandom` can block for a second or
/// more until the kernel has gathered entropy.
pub fn random_bytes_nonblocking(buf: &mut [u8]) -> io::Result<()> {
    getrandom(buf, libc::GRND_INSECURE)
}

/// Waits until the kernel's random number generator is seeded (a blocking `getrandom`), as TLS
/// needs it. At boot without a hardware entropy source, Linux waits up to a second for
/// interrupts to seed it, then seeds it from CPU timing jitter.
pub fn wait_for_entropy() -> io::Result<()> {
    getrandom(&mut [0u8; 1], 0)
}

/// Sets the calling thread's nice value (Linux: per thread). Lowering it below 0 needs
/// CAP_SYS_NICE, which the ramdisk's PID 1 has.
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions; setpriority reads only its integer arguments.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_reports_the_kernels_refusal() {
        // An unknown filesystem type: ENODEV as root, EPERM otherwise; never success.
        let dir = tempfile::tempdir().unwrap();
        let e = mount("none", dir.path(), "ferrox-no-such-fs", 0, "").unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::EPERM)),
            "{e}"
        );
    }

    #[test]
    fn finit_module_refuses_a_file_that_is_not_a_module() {
        let f = tempfile::tempfile().unwrap();
        // Not an ELF module: ENOEXEC (or EPERM without CAP_SYS_MODULE, ENOSYS in a kernel
        // without module support such as this workplace's); never "loaded".
        let e = finit_module(&f, "").unwrap_err();
        assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::ENOEXEC) | Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EINVAL)
            ),
            "{e}"
        );
    }

    #[test]
    fn nul_bytes_are_refused_before_the_kernel_sees_them() {
        let e = mount("a\0b", Path::new("/x"), "tmpfs", 0, "").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn random_bytes_differ_and_entropy_is_there_on_a_running_system() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        random_bytes_nonblocking(&mut a).unwrap();
        random_bytes_nonblocking(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 16]);
        // Long after boot the generator is seeded: this returns at once.
        let t = std::time::Instant::now();
        wait_for_entropy().unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        let before = thread_cpu_time();
        // Busy for a while on this thread.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = thread_cpu_time() - before;
        assert!(busy >= std::time::Duration::from_millis(20), "{busy:?}");
        // A thread that only sleeps uses next to none.
        let idle = std::thread::spawn(|| {
            let b = thread_cpu_time();
            std::thread::sleep(std::time::Duration::from_millis(50));
            thread_cpu_time() - b
        })
        .join()
        .unwrap();
        assert!(idle < std::time::Duration::from_millis(20), "{idle:?}");
    }
}
