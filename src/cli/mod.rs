//! Command-line edge: flag definitions and the commands. Errors become `anyhow` here, with
//! context naming the file or flag involved; the library below stays typed.

mod bench;
mod convert;
mod doctor;
mod generate;
mod prove;
mod report;
mod serve;
mod synth;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use anyhow::Context;
use subgoal::lean::discovery::{LeanChoice, LeanInstall};
use subgoal::lean::session::ServerConfig;
use subgoal::model::embedded::EmbeddedOptions;
use subgoal::model::spec::{open, ModelSpec, OpenOptions};
use subgoal::process::ProcessLimits;
use subgoal::sandbox::{SandboxMode, SandboxPolicy};
use subgoal::verify::PoolConfig;

#[derive(Parser, Debug)]
#[command(
    name = "subgoal",
    version,
    about = "Lean 4 theorem proving after DeepSeek-Prover-V2: sketch, decompose, prove, verify"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check candidate proofs with Lean and print one verdict per candidate.
    Verify(verify::VerifyArgs),
    /// Show which Lean subgoal finds and what it can import.
    Doctor(doctor::DoctorArgs),
    /// Sample completions from a model (embedded, an OpenAI-compatible server, or a recording).
    Generate(generate::GenerateArgs),
    /// Serve a model over the OpenAI-compatible API.
    Serve(serve::ServeArgs),
    /// Prove one theorem: whole-proof sampling and recursive decomposition into subgoals.
    Prove(Box<prove::ProveArgs>),
    /// Run a dataset (MiniF2F, ProverBench, PutnamBench, ProofNet, any JSONL) into a resumable run directory.
    Bench(Box<bench::BenchArgs>),
    /// Tables and plots of one run, or several side by side.
    Report(report::ReportArgs),
    /// The registry of named datasets.
    #[command(subcommand)]
    Datasets(bench::DatasetsCommand),
    /// Chain-of-thought cold-start data from runs: CoT and subgoal examples, chat and pair layouts.
    Synth(Box<synth::SynthArgs>),
    /// Join synthesis shards: de-duplicated examples and summed counts.
    Merge(synth::MergeArgs),
    /// Rewrite a model as a Hugging Face directory in another precision (FP8 included).
    Convert(convert::ConvertArgs),
}

/// Which model to use and how; shared by every command that generates.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file or Hugging Face model directory, `ORG/NAME[:FILE.gguf][@REV]` (Hugging Face Hub),
    /// `http(s)://HOST:PORT` (an OpenAI-compatible server) or `replay:FILE` (a recording).
    /// Default: the test model this checkout installs (SmolLM2-135M-Instruct, Q4_1).
    #[arg(long, short)]
    pub model: Option<String>,
    /// The environment variable holding the server's API key (never written anywhere).
    #[arg(long, value_name = "VAR", default_value = subgoal::model::openai::DEFAULT_KEY_ENV)]
    pub api_key_env: String,
    #[command(flatten)]
    pub options: ModelOptions,
}

impl ModelArgs {
    pub async fn open(&self) -> anyhow::Result<Box<dyn subgoal::model::Generator>> {
        self.options.open(self.model.as_deref(), &self.api_key_env).await
    }
}

