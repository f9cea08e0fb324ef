//! A sliding window over event time, one bucket per second.
//!
//! nginx timestamps have one-second resolution, so a window of `width` seconds holds at
//! most `width` buckets however many events fall in it: adding is O(1) amortized (a
//! linear scan only for an event older than the newest bucket, which is rare and bounded
//! by `width`), memory is bounded, and the count is exact.

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::snapshot::{Reader, Result, Writer};

/// Counts of events in the seconds `(newest - width, newest]`.
#[derive(Clone, Debug)]
pub struct SecondWindow {
    width: i64,
    buckets: VecDeque<(i64, u64)>, // (second, count), seconds ascending
    total: u64,
}

impl SecondWindow {
    pub fn new(width: i64) -> Self {
        SecondWindow {
            width: width.max(1),
            buckets: VecDeque::new(),
            total: 0,
        }
    }

    /// Counts `n` events at `second`; returns that second's count so far. An event older
    /// than the window (relative to the newest second seen) returns `n` but is not kept.
    pub fn add(&mut self, second: i64, n: u64) -> u64 {
        let newest = self.buckets.back().map(|&(s, _)| s);
        match newest {
            Some(newest) if second <= newest => {
                if second <= newest - self.width {
                    return n;
                }
                for i in (0..self.buckets.len()).rev() {
                    let bucket = &mut self.buckets[i];
                    match bucket.0.cmp(&second) {
                        Ordering::Equal => {
                            bucket.1 += n;
                            self.total += n;
                            return bucket.1;
                        }
                        Ordering::Less => {
                            self.buckets.insert(i + 1, (second, n));
                            self.total += n;
                            return n;
                        }
                        Ordering::Greater => {}
                    }
                }
                self.buckets.push_front((second, n));
                self.total += n;
                n
            }
            _ => {
                self.buckets.push_back((second, n));
                self.total += n;
                let edge = second - self.width;
                while let Some(&(s, c)) = self.buckets.front() {
                    if s > edge {
                        break;
                    }
                    self.total -= c;
                    self.buckets.pop_front();
                }
                n
            }
        }
    }

    /// Events kept: those in `(newest - width, newest]`.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Events in `(now - width, now]` (a query: changes nothing).
    pub fn count_at(&self, now: i64) -> u64 {
        let edge = now - self.width;
        self.buckets
            .iter()
            .filter(|&&(s, _)| edge < s && s <= now)
            .map(|&(_, c)| c)
            .sum()
    }

    /// Seconds covered by the kept buckets (at least 1).
    pub fn span(&self) -> i64 {
        match (self.buckets.front(), self.buckets.back()) {
            (Some(&(first, _)), Some(&(last, _))) => last - first + 1,
            _ => 1,
        }
    }

    pub fn save(&self, w: &mut Writer) {
        w.usize(self.buckets.len());
        for &(s, c) in &self.buckets {
            w.i64(s);
            w.u64(c);
        }
    }

    pub fn load(r: &mut Reader<'_>, width: i64) -> Result<Self> {
        let mut window = SecondWindow::new(width);
        let n = r.count(2)?;
        let mut last: Option<i64> = None;
        for _ in 0..n {
            let s = r.i64()?;
            let c = r.u64()?;
            if last.is_some_and(|l| s <= l) {
                return Err(crate::snapshot::SnapshotError(
                    "window seconds out of order".into(),
                ));
            }
            last = Some(s);
            window.buckets.push_back((s, c));
            window.total = window.total.saturating_add(c);
        }
        // Today's width may be narrower than the one the state was written with.
        if let Some(newest) = last {
            let edge = newest - window.width;
            while let Some(&(s, c)) = window.buckets.front() {
                if s > edge {
                    break;
                }
                window.total -= c;
                window.buckets.pop_front();
            }
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference, by brute force: every event kept (those older than the window when
    /// they came are dropped); the total in the window and its distinct seconds.
    fn model(events: &[(i64, u64)], width: i64) -> (u64, usize) {
        let mut newest = i64::MIN;
        let mut kept: Vec<(i64, u64)> = Vec::new();
        for &(s, n) in events {
            if s > newest {
                newest = s;
                kept.push((s, n));
            } else if s > newest - width {
                kept.push((s, n));
            }
        }
        let inside: Vec<(i64, u64)> = kept
            .into_iter()
            .filter(|&(s, _)| s > newest - width)
            .collect();
        let mut seconds: Vec<i64> = inside.iter().map(|&(s, _)| s).collect();
        seconds.sort_unstable();
        seconds.dedup();
        (inside.iter().map(|&(_, n)| n).sum(), seconds.len())
    }

    #[test]
    fn counts_match_a_brute_force_model() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for case in 0..500 {
            let width = 1 + (case % 7) as i64;
            let mut w = SecondWindow::new(width);
            let mut events = Vec::new();
            let mut t = 100;
            for _ in 0..(case % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                t += (seed % 5) as i64 - 1; // mostly forward, sometimes a second back
                let n = 1 + seed % 3;
                events.push((t, n));
                w.add(t, n);
                let (total, seconds) = model(&events, width);
                assert_eq!(w.total(), total, "case {case}");
                // one bucket per second in the window: memory bounded by the width
                assert_eq!(w.buckets.len(), seconds, "case {case}");
                assert!(seconds as i64 <= width);
            }
        }
    }

    #[test]
    fn add_returns_the_seconds_count_and_expires() {
        let mut w = SecondWindow::new(3);
        assert_eq!(w.add(10, 1), 1);
        assert_eq!(w.add(10, 2), 3);
        assert_eq!(w.add(12, 1), 1);
        assert_eq!(w.add(11, 1), 1);
        assert_eq!(w.add(7, 5), 5); // older than the window: not kept
        assert_eq!(w.total(), 5);
        assert_eq!(w.add(13, 1), 1); // 10 leaves
        assert_eq!(w.total(), 3);
        assert_eq!(w.count_at(12), 2);
        assert_eq!(w.span(), 3);
    }

    #[test]
    fn count_at_takes_the_seconds_of_its_own_window() {
        let mut w = SecondWindow::new(3);
        for s in [10, 11, 12] {
            w.add(s, 1 << (s - 10)); // 1, 2, 4: which seconds were counted shows in the sum
        }
        assert_eq!(w.count_at(12), 7);
        assert_eq!(w.count_at(13), 6); // 10 is out: (10, 13]
        assert_eq!(w.count_at(14), 4);
        assert_eq!(w.count_at(15), 0);
        assert_eq!(w.count_at(11), 3); // a moment in the past: 12 is not yet in
        assert_eq!(w.count_at(9), 0);
    }

    #[test]
    fn round_trips_and_narrows() {
        let mut w = SecondWindow::new(10);
        for s in 0..10 {
            w.add(s, 1);
        }
        let mut out = Writer::default();
        w.save(&mut out);
        let back = SecondWindow::load(&mut Reader::new(&out.buf), 10).unwrap();
        assert_eq!(back.total(), 10);
        let narrow = SecondWindow::load(&mut Reader::new(&out.buf), 3).unwrap();
        assert_eq!(narrow.total(), 3);
    }
}
