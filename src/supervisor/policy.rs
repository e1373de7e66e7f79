//! The restart policy as a pure function of failure times: exponential backoff per child and a
//! restart intensity limit (more than R restarts within T fail the node); failures a failing
//! disk caused back off without counting against the limit. No clock inside:
//! callers pass `now`, so tests need no sleeps.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::actors::ActorKind;
use crate::config::SupervisorSection;

/// What to do about one child failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart the child after this delay.
    Restart { after: Duration },
    /// The restart budget is spent: the node fails.
    Escalate { restarts: usize, window: Duration },
}

#[derive(Debug)]
pub struct RestartPolicy {
    restarts_max: usize,
    window: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    /// Failure instants within the window, oldest first (at most `restarts_max + 1`).
    recent: VecDeque<Instant>,
    /// Per child: consecutive failures and the last one.
    streaks: BTreeMap<ActorKind, (u32, Instant)>,
}

impl RestartPolicy {
    pub fn new(config: &SupervisorSection) -> Self {
        RestartPolicy {
            restarts_max: config.restarts_max as usize,
            window: Duration::from_millis(config.restart_window_ms),
            backoff_initial: Duration::from_millis(config.backoff_initial_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
            recent: VecDeque::new(),
            streaks: BTreeMap::new(),
        }
    }

    /// A failure the disk caused (an I/O error: a full or failing disk): restarting cannot
    /// make it worse and is how the node recovers once the disk does, so it is restarted
    /// after the same backoff as any failure but never spends the restart budget.
    pub fn on_disk_failure(&mut self, child: ActorKind, now: Instant) -> Duration {
        self.backoff(child, now)
    }

    pub fn on_failure(&mut self, child: ActorKind, now: Instant) -> Decision {
        while self
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.recent.len() > self.restarts_max {
            return Decision::Escalate {
                restarts: self.recent.len(),
                window: self.window,
            };
        }
        Decision::Restart {
            after: self.backoff(child, now),
        }
    }

    /// The delay before `child`'s next start: doubling per consecutive failure, capped.
    fn backoff(&mut self, child: ActorKind, now: Instant) -> Duration {
        let streak = match self.streaks.get(&child) {
            Some(&(count, last)) if now.duration_since(last) <= self.window => count + 1,
            _ => 1,
        };
        self.streaks.insert(child, (streak, now));
        let factor = 1u32 << (streak - 1).min(16);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restarts_max: u32) -> RestartPolicy {
        RestartPolicy::new(&SupervisorSection {
            restarts_max,
            restart_window_ms: 10_000,
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
        })
    }

    // Proves the backoff doubles per consecutive failure of one child, caps at the maximum,
    // and starts over once the child stayed up longer than the window.
    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut p = policy(100);
        let t0 = Instant::now();
        let delays: Vec<_> = (0..6)
            .map(|i| p.on_failure(ActorKind::Raft, t0 + Duration::from_millis(i)))
            .collect();
        let ms = |d: &Decision| match d {
            Decision::Restart { after } => after.as_millis(),
            Decision::Escalate { .. } => panic!("no escalation expected"),
        };
        assert_eq!(
            delays.iter().map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(
            ms(&p.on_failure(ActorKind::Ttl, t0)),
            100,
            "streaks are per child"
        );
        let later = t0 + Duration::from_secs(11);
        assert_eq!(ms(&p.on_failure(ActorKind::Raft, later)), 100);
    }

    // Proves failures the disk caused back off like any other but never spend the restart
    // budget: after many of them, ordinary failures still get the whole budget.
    #[test]
    fn disk_failures_back_off_without_spending_the_budget() {
        let mut p = policy(2);
        let t0 = Instant::now();
        let delays: Vec<u128> = (0..10)
            .map(|i| {
                p.on_disk_failure(ActorKind::Storage, t0 + Duration::from_millis(i))
                    .as_millis()
            })
            .collect();
        assert_eq!(&delays[..5], [100, 200, 400, 800, 1000]);
        assert!(delays[5..].iter().all(|ms| *ms == 1000));
        for i in 0..2 {
            assert!(matches!(
                p.on_failure(ActorKind::Ttl, t0 + Duration::from_millis(20 + i)),
                Decision::Restart { .. }
            ));
        }
    }

    // Proves R restarts within T are allowed and the R+1th escalates, while failures spread
    // wider than T never do.
    #[test]
    fn intensity_limit_escalates_past_r_in_t() {
        let mut p = policy(3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(matches!(
                p.on_failure(ActorKind::Ttl, t0 + Duration::from_secs(i)),
                Decision::Restart { .. }
            ));
        }
        assert!(matches!(
            p.on_failure(ActorKind::Raft, t0 + Duration::from_secs(3)),
            Decision::Escalate { restarts: 4, .. }
        ));
        let mut spread = policy(3);
        for i in 0..20 {
            let at = t0 + Duration::from_secs(4 * i);
            assert!(matches!(
                spread.on_failure(ActorKind::Ttl, at),
                Decision::Restart { .. }
            ));
        }
    }
}
