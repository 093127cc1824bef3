//! The engine's own time: wall time during which no model call and no Lean check is in flight
//! (what `planner_overhead` reports as the pipeline's overhead).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts wall time during which nothing external (model, Lean) is in flight.
#[derive(Default)]
pub(super) struct Activity {
    inner: Mutex<ActivityState>,
}

#[derive(Default)]
pub(super) struct ActivityState {
    busy: usize,
    idle: Duration,
    since: Option<Instant>,
}

pub(super) struct Busy<'a>(&'a Activity);

impl Activity {
    pub(super) fn enter(&self) -> Busy<'_> {
        if let Ok(mut s) = self.inner.lock() {
            if s.busy == 0 {
                if let Some(t) = s.since.take() {
                    s.idle += t.elapsed();
                }
            }
            s.busy += 1;
        }
        Busy(self)
    }

    pub(super) fn idle(&self) -> Duration {
        match self.inner.lock() {
            Ok(s) => {
                s.idle + if s.busy == 0 { s.since.map_or(Duration::ZERO, |t| t.elapsed()) } else { Duration::ZERO }
            }
            Err(_) => Duration::ZERO,
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.inner.lock() {
            s.busy -= 1;
            if s.busy == 0 {
                s.since = Some(Instant::now());
            }
        }
    }
}
