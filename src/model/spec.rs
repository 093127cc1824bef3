//! `--model` specifications and opening a generator from one:
//!
//! - `replay:FILE`: answers from a recording (`replay-timed:FILE`: with the recorded latency);
//! - `http://…` / `https://…`: an OpenAI-compatible server;
//! - a path: a GGUF file, a directory holding one, or a Hugging Face model directory;
//! - `ORG/NAME[:FILE.gguf][@REVISION]`: a Hugging Face Hub model, from the local cache (offline)
//!   or downloaded into it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::embedded::{Embedded, EmbeddedOptions};
use super::openai::{OpenAiClient, OpenAiConfig};
use super::record::{Recorder, Replay};
use super::{GenError, Generator};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Replay(PathBuf),
    ReplayTimed(PathBuf),
    Server(String),
    Local(PathBuf),
    Hub { repo: String, file: Option<String>, revision: String },
}

impl ModelSpec {
    pub fn parse(s: &str) -> Result<ModelSpec, GenError> {
        if let Some(p) = s.strip_prefix("replay:") {
            return Ok(ModelSpec::Replay(PathBuf::from(p)));
        }
        if let Some(p) = s.strip_prefix("replay-timed:") {
            return Ok(ModelSpec::ReplayTimed(PathBuf::from(p)));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(ModelSpec::Server(s.to_string()));
        }
        let path = Path::new(s);
        if path.exists() || s.starts_with('.') || s.starts_with('/') || s.ends_with(".gguf") && !s.contains(':') {
            return Ok(ModelSpec::Local(path.to_path_buf()));
        }
        let (rest, revision) = match s.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev.to_string()),
            _ => (s, "main".to_string()),
        };
        let (repo, file) = match rest.split_once(':') {
            Some((r, f)) => (r, Some(f.to_string())),
            None => (rest, None),
        };
        let valid = repo.split('/').count() == 2 && repo.split('/').all(|p| !p.is_empty());
        if !valid {
            return Err(GenError::Invalid(format!(
                "--model {s:?}: not a file, an http(s) URL, replay:FILE, or a Hugging Face id ORG/NAME[:FILE.gguf][@REV]"
            )));
        }
        Ok(ModelSpec::Hub { repo: repo.to_string(), file, revision })
    }
}

/// How to open a model.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub embedded: EmbeddedOptions,
    /// The `model` name sent to a server (default: `default`).
    pub server_model: Option<String>,
    /// An attempt fails when the server sends nothing for this long.
    pub server_timeout: Option<Duration>,
    /// The environment variable holding the server's API key (default `OPENAI_API_KEY`).
    pub api_key_env: Option<String>,
    pub server_concurrency: Option<usize>,
    /// Hugging Face cache directory (default: `$HF_HOME/hub` or `~/.cache/huggingface/hub`).
    pub hub_cache: Option<PathBuf>,
    /// Use only the local cache (also when `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Record every answer to this JSONL file.
    pub record: Option<PathBuf>,
}

/// Opens the generator `spec` names.
pub async fn open(spec: &ModelSpec, opts: &OpenOptions) -> Result<Box<dyn Generator>, GenError> {
    let g: Box<dyn Generator> = match spec {
        ModelSpec::Replay(p) => Box::new(Replay::open(p)?),
        ModelSpec::ReplayTimed(p) => Box::new(Replay::open(p)?.timed(true)),
        ModelSpec::Server(url) => {
            let mut cfg = OpenAiConfig::new(url, opts.server_model.as_deref().unwrap_or("default"));
            let key_env = opts.api_key_env.as_deref().unwrap_or(super::openai::DEFAULT_KEY_ENV);
            cfg.api_key = super::openai::api_key_from(key_env);
            if let Some(t) = opts.server_timeout {
                cfg.idle_timeout = t;
            }
            if let Some(c) = opts.server_concurrency {
                cfg.max_concurrency = c;
            }
            Box::new(OpenAiClient::new(cfg)?)
        }
        ModelSpec::Local(p) => {
            let (p, e) = (p.clone(), opts.embedded.clone());
            Box::new(blocking_load(move || Embedded::load(&p, &e)).await?)
        }
        ModelSpec::Hub { repo, file, revision } => {
            let offline = opts.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
            let path = super::hub::resolve(repo, revision, file.as_deref(), opts.hub_cache.clone(), offline).await?;
            let e = opts.embedded.clone();
            Box::new(blocking_load(move || Embedded::load(&path, &e)).await?)
        }
    };
    match &opts.record {
        Some(path) => Ok(Box::new(Recorder::new(g, path)?)),
        None => Ok(g),
    }
}

async fn blocking_load(f: impl FnOnce() -> Result<Embedded, GenError> + Send + 'static) -> Result<Embedded, GenError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| GenError::Backend(format!("loading thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_their_backend() {
        assert_eq!(ModelSpec::parse("replay:a.jsonl").unwrap(), ModelSpec::Replay("a.jsonl".into()));
        assert_eq!(ModelSpec::parse("replay-timed:a.jsonl").unwrap(), ModelSpec::ReplayTimed("a.jsonl".into()));
        assert_eq!(ModelSpec::parse("http://h:8000").unwrap(), ModelSpec::Server("http://h:8000".into()));
        assert_eq!(ModelSpec::parse("./m.gguf").unwrap(), ModelSpec::Local("./m.gguf".into()));
        assert_eq!(
            ModelSpec::parse("deepseek-ai/DeepSeek-Prover-V2-7B").unwrap(),
            ModelSpec::Hub { repo: "deepseek-ai/DeepSeek-Prover-V2-7B".into(), file: None, revision: "main".into() }
        );
        assert_eq!(
            ModelSpec::parse("org/m-GGUF:m.Q4_K_M.gguf@v1").unwrap(),
            ModelSpec::Hub { repo: "org/m-GGUF".into(), file: Some("m.Q4_K_M.gguf".into()), revision: "v1".into() }
        );
        assert!(ModelSpec::parse("nonsense").is_err());
    }
}
