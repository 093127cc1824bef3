//! `subgoal generate`: sample completions from a model (embedded, a server, or a recording) and
//! print them, as a table or JSON.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use subgoal::model::{ChatMessage, GenRequest, Prompt, SamplingParams};

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Prompt text (repeat for a batch).
    #[arg(long, short, required = true)]
    pub prompt: Vec<String>,
    /// Send each prompt as a user chat message (the model's chat template applies).
    #[arg(long)]
    pub chat: bool,
    /// Completions per prompt.
    #[arg(long, short, default_value_t = 1)]
    pub n: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub async fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let generator = args.model.open().await?;
    let prompts: Vec<Prompt> =
        args.prompt
            .iter()
            .map(|p| {
                if args.chat {
                    Prompt::Chat(vec![ChatMessage::new("user", p.clone())])
                } else {
                    Prompt::Text(p.clone())
                }
            })
            .collect();
    let params = SamplingParams {
        n: args.n,
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_tokens,
        stop: args.stop.clone(),
        seed: args.seed,
    };
    let req = GenRequest { prompts: prompts.clone(), params };
    let out = generator.generate(&req).await.with_context(|| format!("generating with {}", generator.describe()))?;
    if args.json {
        let results: Vec<serde_json::Value> =
            prompts.iter().zip(&out).map(|(p, cs)| serde_json::json!({"prompt": p, "completions": cs})).collect();
        let doc = serde_json::json!({"model": generator.describe(), "params": req.params, "results": results});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (p, cs) in prompts.iter().zip(&out) {
            println!("=== {}", serde_json::to_string(p)?);
            for (i, c) in cs.iter().enumerate() {
                let why = c.error.as_deref().map(|e| format!(", error: {e}")).unwrap_or_default();
                println!(
                    "--- [{i}] {:?}, {} prompt + {} completion tokens, {} ms{why}",
                    c.finish_reason, c.prompt_tokens, c.completion_tokens, c.elapsed_ms
                );
                println!("{}", c.text);
            }
        }
    }
    let failed = out.iter().flatten().filter(|c| c.error.is_some()).count();
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
