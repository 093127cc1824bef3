//! What a sandboxed child does to itself between `fork` and `exec`: enter a network namespace
//! (`NetPlan::enter`) and enforce a Landlock ruleset (`restrict_self`). Nothing here allocates,
//! formats or opens files other than fixed `/proc` paths: everything it needs is computed before
//! the fork. It sits below both `process` (which runs these steps in the child) and `sandbox`
//! (which decides and prepares them), so neither imports the other for them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetIsolation {
    /// `unshare(CLONE_NEWNET)` (privileged).
    NetNamespace,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)` with the caller's uid and gid mapped to themselves.
    UserNamespace,
    Unavailable,
}

/// Precomputed data for entering a network namespace in the child (nothing may be formatted
/// after `fork`).
#[derive(Debug, Clone)]
pub struct NetPlan {
    pub isolation: NetIsolation,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
}

impl NetPlan {
    pub fn new(isolation: NetIsolation) -> NetPlan {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        NetPlan {
            isolation,
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        }
    }

    /// Runs in the child between fork and exec: only syscalls on precomputed buffers.
    pub fn enter(&self) -> std::io::Result<()> {
        // SAFETY: raw syscalls with static C strings and buffers owned by `self`.
        unsafe {
            match self.isolation {
                NetIsolation::Unavailable => Ok(()),
                NetIsolation::NetNamespace => {
                    if libc::unshare(libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                }
                NetIsolation::UserNamespace => {
                    if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    write_proc(c"/proc/self/setgroups", b"deny")?;
                    write_proc(c"/proc/self/uid_map", &self.uid_map)?;
                    write_proc(c"/proc/self/gid_map", &self.gid_map)?;
                    Ok(())
                }
            }
        }
    }
}

/// # Safety
/// Async-signal-safe: open, write, close only.
unsafe fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> std::io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    libc::close(fd);
    if n != data.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Enforces the Landlock ruleset `fd` on the child. Runs between fork and exec.
pub fn restrict_self(fd: libc::c_int) -> std::io::Result<()> {
    if fd < 0 {
        return Ok(());
    }
    // SAFETY: prctl and the Landlock syscall take no pointers here.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}
