//! Record and replay: `Recorder` writes every prompt a generator answers, with its parameters and
//! completions, as JSONL (one line per prompt, flushed per line); `Replay` answers from such a
//! file, keyed by prompt and parameters. Replay makes runs reproducible and lets tests script a
//! model with real recorded answers.
//!
//! A key recorded several times is answered in recorded order; once those are used up, the last
//! answer repeats (what a seeded model would do). An answer recorded without a seed (`seed:
//! null`: a run without `--seed`, or a hand-written script) answers the same request with any
//! seed, since such a recording cannot say which seed it would have drawn with. A timed replay also takes as long as the
//! recording says each request took (`elapsed_ms`), to stand in for a model's latency in
//! benchmarks and cancellation tests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Completion, GenError, GenFuture, GenRequest, Generator, Prompt, SamplingParams};

/// One line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordLine {
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub completions: Vec<Completion>,
}

fn key(prompt: &Prompt, params: &SamplingParams) -> String {
    // Field order is fixed by the types, so this is canonical.
    serde_json::to_string(&(prompt, params)).unwrap_or_default()
}

/// Wraps a generator and appends what it answers to a JSONL file.
pub struct Recorder {
    inner: Box<dyn Generator>,
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Recorder {
    pub fn new(inner: Box<dyn Generator>, path: &Path) -> Result<Recorder, GenError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| GenError::Backend(format!("cannot open recording {}: {e}", path.display())))?;
        Ok(Recorder { inner, path: path.to_path_buf(), file: Mutex::new(file) })
    }
}

