//! The registry of named datasets (`benchmarks/datasets.json`), finding their files in the data
//! directories, checking their sha256, and fetching them.

use super::formats::load_bytes;
use super::*;
// ---------------------------------------------------------------------------------------------
// Registry

/// One benchmark in `benchmarks/datasets.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub name: String,
    /// The file name looked for in the data directories.
    pub file: String,
    pub format: Format,
    /// Only records of this split belong to the benchmark.
    #[serde(default)]
    pub split: Option<String>,
    /// Where `fetch` downloads the file; `None` for data converted outside the repo.
    #[serde(default)]
    pub url: Option<String>,
    /// The upstream commit the file is from.
    pub revision: String,
    /// Problems the benchmark has once loaded.
    pub expected_count: usize,
    /// Records that are known not to load (ProofNet's `def` problems), so a regression can be
    /// told from them.
    #[serde(default)]
    pub expected_errors: usize,
    pub lean: String,
    pub mathlib: String,
    /// Hex sha256 of the whole file; empty to skip the check.
    pub sha256: String,
    /// Provenance, license and caveats.
    pub notes: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Registry {
    pub entries: Vec<RegistryEntry>,
}

impl Registry {
    /// The registry compiled into the binary.
    pub fn builtin() -> Registry {
        serde_json::from_str(include_str!("../../benchmarks/datasets.json"))
            .expect("benchmarks/datasets.json is a valid registry (a test loads it)")
    }

    pub fn get(&self, name: &str) -> Option<&RegistryEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }
}

/// A dataset file, and its registry entry when it was named by one.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    pub entry: Option<RegistryEntry>,
}

/// An existing file path is that file; otherwise a registry name, looked for in `data_dirs` in
/// order.
pub fn resolve(name_or_path: &str, data_dirs: &[PathBuf]) -> Result<Resolved, DatasetError> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        return Ok(Resolved { path: path.to_path_buf(), entry: None });
    }
    let registry = Registry::builtin();
    let Some(entry) = registry.get(name_or_path) else {
        if name_or_path.contains(std::path::MAIN_SEPARATOR) || name_or_path.ends_with(".jsonl") {
            return Err(DatasetError::NoSuchFile { path: path.to_path_buf() });
        }
        return Err(DatasetError::UnknownDataset {
            name: name_or_path.to_string(),
            known: registry.names().join(", "),
        });
    };
    if let Some(found) = data_dirs.iter().map(|d| d.join(&entry.file)).find(|p| p.is_file()) {
        return Ok(Resolved { path: found, entry: Some(entry.clone()) });
    }
    let searched = match data_dirs {
        [] => "none given".to_string(),
        dirs => dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    };
    let hint = match entry.url {
        Some(_) => format!("run `subgoal datasets fetch {}`, or pass --data-dir DIR holding it", entry.name),
        None => format!(
            "it cannot be downloaded ({}); copy it into a data directory, or pass --data-dir DIR holding it",
            entry.notes
        ),
    };
    Err(DatasetError::NotFound { name: entry.name.clone(), file: entry.file.clone(), searched, hint })
}

/// `$SUBGOAL_DATA` (colon-separated), then `~/.cache/subgoal/datasets`, then the copies this
/// checkout carries (`benchmarks/data`, with their provenance), so a fresh clone runs the
/// registry's benchmarks without a download.
pub fn default_data_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("SUBGOAL_DATA")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".cache/subgoal/datasets"));
    }
    dirs.push(bundled_data_dir());
    dirs
}

/// The benchmark files kept in this checkout.
pub fn bundled_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benchmarks/data")
}

/// DeepSeek-Prover-V2's verified MiniF2F-valid proofs kept in `benchmarks/data` (221 of them),
/// as `(name, code)`: the corpus the sketch tests, the closer census and the FP8 accuracy
/// benchmark read.
pub fn solutions_corpus() -> Result<Vec<(String, String)>, DatasetError> {
    let path = bundled_data_dir().join("deepseek-prover-v2-minif2f-solutions.valid.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| DatasetError::Read { path: path.clone(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |detail: &str| DatasetError::BadLine { path: path.clone(), line: i + 1, detail: detail.to_string() };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        match (v["name"].as_str(), v["code"].as_str()) {
            (Some(n), Some(c)) => out.push((n.to_string(), c.to_string())),
            _ => return Err(bad("no name or code")),
        }
    }
    Ok(out)
}

