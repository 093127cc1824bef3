//! The sandbox for every Lean process that sees model output: a throw-away scratch directory as
//! its working directory, a scrubbed environment, rlimits (`process::limit_command`), and where
//! the kernel allows it a network namespace of its own (no interfaces up) and a Landlock domain
//! (read-only view of the file system, writes only under the scratch directory, `execve` only of
//! the Lean toolchain, no TCP, no signals to processes outside the sandbox).
//!
//! Landlock is applied with raw syscalls rather than a wrapper crate because the ruleset must be
//! built before `fork` (it allocates and opens files) and only `landlock_restrict_self` may run
//! between `fork` and `exec`, where nothing may allocate.
//!
//! Fallbacks, in `SandboxMode::Auto`: without Landlock (kernel < 5.13, or disabled) Lean can read
//! and write wherever the user can; without namespaces (unprivileged user namespaces disabled)
//! only Landlock's TCP rules (kernel ≥ 6.7) keep it off the network. `Support` says what this
//! machine gives; `SandboxMode::Required` refuses to start Lean without both.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub use crate::confine::NetIsolation;
use crate::confine::NetPlan;
use crate::process::{limit_command_with, ChildSetup, ProcessLimits};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Only the scratch directory, scrubbed environment and rlimits.
    Off,
    /// Everything this machine supports.
    #[default]
    Auto,
    /// Refuse to run Lean unless Landlock and a network namespace are both available.
    Required,
}

/// What the sandbox may touch besides its scratch directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxPolicy {
    pub mode: SandboxMode,
    /// Files or directories whose programs may be executed (the Lean toolchain).
    pub exec_roots: Vec<PathBuf>,
    /// Further directories Lean may write under.
    pub writable: Vec<PathBuf>,
}

/// What this machine's kernel lets an unprivileged sandbox do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Support {
    /// Landlock ABI version; 0 when Landlock is unavailable.
    pub landlock_abi: u32,
    pub net: NetIsolation,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox required but unavailable: {0}")]
    Unavailable(String),
    #[error("could not create a scratch directory: {0}")]
    Scratch(std::io::Error),
    #[error("could not build the Landlock ruleset ({what}): {source}")]
    Landlock { what: String, source: std::io::Error },
}

// Landlock ABI (include/uapi/linux/landlock.h).
const ACCESS_FS_EXECUTE: u64 = 1 << 0;
const ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_FS_READ_FILE: u64 = 1 << 2;
const ACCESS_FS_READ_DIR: u64 = 1 << 3;
const ACCESS_FS_TRUNCATE: u64 = 1 << 14;
const ACCESS_FS_IOCTL_DEV: u64 = 1 << 15;
const ACCESS_NET_BIND_TCP: u64 = 1 << 0;
const ACCESS_NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;
const RULE_PATH_BENEATH: libc::c_int = 1;
const CREATE_RULESET_VERSION: u32 = 1 << 0;
/// Rights that may be granted on a regular file (the others only make sense on directories).
const FILE_RIGHTS: u64 =
    ACCESS_FS_EXECUTE | ACCESS_FS_WRITE_FILE | ACCESS_FS_READ_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Every file-system right the given ABI knows.
fn fs_rights(abi: u32) -> u64 {
    match abi {
        0 => 0,
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    }
}

fn landlock_abi() -> u32 {
    // SAFETY: the version query takes no pointers.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        0
    } else {
        v as u32
    }
}

/// Probes the kernel once per process: Landlock's ABI, and which network isolation a child can
/// get (by starting `probe` — any executable that exits — under each in turn).
pub fn support(probe: &Path) -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        let landlock_abi = landlock_abi();
        let net = [NetIsolation::NetNamespace, NetIsolation::UserNamespace]
            .into_iter()
            .find(|&n| {
                let mut cmd = std::process::Command::new(probe);
                cmd.arg("--version").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                let setup = ChildSetup { net: Some(NetPlan::new(n)), landlock_fd: -1 };
                crate::process::limit_std_command(&mut cmd, &ProcessLimits::default(), setup);
                cmd.status().is_ok_and(|s| s.success())
            })
            .unwrap_or(NetIsolation::Unavailable);
        Support { landlock_abi, net }
    })
}

/// A Landlock ruleset, built in the parent.
struct Ruleset {
    fd: OwnedFd,
    abi: u32,
}

