//! `subgoal serve`: a model behind the OpenAI-compatible API.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The model name clients send (any name is answered; this one is listed by /v1/models).
    #[arg(long, default_value = "subgoal")]
    pub served_model_name: String,
    /// Most samples one request may ask for per prompt (`n`); more is answered 400.
    #[arg(long, default_value_t = 64)]
    pub max_n: usize,
    /// Most new tokens one sample may ask for (`max_tokens`); more is answered 400.
    #[arg(long, default_value_t = 32768)]
    pub max_tokens_limit: usize,
    /// Most prompts one completions request may hold; more is answered 400.
    #[arg(long, default_value_t = 64)]
    pub max_prompts: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let generator = args.model.open().await?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    eprintln!("subgoal serve: {} at http://{addr}/v1 as {:?}", generator.describe(), args.served_model_name);
    let limits = subgoal::model::serve::Limits {
        max_n: args.max_n,
        max_tokens: args.max_tokens_limit,
        max_prompts: args.max_prompts,
    };
    let served = subgoal::model::serve::serve(Arc::from(generator), args.served_model_name.clone(), limits, listener);
    tokio::select! {
        r = served => r.context("serving")?,
        _ = tokio::signal::ctrl_c() => eprintln!("subgoal serve: interrupted"),
    }
    Ok(ExitCode::SUCCESS)
}
