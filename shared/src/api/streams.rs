//! Bounds on event streams: open streams per team and per process, and a
//! maximum life after which a client resumes with `Last-Event-ID` (kept
//! below the Lambda and API gateway limits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::TeamId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Open streams one team may hold.
    pub per_team: usize,
    /// Open streams in this process.
    pub total: usize,
    /// A stream ends after this long; the client resumes where it was.
    pub max_lifetime: Duration,
    /// A stream that has sent no event for this long ends (the client
    /// resumes with Last-Event-ID), so one nobody reads any more stops
    /// costing: a streaming function cannot always tell its client left.
    pub max_idle: Option<Duration>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            per_team: 100,
            total: 2_000,
            max_lifetime: Duration::from_secs(600),
            max_idle: None,
        }
    }
}

/// How soon a client should come back when a stream ends before its run.
pub const RESUME_AFTER: Duration = Duration::from_secs(1);

/// Counts open streams; a permit gives its place back when dropped.
pub struct StreamGate {
    pub limits: StreamLimits,
    open: Mutex<(usize, HashMap<TeamId, usize>)>,
}

/// One open stream's place.
pub struct StreamPermit {
    gate: Arc<StreamGate>,
    team: TeamId,
}

impl StreamGate {
    pub fn new(limits: StreamLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |open| open.0)
    }

    /// A place for one more stream of `team`, unless a limit is reached.
    pub fn enter(self: &Arc<Self>, team: TeamId) -> Option<StreamPermit> {
        let mut open = self.open.lock().ok()?;
        let (total, per_team) = &mut *open;
        let of_team = per_team.entry(team).or_insert(0);
        if *total >= self.limits.total || *of_team >= self.limits.per_team {
            return None;
        }
        *of_team += 1;
        *total += 1;
        Some(StreamPermit {
            gate: self.clone(),
            team,
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.gate.open.lock() {
            let (total, per_team) = &mut *open;
            *total = total.saturating_sub(1);
            if let Some(count) = per_team.get_mut(&self.team) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_team.remove(&self.team);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_per_team_and_in_all_and_given_back() {
        let gate = StreamGate::new(StreamLimits {
            per_team: 2,
            total: 3,
            max_lifetime: Duration::from_secs(1),
            max_idle: None,
        });
        let (a, b) = (TeamId(uuid::Uuid::new_v4()), TeamId(uuid::Uuid::new_v4()));
        let a1 = gate.enter(a).unwrap();
        let _a2 = gate.enter(a).unwrap();
        assert!(gate.enter(a).is_none(), "team limit");
        let _b1 = gate.enter(b).unwrap();
        assert!(gate.enter(b).is_none(), "process limit");
        drop(a1);
        assert!(gate.enter(b).is_some());
    }
}