/// How to open and run a model, whichever one it is.
#[derive(Args, Debug, Clone)]
pub struct ModelOptions {
    /// Embedded backend device: cpu, cuda, cuda:N, a list (cuda:0,1,3) or cuda:all: one engine
    /// per device with its own weights and KV cache, each request routed to the least loaded
    /// (a problem's prompts to the one caching their prefix), a failed device's samples rerun
    /// on the others.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Embedded backend precision: f32, bf16, f16 (default: f32 on CPU, bf16 on CUDA), or fp8:
    /// projections in E4M3 with 128×128 block scales (a Hugging Face directory, bf16/f16/f32
    /// weights converted at load or an FP8 checkpoint as it is; activations f32 on the CPU, bf16
    /// on CUDA).
    #[arg(long)]
    pub dtype: Option<String>,
    /// With --dtype fp8: layers whose projections stay in the compute type, by index (negative
    /// from the end: `0,-1` keeps the first and the last, which on small models carry most of
    /// FP8's loss).
    #[arg(long, value_name = "LIST", value_delimiter = ',', allow_negative_numbers = true)]
    pub fp8_dense_layers: Vec<i64>,
    /// Embedded backend KV cache: auto (the compute type) or fp8 (E4M3, one scale per token and
    /// head; on CUDA with a bf16 or f16 model).
    #[arg(long, default_value = "auto", value_parser = ["auto", "fp8"])]
    pub kv_dtype: String,
    /// A tokenizer.json to use instead of the model's own (for GGUF files).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Embedded backend: KV cache size in MiB (default: --kv-cache-fraction of the GPU memory
    /// left after the weights; 1024 on the CPU).
    #[arg(long, value_name = "MIB")]
    pub kv_cache_mb: Option<usize>,
    /// Embedded backend on CUDA: fraction of the free device memory the KV cache takes.
    #[arg(long, default_value_t = 0.9)]
    pub kv_cache_fraction: f64,
    /// Embedded backend: positions per KV cache block.
    #[arg(long, default_value_t = 16)]
    pub kv_block_size: usize,
    /// Embedded backend: tokens one engine step runs (every decode first, prompt chunks in the rest).
    #[arg(long, default_value_t = 2048)]
    pub max_batch_tokens: usize,
    /// Embedded backend: sequences decoded at once.
    #[arg(long, default_value_t = 256)]
    pub max_running: usize,
    /// The model name sent to a server.
    #[arg(long)]
    pub server_model: Option<String>,
    /// Seconds a server may send nothing before the attempt is retried (answers are streamed,
    /// so a long answer is not cut by this).
    #[arg(long, default_value_t = 600.0, value_parser = positive_seconds)]
    pub server_timeout: f64,
    /// Server requests in flight at once (default: 16; for prove, bench and synth, the model
    /// concurrency).
    #[arg(long)]
    pub server_concurrency: Option<usize>,
    /// Hugging Face cache directory (default: $HF_HOME/hub or ~/.cache/huggingface/hub).
    #[arg(long, value_name = "DIR")]
    pub hf_cache: Option<PathBuf>,
    /// Use only files already in the Hugging Face cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Append every prompt, its parameters and completions to this JSONL file.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

impl ModelOptions {
    /// Opens the model `spec` names (default: the installed test model).
    pub async fn open(
        &self,
        spec: Option<&str>,
        api_key_env: &str,
    ) -> anyhow::Result<Box<dyn subgoal::model::Generator>> {
        let spec_text = match spec {
            Some(m) => m.to_string(),
            None => {
                let p = subgoal::model::test_model_path();
                anyhow::ensure!(
                    p.exists(),
                    "no --model given and the test model is not installed at {} (run scripts/install-test-model.sh)",
                    p.display()
                );
                p.display().to_string()
            }
        };
        let spec = ModelSpec::parse(&spec_text)?;
        let opts = OpenOptions {
            embedded: EmbeddedOptions {
                device: self.device.clone(),
                dtype: self.dtype.clone(),
                fp8_dense_layers: self.fp8_dense_layers.clone(),
                tokenizer: self.tokenizer.clone(),
                engine: subgoal::model::engine::EngineOptions {
                    block_size: self.kv_block_size.max(1),
                    cache_blocks: None,
                    cache_mb: self.kv_cache_mb,
                    cache_fraction: self.kv_cache_fraction,
                    max_batch_tokens: self.max_batch_tokens.max(1),
                    max_running: self.max_running.max(1),
                    kv_fp8: self.kv_dtype == "fp8",
                },
            },
            server_model: self.server_model.clone(),
            server_timeout: Some(Duration::from_secs_f64(self.server_timeout)),
            server_concurrency: Some(self.server_concurrency.unwrap_or(16)),
            api_key_env: Some(api_key_env.to_string()),
            hub_cache: self.hf_cache.clone(),
            offline: self.offline,
            record: self.record.clone(),
        };
        open(&spec, &opts).await.with_context(|| format!("opening model {spec_text}"))
    }
}

/// How to find and bound Lean; shared by every command that runs it.
#[derive(Args, Debug, Clone)]
pub struct LeanArgs {
    /// The `lean` executable to run.
    #[arg(long, value_name = "PATH")]
    pub lean: Option<PathBuf>,
    /// A Lake project (how Mathlib is found): resolved once with `lake env printenv` to its `lean`
    /// and `LEAN_PATH`, which then run directly.
    #[arg(long, value_name = "DIR")]
    pub lean_project: Option<PathBuf>,
    /// Lean's maxHeartbeats for each command (0: unlimited).
    #[arg(long, default_value_t = 200_000)]
    pub max_heartbeats: u64,
    /// Lean's own memory cap per process, MiB (passed as --memory).
    #[arg(long, default_value_t = 8192)]
    pub memory_mb: u64,
    /// OS address-space limit per Lean process, MiB (0: none). Mathlib maps several GiB of .olean files.
    #[arg(long, default_value_t = 32768)]
    pub address_space_mb: u64,
    /// Stop a check when its Lean processes own more memory than this, MiB (anonymous memory, not
    /// the `.olean` files every worker maps and shares; default: 80% of physical memory shared
    /// among the workers; 0: never).
    #[arg(long, value_name = "MIB")]
    pub kill_rss_mb: Option<u64>,
    /// Seconds allowed to load a new import header.
    #[arg(long, default_value_t = 600)]
    pub import_timeout: u64,
    /// Sandbox for Lean processes: `auto` uses what the kernel offers (Landlock, network
    /// namespace), `required` refuses to run without both, `off` keeps only the scratch
    /// directory, scrubbed environment and rlimits.
    #[arg(long, value_enum, default_value_t = SandboxArg::Auto)]
    pub sandbox: SandboxArg,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxArg {
    Auto,
    Required,
    Off,
}

impl From<SandboxArg> for SandboxMode {
    fn from(a: SandboxArg) -> Self {
        match a {
            SandboxArg::Auto => SandboxMode::Auto,
            SandboxArg::Required => SandboxMode::Required,
            SandboxArg::Off => SandboxMode::Off,
        }
    }
}

impl LeanArgs {
    pub fn install(&self) -> anyhow::Result<LeanInstall> {
        Ok(LeanInstall::discover(&LeanChoice { lean: self.lean.clone(), lean_project: self.lean_project.clone() })?)
    }

