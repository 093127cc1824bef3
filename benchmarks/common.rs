//! What the Lean benchmarks share: a worker pool over the test toolchain's Lean, with the
//! sandbox the machine offers and generous limits (the benchmarks measure speed, not limits).

use std::path::Path;
use std::time::Duration;

use subgoal::lean::discovery::{LeanInstall, LeanSource};
use subgoal::lean::session::ServerConfig;
use subgoal::process::ProcessLimits;
use subgoal::sandbox::SandboxPolicy;
use subgoal::verify::PoolConfig;

pub fn test_toolchain_pool(lean: &Path, workers: usize) -> PoolConfig {
    PoolConfig {
        server: ServerConfig {
            install: LeanInstall::at(lean, LeanSource::TestToolchain),
            max_heartbeats: Some(200_000),
            memory_mb: Some(4096),
            threads: Some(1),
            limits: ProcessLimits::default(),
            sandbox: SandboxPolicy::default(),
            kill_rss_mb: None,
            request_timeout: Duration::from_secs(60),
            import_timeout: Duration::from_secs(600),
        },
        workers,
        timeout: Duration::from_secs(60),
        recycle_after: 100_000,
        max_rss_mb: None,
    }
}
