//! Models by Hugging Face id: files come from the Hub cache (`models--ORG--NAME/refs/REV` naming
//! a snapshot, `snapshots/SHA/FILE`), or are downloaded into it with `hf-hub` when online.
//!
//! A GGUF id names its file (`ORG/NAME:FILE.gguf`); otherwise the repository is a Hugging Face
//! model directory and its config, tokenizer and safetensors files (one file, or the shards an
//! index lists) are fetched. The result is a local path `Embedded::load` takes.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use super::GenError;

const OPTIONAL: [&str; 2] = ["tokenizer_config.json", "generation_config.json"];

fn err(repo: &str, detail: impl std::fmt::Display) -> GenError {
    GenError::Load { model: repo.to_string(), detail: detail.to_string() }
}

/// Local path of `repo` at `revision`: the GGUF file, or the snapshot directory.
pub async fn resolve(
    repo: &str,
    revision: &str,
    file: Option<&str>,
    cache_dir: Option<PathBuf>,
    offline: bool,
) -> Result<PathBuf, GenError> {
    let cache = cache_dir.map(Cache::new).unwrap_or_else(Cache::from_env);
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    // The download client is built once, and only when downloads are allowed.
    let api = if offline {
        None
    } else {
        Some(
            hf_hub::api::tokio::ApiBuilder::from_cache(cache.clone())
                .with_progress(false)
                .build()
                .map_err(|e| err(repo, e))?,
        )
    };
    let fetch = Fetcher { repo, cache, hub_repo, api };
    if let Some(f) = file {
        return fetch.get(f).await;
    }
    let config = fetch.get("config.json").await?;
    fetch.get("tokenizer.json").await?;
    for f in OPTIONAL {
        let _ = fetch.get(f).await;
    }
    match fetch.get("model.safetensors.index.json").await {
        Ok(index) => {
            for shard in shards(&index).map_err(|e| err(repo, e))? {
                fetch.get(&shard).await?;
            }
        }
        Err(_) => {
            fetch.get("model.safetensors").await?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

struct Fetcher<'a> {
    repo: &'a str,
    cache: Cache,
    hub_repo: Repo,
    /// `None`: offline.
    api: Option<hf_hub::api::tokio::Api>,
}

impl Fetcher<'_> {
    async fn get(&self, file: &str) -> Result<PathBuf, GenError> {
        if let Some(p) = self.cache.repo(self.hub_repo.clone()).get(file) {
            return Ok(p);
        }
        let Some(api) = &self.api else {
            return Err(err(
                self.repo,
                format!("{file} is not in the Hugging Face cache {} (offline)", self.cache.path().display()),
            ));
        };
        api.repo(self.hub_repo.clone()).get(file).await.map_err(|e| err(self.repo, format!("downloading {file}: {e}")))
    }
}

/// Shard file names listed in a `model.safetensors.index.json`, sorted, each once.
pub fn shards(index: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| format!("{}: {e}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
    let mut files: Vec<String> = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("{} has no weight_map", index.display()))?
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out a Hub cache as huggingface_hub writes it: blobs, a snapshot of symlinks, a ref.
    fn fake_cache(root: &Path, repo: &str, files: &[(&str, &str)]) {
        let dir = root.join(format!("models--{}", repo.replace('/', "--")));
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("refs/main"), sha).unwrap();
        let snap = dir.join("snapshots").join(sha);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        for (i, (name, body)) in files.iter().enumerate() {
            let blob = dir.join("blobs").join(format!("blob{i}"));
            std::fs::write(&blob, body).unwrap();
            std::os::unix::fs::symlink(&blob, snap.join(name)).unwrap();
        }
    }

    #[tokio::test]
    async fn a_cached_model_directory_resolves_offline_with_its_shards() {
        let root = tempfile::tempdir().unwrap();
        let index =
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
        fake_cache(
            root.path(),
            "org/tiny",
            &[
                ("config.json", "{}"),
                ("tokenizer.json", "{}"),
                ("model.safetensors.index.json", index),
                ("model-00001-of-00002.safetensors", ""),
                ("model-00002-of-00002.safetensors", ""),
            ],
        );
        let dir = resolve("org/tiny", "main", None, Some(root.path().into()), true).await.unwrap();
        assert!(dir.join("model-00002-of-00002.safetensors").exists());
    }

    #[tokio::test]
    async fn a_missing_file_offline_names_the_file_and_the_cache() {
        let root = tempfile::tempdir().unwrap();
        fake_cache(root.path(), "org/tiny", &[("config.json", "{}")]);
        let e = resolve("org/tiny", "main", None, Some(root.path().into()), true).await.unwrap_err().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("offline"), "{e}");
    }
}
