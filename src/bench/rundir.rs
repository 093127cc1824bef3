//! The run directory on disk: creating it, appending results as they happen, and repairing it
//! after a kill so `--resume` neither loses nor double-counts a problem.
//!
//! Invariants: `results.jsonl` only ever gains whole lines (each written with one `write_all`
//! and flushed); a problem is done exactly when its line is there. On resume, a torn last line
//! is cut off, and `attempts.jsonl` keeps only the attempts of done problems (the rest are
//! redone), rewritten through a temporary file and a rename.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{ProblemResult, RunConfig, Summary};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {detail}")]
    Corrupt { path: String, line: usize, detail: String },
    #[error("{0} already holds a run (results.jsonl exists): use --resume {0}, or another --run-dir")]
    Exists(String),
    #[error("{0} holds no run (no config.json)")]
    NotARun(String),
    #[error("{0} is in use by another subgoal process")]
    Busy(String),
}

pub struct RunDir {
    pub path: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io { path: path.display().to_string(), source }
}

/// Writes `text` to `path` through a temporary file in the same directory, synced, renamed over
/// `path`, and the directory synced: after a crash the file is the old one or the new one, whole.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), RunError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(text.as_bytes()).and_then(|_| tmp.as_file().sync_all()).map_err(io(tmp.path()))?;
    tmp.persist(path).map_err(|e| RunError::Io { path: path.display().to_string(), source: e.error })?;
    // The rename is durable once the directory entry is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A problem name as a file name: readable, and unique by a hash of the exact name (`foo'` and
/// `foo_`, or `Foo` and `foo` on a case-insensitive file system, stay apart).
pub fn file_safe(name: &str) -> String {
    let readable: String =
        name.chars().take(80).map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
    let hash = crate::digest::sha256_hex(name);
    format!("{readable}-{}", &hash[..10])
}

impl RunDir {
    /// A new run: the directory is created (or must not hold a run yet) and `config.json` written.
    pub fn create(path: &Path, config: &RunConfig) -> Result<RunDir, RunError> {
        if path.join("results.jsonl").exists() {
            return Err(RunError::Exists(path.display().to_string()));
        }
        std::fs::create_dir_all(path.join("dags")).map_err(io(path))?;
        let dir = RunDir { path: path.to_path_buf() };
        let text = serde_json::to_string_pretty(config).unwrap_or_default();
        write_atomic(&dir.file("config.json"), &text)?;
        for f in ["results.jsonl", "attempts.jsonl"] {
            File::create(dir.file(f)).map_err(io(&dir.file(f)))?;
        }
        Ok(dir)
    }

    /// An existing run and its configuration.
    pub fn open(path: &Path) -> Result<(RunDir, RunConfig), RunError> {
        let cfg_path = path.join("config.json");
        if !cfg_path.exists() {
            return Err(RunError::NotARun(path.display().to_string()));
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let config: RunConfig = serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
            path: cfg_path.display().to_string(),
            line: e.line(),
            detail: e.to_string(),
        })?;
        std::fs::create_dir_all(path.join("dags")).map_err(io(path))?;
        Ok((RunDir { path: path.to_path_buf() }, config))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The finished problems, read-only (a torn last line is ignored, not cut; a problem written
    /// twice counts once).
    pub fn results(&self) -> Result<Vec<ProblemResult>, RunError> {
        let path = self.file("results.jsonl");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut results = parse_results(&path, &whole_lines(&path, &bytes)?)?;
        let mut seen = HashSet::new();
        results.retain(|r| seen.insert(r.outcome.name.clone()));
        Ok(results)
    }

    /// Takes the run for this process: a second process on the same run (a requeued job that
    /// overlaps the first, a double launch) is refused while this one lives.
    pub fn lock(&self) -> Result<File, RunError> {
        use std::os::fd::AsRawFd;
        let path = self.file("lock");
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(RunError::Busy(self.path.display().to_string()));
        }
        Ok(f)
    }