    pub fn server_config(&self, install: LeanInstall, threads: usize, workers: usize) -> ServerConfig {
        ServerConfig {
            install,
            max_heartbeats: Some(self.max_heartbeats),
            memory_mb: (self.memory_mb > 0).then_some(self.memory_mb),
            threads: Some(threads.max(1)),
            limits: ProcessLimits {
                address_space_mb: (self.address_space_mb > 0).then_some(self.address_space_mb),
                open_files: Some(4096),
                // Bounds a fork bomb; Linux does not apply RLIMIT_NPROC to root, and it counts all
                // of the user's processes and threads, hence the generous figure.
                // SAFETY: getuid cannot fail.
                processes: (unsafe { libc::getuid() } != 0).then_some(16384),
                ..Default::default()
            },
            sandbox: SandboxPolicy { mode: self.sandbox.into(), ..Default::default() },
            kill_rss_mb: match self.kill_rss_mb {
                Some(0) => None,
                Some(mb) => Some(mb),
                None => physical_memory_mb().map(|m| (m * 4 / 5 / workers.max(1) as u64).max(1024)),
            },
            request_timeout: Duration::from_secs(120),
            import_timeout: Duration::from_secs(self.import_timeout),
        }
    }

    pub fn pool_config(
        &self,
        install: LeanInstall,
        workers: usize,
        timeout: f64,
        recycle_after: u64,
        max_rss_mb: u64,
    ) -> PoolConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PoolConfig {
            server: self.server_config(install, cores / workers.max(1), workers),
            workers,
            timeout: Duration::from_secs_f64(timeout),
            recycle_after,
            max_rss_mb: (max_rss_mb > 0).then_some(max_rss_mb),
        }
    }
}

/// Total physical memory from `/proc/meminfo`, MiB.
fn physical_memory_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Clap parser for a duration flag in seconds: finite and positive.
pub fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

/// Logs to stderr (`-v`, `-vv`, `RUST_LOG`), and for commands with a run directory also to
/// `run.log` there, at info level whatever the verbosity.
pub fn init_logging(verbose: u8, file: Option<&std::path::Path>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let default = match verbose {
        0 => "warn",
        1 => "subgoal=info",
        _ => "subgoal=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let file_layer = file.and_then(|path| {
        std::fs::create_dir_all(path.parent()?).ok()?;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path).ok()?;
        let level = tracing_subscriber::EnvFilter::new(if verbose > 1 { "subgoal=debug" } else { "subgoal=info" });
        Some(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(std::sync::Mutex::new(f)).with_filter(level))
    });
    let _ = tracing_subscriber::registry().with(stderr).with(file_layer).try_init();
}

pub async fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    // A fresh run's default directory is named once, here, so its log and its files agree.
    if let Command::Bench(a) = &mut cli.command {
        if a.resume.is_none() && a.run_dir.is_none() {
            a.run_dir = Some(a.run_path());
        }
    }
    if let Command::Synth(a) = &mut cli.command {
        if a.from_run.is_empty() && a.bench.resume.is_none() && a.bench.run_dir.is_none() {
            a.bench.run_dir = Some(a.out.join("run"));
        }
    }
    let log_file = match &cli.command {
        Command::Bench(a) => Some(a.run_path().join("run.log")),
        Command::Synth(a) if a.from_run.is_empty() => Some(a.out.join("run").join("run.log")),
        _ => None,
    };
    init_logging(cli.verbose, log_file.as_deref());
    match cli.command {
        Command::Verify(a) => verify::run(a).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Generate(a) => generate::run(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Prove(a) => prove::run(*a).await,
        Command::Bench(a) => bench::run(*a).await,
        Command::Report(a) => report::run(a).await,
        Command::Datasets(c) => bench::datasets_command(c).await,
        Command::Synth(a) => synth::run(*a).await,
        Command::Merge(a) => synth::merge(a).await,
        Command::Convert(a) => convert::run(a).await,
    }
}