/// Loads a resolved dataset. With a registry entry: the file's sha256 must match the entry's
/// (unless that is empty) or this is an `Err`, because a benchmark's numbers are only comparable
/// on the registered bytes (to use a changed file anyway, load it by path); then the entry's
/// format is used and only its split kept (a line too broken to tell its split is reported
/// whatever it is). Without one: `load` with auto-detection.
pub fn load_entry(resolved: &Resolved) -> Result<Loaded, DatasetError> {
    let path = &resolved.path;
    let Some(entry) = &resolved.entry else {
        return load(path, None);
    };
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read { path: path.clone(), source })?;
    let loaded = load_bytes(&bytes, path, Some(&entry.format), entry.split.as_deref())?;
    if !entry.sha256.is_empty() {
        let actual = loaded.sha256.clone();
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            return Err(DatasetError::Checksum {
                name: entry.name.clone(),
                path: path.clone(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
    }
    Ok(loaded)
}

/// Downloads `entry.url` to `dir/entry.file` (creating `dir`) through a temporary file that is
/// renamed only once the sha256 matches, so a partial or wrong download never takes the name.
/// A file already there with the right sha256 is kept without downloading.
pub async fn fetch(entry: &RegistryEntry, dir: &Path) -> Result<PathBuf, DatasetError> {
    let Some(url) = &entry.url else {
        return Err(DatasetError::NoUrl {
            name: entry.name.clone(),
            file: entry.file.clone(),
            dir: dir.to_path_buf(),
            notes: entry.notes.clone(),
        });
    };
    let dest = dir.join(&entry.file);
    if !entry.sha256.is_empty() {
        if let Ok(bytes) = tokio::fs::read(&dest).await {
            if sha256_hex(&bytes).eq_ignore_ascii_case(&entry.sha256) {
                return Ok(dest);
            }
        }
    }
    tokio::fs::create_dir_all(dir).await.map_err(|source| DatasetError::Write { path: dir.to_path_buf(), source })?;
    let tmp = dir.join(format!(".{}.part-{}", entry.file, std::process::id()));
    let result = download(url, &tmp).await.and_then(|actual| {
        if entry.sha256.is_empty() || actual.eq_ignore_ascii_case(&entry.sha256) {
            Ok(())
        } else {
            Err(DatasetError::DownloadChecksum {
                name: entry.name.clone(),
                url: url.clone(),
                expected: entry.sha256.clone(),
                actual,
            })
        }
    });
    let result = match result {
        Ok(()) => {
            async {
                tokio::fs::rename(&tmp, &dest)
                    .await
                    .map_err(|source| DatasetError::Write { path: dest.clone(), source })?;
                // The rename is durable only once the directory is synced.
                let in_dir = |source| DatasetError::Write { path: dir.to_path_buf(), source };
                tokio::fs::File::open(dir).await.map_err(in_dir)?.sync_all().await.map_err(in_dir)
            }
            .await
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        // Best effort: the temporary file must not linger, but failing to remove it is not the error.
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(|()| dest)
}

/// Streams `url` into `tmp`, returning the hex sha256 of what was written.
async fn download(url: &str, tmp: &Path) -> Result<String, DatasetError> {
    use tokio::io::AsyncWriteExt;

    let failed = |e: reqwest::Error| DatasetError::Download { url: url.to_string(), detail: e.to_string() };
    let write_err = |source| DatasetError::Write { path: tmp.to_path_buf(), source };
    let client =
        reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(30)).build().map_err(failed)?;
    let mut response = client.get(url).send().await.and_then(|r| r.error_for_status()).map_err(failed)?;
    let mut file = tokio::fs::File::create(tmp).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.sync_all().await.map_err(write_err)?;
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_registry_parses_with_unique_names() {
        let r = Registry::builtin();
        let mut names = r.names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), r.entries.len());
    }
}