    /// Makes the directory consistent after a kill: cuts a torn last line off `results.jsonl`
    /// and drops the attempts of unfinished problems. Returns the finished problems.
    pub fn repair(&self) -> Result<Vec<ProblemResult>, RunError> {
        let path = self.file("results.jsonl");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let whole = whole_lines(&path, &bytes)?;
        if whole.len() != bytes.len() {
            tracing::warn!(file = %path.display(), "cutting off a torn last line");
            write_atomic(&path, &whole)?;
        }
        let mut results = parse_results(&path, &whole)?;
        // One line per problem, even if a crash ever wrote one twice.
        let mut seen = HashSet::new();
        results.retain(|r| seen.insert(r.outcome.name.clone()));
        let done: HashSet<&str> = results.iter().map(|r| r.outcome.name.as_str()).collect();
        let attempts = self.file("attempts.jsonl");
        let bytes = match std::fs::read(&attempts) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(RunError::Io { path: attempts.display().to_string(), source: e }),
        };
        let text = whole_lines(&attempts, &bytes)?;
        let mut kept = String::with_capacity(text.len());
        for line in text.lines() {
            let problem = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("problem").and_then(|p| p.as_str()).map(str::to_owned));
            if problem.is_some_and(|p| done.contains(p.as_str())) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        if kept.len() != bytes.len() {
            write_atomic(&attempts, &kept)?;
        }
        Ok(results)
    }

    /// Appends one finished problem (one write, flushed).
    pub fn append_result(&self, r: &ProblemResult) -> Result<(), RunError> {
        let path = self.file("results.jsonl");
        let mut line = serde_json::to_string(r).unwrap_or_default();
        line.push('\n');
        let mut f = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        f.write_all(line.as_bytes()).and_then(|_| f.flush()).map_err(io(&path))
    }

    /// `attempts.jsonl`, opened for appending.
    pub fn attempts_writer(&self) -> Result<File, RunError> {
        let path = self.file("attempts.jsonl");
        OpenOptions::new().append(true).create(true).open(&path).map_err(io(&path))
    }

    pub fn write_summary(&self, s: &Summary) -> Result<(), RunError> {
        write_atomic(&self.file("summary.json"), &serde_json::to_string_pretty(s).unwrap_or_default())
    }

    /// Records one invocation's wall time (`sessions.jsonl`), so a resumed run's throughput
    /// counts the time of every session and not the gaps between them.
    pub fn record_session(&self, id: u64, wall_s: f64, problems: usize) -> Result<(), RunError> {
        let path = self.file("sessions.jsonl");
        let line = format!("{}\n", serde_json::json!({"session": id, "wall_s": wall_s, "problems": problems}));
        let mut f = OpenOptions::new().append(true).create(true).open(&path).map_err(io(&path))?;
        f.write_all(line.as_bytes()).and_then(|_| f.flush()).map_err(io(&path))
    }

    /// Wall seconds of the sessions recorded so far (each session's latest line; torn lines skipped).
    pub fn wall_seconds(&self) -> f64 {
        let bytes = std::fs::read(self.file("sessions.jsonl")).unwrap_or_default();
        let mut by_session: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
        for line in String::from_utf8_lossy(&bytes).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if let (Some(id), Some(w)) =
                (v.get("session").and_then(|s| s.as_u64()), v.get("wall_s").and_then(|w| w.as_f64()))
            {
                by_session.insert(id, w);
            }
        }
        by_session.values().sum()
    }

    pub fn summary(&self) -> Option<Summary> {
        serde_json::from_str(&std::fs::read_to_string(self.file("summary.json")).ok()?).ok()
    }
}

