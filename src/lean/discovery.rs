//! Finding a Lean to run, and how to run it: a `lean` executable directly, or the `lean` and
//! `LEAN_PATH` of a Lake project (where Mathlib lives on users' machines). A Lake project is
//! resolved once, at discovery, by asking `lake env` for its `lean` and `LEAN_PATH`; Lean then
//! runs directly, so `lake` never runs inside the sandbox and needs no write access there.
//!
//! Order: `--lean PATH`, `--lean-project DIR`, `$SUBGOAL_LEAN`, `lean` on `PATH`, and last the
//! test toolchain of this checkout (`.toolchain/bin/lean`, installed by
//! `scripts/install-test-toolchain.sh`).
//!
//! An elan proxy (`~/.elan/bin/lean`, the `elan` binary under another name) finds its toolchain
//! through `HOME`/`ELAN_HOME` and the working directory's `lean-toolchain`, none of which a
//! sandboxed Lean sees; it is resolved here, once, to the toolchain binary that `elan which lean`
//! names, and that binary is what runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "no Lean found: pass --lean PATH or --lean-project DIR, or set SUBGOAL_LEAN \
         (scripts/setup.sh installs elan and the Lake project; scripts/install-test-toolchain.sh the test Lean)"
    )]
    NotFound,
    #[error("{what} {path} does not exist or is not executable")]
    Missing { what: &'static str, path: PathBuf },
    #[error("{path} is not a Lake project (no lakefile.lean or lakefile.toml)")]
    NotLakeProject { path: PathBuf },
    #[error("`{command}` failed: {detail}")]
    Failed { command: String, detail: String },
}

/// Where the Lean in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeanSource {
    Flag,
    LakeProject,
    Env,
    Path,
    TestToolchain,
}

/// How to start Lean.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeanInstall {
    /// Run this executable. Libraries come from `<bin>/../lib/lean` and `LEAN_PATH`.
    Direct {
        lean: PathBuf,
        source: LeanSource,
        /// The elan proxy `lean` was resolved from, when it was one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elan_proxy: Option<PathBuf>,
    },
    /// A Lake project's toolchain `lean`, with the project's `LEAN_PATH`.
    Lake { lake: PathBuf, project: PathBuf, lean: PathBuf, lean_path: String },
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct LeanChoice {
    pub lean: Option<PathBuf>,
    pub lean_project: Option<PathBuf>,
}

impl LeanInstall {
    /// A `lean` executable taken as it is (no discovery, no proxy resolution).
    pub fn at(lean: impl Into<PathBuf>, source: LeanSource) -> LeanInstall {
        LeanInstall::Direct { lean: lean.into(), source, elan_proxy: None }
    }

    pub fn discover(choice: &LeanChoice) -> Result<Self, DiscoveryError> {
        if let Some(path) = &choice.lean {
            return direct(path, LeanSource::Flag);
        }
        if let Some(dir) = &choice.lean_project {
            return lake_project(dir);
        }
        if let Some(path) = std::env::var_os("SUBGOAL_LEAN").filter(|v| !v.is_empty()) {
            return direct(Path::new(&path), LeanSource::Env);
        }
        if let Some(path) = which("lean") {
            return direct(&path, LeanSource::Path);
        }
        let test = test_toolchain_lean();
        if is_executable(&test) {
            return direct(&test, LeanSource::TestToolchain);
        }
        Err(DiscoveryError::NotFound)
    }

    /// The `lean` executable.
    pub fn lean(&self) -> &Path {
        match self {
            LeanInstall::Direct { lean, .. } | LeanInstall::Lake { lean, .. } => lean,
        }
    }

