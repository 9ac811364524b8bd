//! Counters kept on the connection path, for the metrics endpoint.
//!
//! The accept loops bump these as connections go by: how long each waited
//! between `accept()` and its hand-over to a worker (a histogram, by the
//! batch: connections accepted in one wake-up are handed over together), and how
//! many `accept()` calls failed for lack of descriptors or memory. They are
//! plain cells on the single event loop, so a bump costs an add; the
//! metrics endpoint ([`crate::metrics`]) reads them when scraped.

use std::cell::Cell;
use std::time::Duration;

/// Upper bounds of the dispatch latency histogram's buckets, in seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Counters kept on the connection path.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Per bucket of [`BUCKETS`], then +Inf: connections whose time from
    /// accept to hand-over fell in it.
    latency: [Cell<u64>; BUCKETS.len() + 1],
    /// Sum of those times, for the histogram's `_sum`.
    latency_sum: Cell<f64>,
    /// `accept()` failures other than a client giving up.
    accept_errors: Cell<u64>,
}

impl Stats {
    /// `count` connections accepted in one go were handed to workers
    /// `waited` after the first of them was accepted: the clock is read once
    /// per batch, not per connection.
    pub(crate) fn dispatched(&self, count: u64, waited: Duration) {
        let seconds = waited.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.latency[bucket].set(self.latency[bucket].get() + count);
        self.latency_sum
            .set(self.latency_sum.get() + seconds * count as f64);
    }

    /// An `accept()` failed for want of descriptors or memory.
    pub(crate) fn accept_error(&self) {
        self.accept_errors.set(self.accept_errors.get() + 1);
    }

    /// `accept()` failures so far.
    pub(crate) fn accept_errors(&self) -> u64 {
        self.accept_errors.get()
    }

    /// The latency histogram: each bucket's upper bound (`None` for +Inf) and
    /// the connections that fell in it, not cumulated.
    pub(crate) fn latency(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        BUCKETS
            .iter()
            .map(|bound| Some(*bound))
            .chain([None])
            .zip(self.latency.iter().map(Cell::get))
    }

    /// The sum of every connection's time from accept to hand-over, in seconds.
    pub(crate) fn latency_sum(&self) -> f64 {
        self.latency_sum.get()
    }
}