impl Ruleset {
    fn new(abi: u32) -> Result<Ruleset, SandboxError> {
        let attr = RulesetAttr {
            handled_access_fs: fs_rights(abi),
            handled_access_net: if abi >= 4 { ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP } else { 0 },
            scoped: if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 },
        };
        // Older ABIs take a shorter struct.
        let size = match abi {
            1..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: `attr` outlives the call and `size` does not exceed it.
        let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
        if fd < 0 {
            return Err(SandboxError::Landlock {
                what: "landlock_create_ruleset".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the kernel just gave us this descriptor.
        Ok(Ruleset { fd: unsafe { OwnedFd::from_raw_fd(fd as i32) }, abi })
    }

    /// Grants `access` beneath `path` (masked to what a file may hold when it is a file). A
    /// path that does not exist is skipped.
    fn allow(&self, path: &Path, access: u64) -> Result<(), SandboxError> {
        let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
        let mut access = access & fs_rights(self.abi);
        if !meta.is_dir() {
            access &= FILE_RIGHTS;
        }
        let err = |source| SandboxError::Landlock { what: format!("rule for {}", path.display()), source };
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| err(std::io::Error::other(e)))?;
        // SAFETY: `c` is a valid C string.
        let raw = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptor from open.
        let dir = unsafe { OwnedFd::from_raw_fd(raw) };
        let attr = PathBeneathAttr { allowed_access: access, parent_fd: dir.as_raw_fd() };
        // SAFETY: `attr` outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        if r != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Dynamic loaders: `execve` of a dynamically linked program opens its interpreter for execution.
const LOADERS: [&str; 4] = [
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-x86-64.so.2",
    "/lib/ld-musl-x86_64.so.1",
];

/// Environment variables a sandboxed Lean keeps from subgoal's own environment.
const KEPT_ENV: [&str; 4] = ["LEAN_PATH", "LEAN_SRC_PATH", "LEAN_SYSROOT", "LD_LIBRARY_PATH"];

/// A sandbox prepared for one child: its scratch directory lives as long as this value.
pub struct Sandbox {
    pub scratch: tempfile::TempDir,
    ruleset: Option<Ruleset>,
    net: Option<NetPlan>,
}

impl Sandbox {
    /// Creates the scratch directory and, per `policy` and this machine's `support`, the
    /// Landlock ruleset and network plan.
    pub fn prepare(policy: &SandboxPolicy, support: Support) -> Result<Sandbox, SandboxError> {
        if policy.mode == SandboxMode::Required {
            if support.landlock_abi == 0 {
                return Err(SandboxError::Unavailable("the kernel offers no Landlock".into()));
            }
            if support.net == NetIsolation::Unavailable {
                return Err(SandboxError::Unavailable("no network namespace can be created".into()));
            }
        }
        let scratch = tempfile::Builder::new().prefix("subgoal-lean-").tempdir().map_err(SandboxError::Scratch)?;
        if policy.mode == SandboxMode::Off {
            return Ok(Sandbox { scratch, ruleset: None, net: None });
        }
        let net = (support.net != NetIsolation::Unavailable).then(|| NetPlan::new(support.net));
        let ruleset = if support.landlock_abi > 0 {
            let r = Ruleset::new(support.landlock_abi)?;
            let read = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR;
            r.allow(Path::new("/"), read)?;
            for root in &policy.exec_roots {
                r.allow(root, read | ACCESS_FS_EXECUTE)?;
            }
            for l in LOADERS {
                r.allow(Path::new(l), ACCESS_FS_READ_FILE | ACCESS_FS_EXECUTE)?;
            }
            r.allow(Path::new("/dev/null"), ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_TRUNCATE)?;
            let all = fs_rights(r.abi) & !ACCESS_FS_EXECUTE;
            r.allow(scratch.path(), all)?;
            for w in &policy.writable {
                r.allow(w, all)?;
            }
            Some(r)
        } else {
            None
        };
        Ok(Sandbox { scratch, ruleset, net })
    }

    pub fn path(&self) -> &Path {
        self.scratch.path()
    }

    /// Sets up `cmd` to run inside: scratch as working directory and home, scrubbed environment,
    /// `limits`, the network namespace and the Landlock domain. The ruleset descriptor must stay
    /// open until the child is spawned, so `self` must outlive the spawn.
    pub fn apply(&self, cmd: &mut tokio::process::Command, limits: &ProcessLimits) {
        cmd.current_dir(self.path()).env_clear().envs(self.env());
        limit_command_with(cmd, limits, self.child_setup());
    }

    /// Like `apply`, for a blocking `std::process::Command`.
    pub fn apply_std(&self, cmd: &mut std::process::Command, limits: &ProcessLimits) {
        cmd.current_dir(self.path()).env_clear().envs(self.env());
        crate::process::limit_std_command(cmd, limits, self.child_setup());
    }

    fn child_setup(&self) -> ChildSetup {
        ChildSetup { net: self.net.clone(), landlock_fd: self.ruleset.as_ref().map_or(-1, |r| r.fd.as_raw_fd()) }
    }

    fn env(&self) -> Vec<(String, std::ffi::OsString)> {
        let scratch = self.path().as_os_str().to_os_string();
        let mut env = vec![
            ("PATH".to_string(), std::ffi::OsString::from("/usr/bin:/bin")),
            ("HOME".to_string(), scratch.clone()),
            ("TMPDIR".to_string(), scratch),
            ("LANG".to_string(), std::ffi::OsString::from("C.UTF-8")),
        ];
        for k in KEPT_ENV {
            if let Some(v) = std::env::var_os(k) {
                env.push((k.to_string(), v));
            }
        }
        env
    }
}

/// The directories a toolchain's programs live in: for `bin/lean`, the toolchain root (`bin/`
/// and `lib/`), resolved through symlinks.
pub fn toolchain_root(program: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(program).ok()?;
    let bin = real.parent()?;
    Some(bin.parent().unwrap_or(bin).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_rights_grow_with_the_abi() {
        assert_eq!(fs_rights(0), 0);
        assert!(fs_rights(1) < fs_rights(2) && fs_rights(2) < fs_rights(3) && fs_rights(3) < fs_rights(5));
        assert_eq!(fs_rights(3) & ACCESS_FS_TRUNCATE, ACCESS_FS_TRUNCATE);
    }

    #[test]
    fn path_beneath_attr_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<PathBeneathAttr>(), 12);
        assert_eq!(std::mem::size_of::<RulesetAttr>(), 24);
    }
}