    /// Environment Lean needs beyond a scrubbed one (a Lake project's `LEAN_PATH`).
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            LeanInstall::Direct { .. } => vec![],
            LeanInstall::Lake { lean_path, .. } => vec![("LEAN_PATH".into(), lean_path.clone())],
        }
    }

    /// `lean --version`, first line.
    pub fn version(&self) -> Result<String, DiscoveryError> {
        let out = self.run_sync(&["--version".to_string()])?;
        Ok(out.lines().next().unwrap_or("").trim().to_string())
    }

    /// The library directories Lean searches: `LEAN_PATH` as Lean will see it, then `--print-libdir`.
    pub fn search_path(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let lean_path = match self {
            LeanInstall::Direct { .. } => std::env::var("LEAN_PATH").ok(),
            LeanInstall::Lake { lean_path, .. } => Some(lean_path.clone()),
        };
        if let Some(p) = lean_path {
            dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
        }
        if let Ok(libdir) = self.run_sync(&["--print-libdir".to_string()]) {
            let d = PathBuf::from(libdir.trim());
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        dirs
    }

    fn run_sync(&self, args: &[String]) -> Result<String, DiscoveryError> {
        let prog = self.lean();
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args).envs(self.env()).stdin(Stdio::null());
        let shown = format!("{} {}", prog.display(), args.join(" "));
        let out = cmd.output().map_err(|e| DiscoveryError::Failed { command: shown.clone(), detail: e.to_string() })?;
        if !out.status.success() {
            return Err(DiscoveryError::Failed {
                command: shown,
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The test toolchain's `lean` for this checkout.
pub fn test_toolchain_lean() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".toolchain/bin/lean")
}

fn direct(path: &Path, source: LeanSource) -> Result<LeanInstall, DiscoveryError> {
    let resolved = if path.components().count() == 1 && !path.exists() {
        which(path.to_str().unwrap_or_default())
    } else {
        Some(path.to_path_buf())
    };
    match resolved {
        Some(p) if is_executable(&p) => match elan_proxy(&p) {
            Some(elan) => {
                let lean = elan_which(&elan, "lean")?;
                tracing::debug!(proxy = %p.display(), lean = %lean.display(), "resolved the elan proxy");
                Ok(LeanInstall::Direct { lean, source, elan_proxy: Some(p) })
            }
            None => Ok(LeanInstall::Direct { lean: p, source, elan_proxy: None }),
        },
        _ => Err(DiscoveryError::Missing { what: "lean executable", path: path.to_path_buf() }),
    }
}

/// The `elan` binary that `program` is a proxy of: elan installs its proxies beside itself as
/// links to (or copies of) its own binary.
pub fn elan_proxy(program: &Path) -> Option<PathBuf> {
    let elan = program.parent()?.join("elan");
    if program.file_name()? == "elan" || !is_executable(&elan) {
        return None;
    }
    same_file(program, &elan).then_some(elan)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else { return false };
    if (ma.dev(), ma.ino()) == (mb.dev(), mb.ino()) {
        return true;
    }
    // A copy (file systems without links): the same bytes.
    ma.len() == mb.len() && matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
}

/// `elan which TOOL` in the current directory: the toolchain binary the proxy would run here.
fn elan_which(elan: &Path, tool: &str) -> Result<PathBuf, DiscoveryError> {
    let shown = format!("{} which {tool}", elan.display());
    let out = std::process::Command::new(elan)
        .args(["which", tool])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DiscoveryError::Failed { command: shown.clone(), detail: e.to_string() })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || text.is_empty() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(DiscoveryError::Failed {
            command: shown,
            detail: format!(
                "{why} (the `{tool}` found is elan's proxy; set a default toolchain with `elan default …`, \
                 run from a directory with a lean-toolchain file, or pass --lean-project DIR)"
            ),
        });
    }
    let lean = PathBuf::from(text);
    if !is_executable(&lean) {
        return Err(DiscoveryError::Missing { what: "toolchain lean named by `elan which`", path: lean });
    }
    Ok(lean)
}

fn lake_project(dir: &Path) -> Result<LeanInstall, DiscoveryError> {
    if !dir.join("lakefile.lean").exists() && !dir.join("lakefile.toml").exists() {
        return Err(DiscoveryError::NotLakeProject { path: dir.to_path_buf() });
    }
    let lake = which("lake")
        .or_else(|| {
            let home = std::env::var_os("ELAN_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".elan")))?;
            Some(home.join("bin/lake")).filter(|p| is_executable(p))
        })
        .ok_or(DiscoveryError::Missing { what: "lake executable", path: PathBuf::from("lake") })?;
    let project = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let lean_path = lake_env(&lake, &project, "LEAN_PATH")?;
    // Lake puts its toolchain's `bin` first on PATH; LEAN_SYSROOT names it directly where set.
    let sysroot = lake_env(&lake, &project, "LEAN_SYSROOT").ok().filter(|s| !s.is_empty());
    let lean = match sysroot {
        Some(root) => PathBuf::from(root).join("bin/lean"),
        None => {
            let path = lake_env(&lake, &project, "PATH")?;
            std::env::split_paths(&path).map(|d| d.join("lean")).find(|p| is_executable(p)).ok_or(
                DiscoveryError::Missing { what: "lean executable (on `lake env` PATH)", path: PathBuf::from("lean") },
            )?
        }
    };
    if !is_executable(&lean) {
        return Err(DiscoveryError::Missing { what: "lean executable of the Lake toolchain", path: lean });
    }
    Ok(LeanInstall::Lake { lake, project, lean, lean_path })
}

/// `lake env printenv VAR` in the project.
fn lake_env(lake: &Path, project: &Path, var: &str) -> Result<String, DiscoveryError> {
    let shown = format!("{} env printenv {var} (in {})", lake.display(), project.display());
    let out = std::process::Command::new(lake)
        .args(["env", "printenv", var])
        .current_dir(project)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DiscoveryError::Failed { command: shown.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(DiscoveryError::Failed {
            command: shown,
            detail: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lean_path_is_a_clear_error() {
        let err = LeanInstall::discover(&LeanChoice {
            lean: Some(PathBuf::from("/nonexistent/bin/lean")),
            lean_project: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/bin/lean"), "{err}");
    }

    #[test]
    fn directory_without_lakefile_is_not_a_project() {
        let dir = tempfile::tempdir().unwrap();
        let err = LeanInstall::discover(&LeanChoice { lean: None, lean_project: Some(dir.path().into()) }).unwrap_err();
        assert!(matches!(err, DiscoveryError::NotLakeProject { .. }));
    }
}