impl Recorder {
    fn write_line(&self, line: &RecordLine) -> Result<(), GenError> {
        let mut text = serde_json::to_string(line).map_err(|e| GenError::Backend(e.to_string()))?;
        text.push('\n');
        let mut f = self.file.lock().map_err(|_| GenError::Backend("recording lock poisoned".into()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .map_err(|e| GenError::Backend(format!("writing recording {}: {e}", self.path.display())))
    }
}

impl Generator for Recorder {
    /// The inner stream, passed through; a prompt's line is written once all its samples are in.
    fn stream<'a>(&'a self, req: &'a GenRequest) -> super::SampleStream<'a> {
        use futures::StreamExt;
        let mut pending: Vec<Vec<Option<Completion>>> = vec![vec![None; req.params.n]; req.prompts.len()];
        Box::pin(self.inner.stream(req).map(move |item| {
            if let Ok(d) = &item {
                if let Some(slot) = pending.get_mut(d.prompt).and_then(|p| p.get_mut(d.sample)) {
                    *slot = Some(d.completion.clone());
                }
                if pending[d.prompt].iter().all(Option::is_some) {
                    let completions = pending[d.prompt].iter_mut().filter_map(Option::take).collect();
                    let line =
                        RecordLine { prompt: req.prompts[d.prompt].clone(), params: req.params.clone(), completions };
                    self.write_line(&line)?;
                }
            }
            item
        }))
    }

    /// The inner events (text deltas included), passed through and recorded like `stream`.
    fn events<'a>(&'a self, req: &'a GenRequest) -> super::EventStream<'a> {
        use futures::StreamExt;
        let mut pending: Vec<Vec<Option<Completion>>> = vec![vec![None; req.params.n]; req.prompts.len()];
        Box::pin(self.inner.events(req).map(move |item| {
            if let Ok(super::GenEvent::Done(d)) = &item {
                if let Some(slot) = pending.get_mut(d.prompt).and_then(|p| p.get_mut(d.sample)) {
                    *slot = Some(d.completion.clone());
                }
                if pending[d.prompt].iter().all(Option::is_some) {
                    let completions = pending[d.prompt].iter_mut().filter_map(Option::take).collect();
                    let line =
                        RecordLine { prompt: req.prompts[d.prompt].clone(), params: req.params.clone(), completions };
                    self.write_line(&line)?;
                }
            }
            item
        }))
    }

    fn generate<'a>(&'a self, req: &'a GenRequest) -> GenFuture<'a> {
        Box::pin(async move {
            let out = self.inner.generate(req).await?;
            let mut lines = String::new();
            for (prompt, completions) in req.prompts.iter().zip(&out) {
                let line =
                    RecordLine { prompt: prompt.clone(), params: req.params.clone(), completions: completions.clone() };
                lines.push_str(&serde_json::to_string(&line).map_err(|e| GenError::Backend(e.to_string()))?);
                lines.push('\n');
            }
            let mut f = self.file.lock().map_err(|_| GenError::Backend("recording lock poisoned".into()))?;
            f.write_all(lines.as_bytes())
                .and_then(|_| f.flush())
                .map_err(|e| GenError::Backend(format!("writing recording {}: {e}", self.path.display())))?;
            Ok(out)
        })
    }

    fn describe(&self) -> String {
        format!("{} (recording to {})", self.inner.describe(), self.path.display())
    }

    fn metrics(&self) -> Option<super::engine::MetricsSnapshot> {
        self.inner.metrics()
    }
}

/// Answers from a recording.
pub struct Replay {
    path: PathBuf,
    /// Recorded answers by key, with how many of them were given (no allocation per request).
    answers: HashMap<String, (Vec<Vec<Completion>>, AtomicUsize)>,
    timed: bool,
}

impl Replay {
    pub fn open(path: &Path) -> Result<Replay, GenError> {
        let load = |detail: String| GenError::Load { model: format!("replay:{}", path.display()), detail };
        let text = std::fs::read_to_string(path).map_err(|e| load(e.to_string()))?;
        let mut answers: HashMap<String, (Vec<Vec<Completion>>, AtomicUsize)> = HashMap::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r: RecordLine = serde_json::from_str(line).map_err(|e| load(format!("line {}: {e}", i + 1)))?;
            answers.entry(key(&r.prompt, &r.params)).or_default().0.push(r.completions);
        }
        Ok(Replay { path: path.to_path_buf(), answers, timed: false })
    }

    /// Makes each request last as long as the slowest of its recorded answers took.
    pub fn timed(mut self, timed: bool) -> Replay {
        self.timed = timed;
        self
    }

    fn answer(&self, prompt: &Prompt, params: &SamplingParams) -> Result<Vec<Completion>, GenError> {
        let unseeded = || key(prompt, &SamplingParams { seed: None, ..params.clone() });
        let found = self.answers.get(&key(prompt, params)).or_else(|| self.answers.get(&unseeded()));
        let Some((list, used)) = found else {
            let shown = serde_json::to_string(prompt).unwrap_or_default();
            let shown: String = shown.chars().take(120).collect();
            return Err(GenError::ReplayMiss(format!(
                "prompt {shown} with these parameters (n={}, temperature={}, seed={:?}) in {}",
                params.n,
                params.temperature,
                params.seed,
                self.path.display()
            )));
        };
        let i = used.fetch_add(1, Ordering::Relaxed);
        Ok(list[i.min(list.len() - 1)].clone())
    }
}

impl Generator for Replay {
    fn generate<'a>(&'a self, req: &'a GenRequest) -> GenFuture<'a> {
        Box::pin(async move {
            let out: Vec<Vec<Completion>> =
                req.prompts.iter().map(|p| self.answer(p, &req.params)).collect::<Result<_, _>>()?;
            if self.timed {
                let ms = out.iter().flatten().map(|c| c.elapsed_ms).max().unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Ok(out)
        })
    }

    fn describe(&self) -> String {
        let kind = if self.timed { "replay-timed" } else { "replay" };
        format!("{kind}:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FinishReason;

    fn completion(text: &str) -> Completion {
        Completion {
            text: text.into(),
            prompt_tokens: 3,
            completion_tokens: 2,
            finish_reason: FinishReason::Stop,
            error: None,
            elapsed_ms: 1,
        }
    }

    #[test]
    fn recorded_keys_answer_in_order_then_repeat_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let params = SamplingParams::default();
        let mut text = String::new();
        for t in ["one", "two"] {
            let line = RecordLine {
                prompt: Prompt::Text("p".into()),
                params: params.clone(),
                completions: vec![completion(t)],
            };
            text.push_str(&serde_json::to_string(&line).unwrap());
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        let r = Replay::open(&path).unwrap();
        let p = Prompt::Text("p".into());
        let got: Vec<String> = (0..3).map(|_| r.answer(&p, &params).unwrap()[0].text.clone()).collect();
        assert_eq!(got, ["one", "two", "two"]);
    }

    #[test]
    fn an_answer_recorded_without_a_seed_answers_any_seed_and_a_seeded_one_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let line = |text: &str, seed: Option<u64>| {
            let params = SamplingParams { seed, ..SamplingParams::default() };
            let l = RecordLine { prompt: Prompt::Text(text.into()), params, completions: vec![completion(text)] };
            serde_json::to_string(&l).unwrap() + "\n"
        };
        std::fs::write(&path, line("free", None) + &line("pinned", Some(3))).unwrap();
        let r = Replay::open(&path).unwrap();
        let seeded = |seed| SamplingParams { seed: Some(seed), ..SamplingParams::default() };
        assert_eq!(r.answer(&Prompt::Text("free".into()), &seeded(99)).unwrap()[0].text, "free");
        assert_eq!(r.answer(&Prompt::Text("pinned".into()), &seeded(3)).unwrap()[0].text, "pinned");
        assert!(r.answer(&Prompt::Text("pinned".into()), &seeded(4)).is_err());
    }

    #[test]
    fn a_miss_names_the_prompt_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.jsonl");
        std::fs::write(&path, "").unwrap();
        let e = Replay::open(&path)
            .unwrap()
            .answer(&Prompt::Text("unseen".into()), &SamplingParams::default())
            .unwrap_err();
        let e = e.to_string();
        assert!(e.contains("unseen") && e.contains("empty.jsonl"), "{e}");
    }

    #[test]
    fn a_malformed_recording_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "\n{oops\n").unwrap();
        let e = Replay::open(&path).err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