/// The whole lines of a file: up to and including its last newline. A kill can cut the last line
/// anywhere, even inside a UTF-8 character, so the cut is made on bytes first.
fn whole_lines(path: &Path, bytes: &[u8]) -> Result<String, RunError> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8(bytes[..end].to_vec()).map_err(|e| RunError::Corrupt {
        path: path.display().to_string(),
        line: bytes[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1,
        detail: format!("not valid UTF-8: {e}"),
    })
}

fn parse_results(path: &Path, text: &str) -> Result<Vec<ProblemResult>, RunError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| RunError::Corrupt {
                path: path.display().to_string(),
                line: i + 1,
                detail: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{DatasetInfo, LeanInfo, ModelInfo, RESULT_SCHEMA, RUN_SCHEMA};

    fn config() -> RunConfig {
        let model = ModelInfo { spec: "replay:x".into(), describe: "replay:x".into() };
        RunConfig {
            schema: RUN_SCHEMA.into(),
            subgoal_version: "0".into(),
            created_unix: 0,
            dataset: DatasetInfo {
                name: "d".into(),
                path: "d.jsonl".into(),
                sha256: String::new(),
                split: None,
                limit: None,
                shard: None,
                format: None,
                problems: 3,
                load_errors: vec![],
            },
            prover: model.clone(),
            planner: model,
            engine: Default::default(),
            prompts: vec![],
            lean_version: "4".into(),
            lean: LeanInfo {
                lean: None,
                lean_project: None,
                max_heartbeats: 0,
                timeout_s: 1.0,
                allow_native_decide: false,
            },
            allow_broken_statements: false,
        }
    }

    fn result(name: &str) -> ProblemResult {
        ProblemResult {
            schema: RESULT_SCHEMA.into(),
            outcome: crate::pipeline::scheduler::ProblemOutcome {
                name: name.into(),
                solved: false,
                via: None,
                proof: None,
                reason: "r".into(),
                model_calls: 1,
                tokens: 1,
                lean_checks: 1,
                elapsed_ms: 1,
            },
            split: None,
            area: None,
            source: "d.jsonl:1".into(),
            samples: 1,
            correct: 0,
            truncated: 0,
            errored: 0,
            repair_samples: 0,
            broken_statement: false,
            first_success: None,
            attempts: 1,
            dag: format!("dags/{name}.json"),
        }
    }

    #[test]
    fn a_second_run_in_the_same_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        RunDir::create(d.path(), &config()).unwrap();
        assert!(matches!(RunDir::create(d.path(), &config()), Err(RunError::Exists(_))));
    }

    #[test]
    fn repair_cuts_a_torn_line_and_the_unfinished_problems_attempts() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::create(d.path(), &config()).unwrap();
        run.append_result(&result("a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(run.file("results.jsonl")).unwrap();
        // Cut inside a multi-byte character, as a kill can cut a write.
        f.write_all(&"{\"schema\":\"subgoal.result.v1\",\"name\":\"ℕ".as_bytes()[..40]).unwrap();
        let attempts =
            "{\"problem\":\"a\",\"n\":1}\n{\"problem\":\"b\",\"n\":2}\n{\"problem\":\"a\",\"n\":3}\n{\"probl";
        std::fs::write(run.file("attempts.jsonl"), attempts).unwrap();
        let done = run.repair().unwrap();
        assert_eq!(done.iter().map(|r| r.outcome.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(std::fs::read_to_string(run.file("results.jsonl")).unwrap().ends_with("}\n"));
        assert_eq!(
            std::fs::read_to_string(run.file("attempts.jsonl")).unwrap(),
            "{\"problem\":\"a\",\"n\":1}\n{\"problem\":\"a\",\"n\":3}\n"
        );
    }

    #[test]
    fn a_corrupt_whole_line_names_its_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::create(d.path(), &config()).unwrap();
        run.append_result(&result("a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(run.file("results.jsonl")).unwrap();
        f.write_all(b"garbage\n").unwrap();
        let e = run.repair().unwrap_err().to_string();
        assert!(e.contains("results.jsonl:2:"), "{e}");
    }
}
