//! Choosing a backend: smooth weighted round-robin over an app's upstreams.
//!
//! The schedule is computed once when the policy loads; each pick is one atomic increment,
//! so choosing a backend never takes a lock on the request path.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A precomputed, interleaved order of upstream indices honouring their weights.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    /// Builds the schedule with nginx's smooth weighted round-robin, so weights 3:1 give
    /// `A A B A` rather than `A A A B`. Weights of 0 are treated as 1.
    pub fn new(weights: &[u32]) -> Self {
        let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w.max(1))).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::new();
        for _ in 0..total {
            let mut best = 0;
            let mut best_value = i64::MIN;
            for (i, (cur, w)) in current.iter_mut().zip(&weights).enumerate() {
                *cur += w;
                if *cur > best_value {
                    best = i;
                    best_value = *cur;
                }
            }
            if let Some(chosen) = current.get_mut(best) {
                *chosen -= total;
            }
            schedule.push(best);
        }
        Self {
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    /// The next upstream index (0 when there are none, which config validation prevents).
    pub fn pick(&self) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match self.schedule.len() {
            0 => 0,
            len => self.schedule.get(n % len).copied().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_weights_and_interleaves() {
        let rr = WeightedRoundRobin::new(&[3, 1]);
        let picks: Vec<usize> = (0..8).map(|_| rr.pick()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn equal_weights_alternate() {
        let rr = WeightedRoundRobin::new(&[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }
}
