//! Connect failures per upstream peer: how many a second, from how many distinct
//! connections, against a baseline learnt from the stream itself.
//!
//! Fed one failure line at a time (the peer found by [`crate::event::failure_peer`],
//! which costs a fraction of a whole parse), read about once a second by the service.
//!
//! Memory is bounded whatever the number of peers: at most `capacity` peers are named,
//! each with a ring of per-second counts, a few HyperLogLog sketches of its failing
//! connections and at most `MAX_NAME` bytes of name (about 9 KiB a peer). A new peer when
//! the table is full takes the place of the one with the fewest failures in the last
//! minute among the `SAMPLE` least recently failing (as the tracker evicts keys): a peer
//! that fails often is never among them, so the heavy hitters stay named and a flood of
//! one-off peers churns the tail.
//! Failures of every peer, named or not, are also counted together, so "the others" are
//! the total less the named.
//!
//! The baseline is an exponentially weighted mean and variance of a peer's failures per
//! second, learnt from each second as it completes (a second is complete once the peer
//! has seen a later one, or the reader's clock has passed it). A second above
//! `mean + 3 sd + 1` is an outlier: it moves the mean a step towards that bound and leaves
//! the spread alone, so an outage is not learnt as normal within minutes (the mean creeps
//! up by about `(3 sd + 1) / 300` a second: it is, slowly, if it lasts hours). In the
//! first `warmup` seconds after the first second seen, every second is learnt in full:
//! what already fails when retrywatch starts watching is the status quo, not an outage
//! that starts (a peer first seen after the warm-up was not failing before: its baseline
//! starts at zero and is judged against at once). A peer's baseline saved before a restart
//! is given back with [`Upstreams::seed`].

use crate::tracker::{new_map, Key};

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Seconds of counts a peer keeps (the window read is the last `WINDOW`).
const SLOTS: usize = 64;
/// The window the figures are given for, in seconds.
pub const WINDOW: i64 = 60;
/// Seconds per distinct-connection sketch, and the sketches kept (they cover the window
/// and the slice being filled).
const SLICE: i64 = 10;
const SLICES: usize = 8;
/// HyperLogLog registers per sketch (2^10: a standard error of about 3.3 %; below a few
/// thousand connections linear counting is used, within about 1 % under a hundred).
const HLL_BITS: u32 = 10;
const REGISTERS: usize = 1 << HLL_BITS;
/// Named peers looked at when one must make room (the least recently failing).
const SAMPLE: usize = 8;
/// Baseline: the weight of a new second (a time constant of five minutes).
const ALPHA: f64 = 1.0 / 300.0;
/// Zero seconds learnt at most after a gap (the baseline is ~0 long before).
const MAX_GAP: i64 = 3600;
/// Bytes of a peer's name kept: a longer one (a `connect() to` peer is whatever the line
/// holds up to " failed (") is named by its first `MAX_NAME` bytes, so a peer costs at
/// most that much however long the lines.
pub const MAX_NAME: usize = 256;

/// One peer's distinct-connection sketch for a slice of time.
#[derive(Clone)]
struct Sketch {
    slice: i64,
    registers: Box<[u8; REGISTERS]>,
}

impl Sketch {
    fn new() -> Sketch {
        Sketch {
            slice: i64::MIN,
            registers: Box::new([0; REGISTERS]),
        }
    }
}

/// What is known of one named peer.
pub struct Peer {
    pub name: Box<[u8]>,
    /// Failures per second for the seconds `(newest - SLOTS, newest]`, at `second % SLOTS`.
    counts: [u32; SLOTS],
    newest: i64,
    sketches: Vec<Sketch>,
    pub first: i64,
    pub last_failure: i64,
    pub total: u64,
    /// Seconds up to (not including) this one have been learnt.
    learnt_to: i64,
    /// Seconds from this one on are learnt with outliers clipped; those before, in the
    /// warm-up, in full (what fails while retrywatch starts watching is the status quo).
    warm_from: i64,
    pub mean: f64,
    pub var: f64,
    pub seconds_learnt: u64,
    /// The clock order: the eviction sample takes the least recently failing.
    touched: u64,
    /// The connection and slice last sketched: a looping connection's next failure
    /// changes no register (skipped).
    sketched: Option<(Key, i64)>,
}

fn slot(second: i64) -> usize {
    second.rem_euclid(SLOTS as i64) as usize
}

impl Peer {
    fn new(name: &[u8], ts: i64, touched: u64, warm_from: i64) -> Peer {
        Peer {
            name: name.into(),
            counts: [0; SLOTS],
            newest: ts,
            sketches: Vec::new(),
            first: ts,
            last_failure: ts,
            total: 0,
            learnt_to: ts,
            warm_from,
            mean: 0.0,
            var: 0.0,
            seconds_learnt: 0,
            touched,
            sketched: None,
        }
    }

    /// Moves the ring to `second` (later than `newest`), learning the seconds it leaves
    /// behind as complete.
    fn roll_to(&mut self, second: i64) {
        if second <= self.newest {
            return;
        }
        self.learn_until(second);
        let gap = second - self.newest;
        if gap >= SLOTS as i64 {
            self.counts = [0; SLOTS];
        } else {
            for s in self.newest + 1..=second {
                self.counts[slot(s)] = 0;
            }
        }
        self.newest = second;
    }

    fn count_at(&self, second: i64) -> u32 {
        if second > self.newest || second <= self.newest - SLOTS as i64 {
            0
        } else {
            self.counts[slot(second)]
        }
    }

    /// Learns every complete second before `until` not learnt yet.
    fn learn_until(&mut self, until: i64) {
        let from = self.learnt_to.max(until - MAX_GAP);
        for s in from..until {
            self.learn(f64::from(self.count_at(s)), s >= self.warm_from);
        }
        self.learnt_to = self.learnt_to.max(until);
    }

    fn learn(&mut self, x: f64, clipped: bool) {
        let clip = self.mean + 3.0 * self.sd() + 1.0;
        if clipped && x > clip {
            // an outlier moves the mean a step towards the clip and leaves the spread
            // alone: learnt in full, it would widen the clip it is measured against
            self.mean += ALPHA * (clip - self.mean);
        } else {
            let d = x - self.mean;
            let step = ALPHA * d;
            self.mean += step;
            self.var = (1.0 - ALPHA) * (self.var + d * step);
        }
        self.seconds_learnt += 1;
    }

    fn add(&mut self, ts: i64, key: &Key, n: u64) {
        self.roll_to(ts);
        if ts > self.newest - SLOTS as i64 {
            let c = &mut self.counts[slot(ts)];
            *c = c.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
        self.total += n;
        self.first = self.first.min(ts);
        self.last_failure = self.last_failure.max(ts);
        self.sketch(ts, key);
    }

    fn sketch(&mut self, ts: i64, key: &Key) {
        let slice = ts.div_euclid(SLICE);
        if self.sketched == Some((*key, slice)) {
            return;
        }
        self.sketched = Some((*key, slice));
        let i = match self.sketches.iter().position(|s| s.slice == slice) {
            Some(i) => i,
            None => {
                if self.sketches.len() < SLICES {
                    self.sketches.push(Sketch::new());
                    self.sketches.len() - 1
                } else {
                    // the oldest slice makes room (a late line older than all is dropped)
                    let (i, oldest) = self
                        .sketches
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.slice)
                        .map(|(i, s)| (i, s.slice))
                        .unwrap_or((0, i64::MIN));
                    if oldest > slice {
                        return;
                    }
                    self.sketches[i].registers.fill(0);
                    i
                }
            }
        };
        let sketch = &mut self.sketches[i];
        sketch.slice = slice;
        let h = hash_key(key);
        let index = (h >> (64 - HLL_BITS)) as usize;
        let rest = h << HLL_BITS;
        let rank = u8::try_from(rest.leading_zeros().min(64 - HLL_BITS) + 1).unwrap_or(u8::MAX);
        let r = &mut sketch.registers[index];
        if rank > *r {
            *r = rank;
        }
    }

    /// Failures in the window ending at `now`, and the seconds with at least one.
    pub fn window(&self, now: i64) -> (u64, u32) {
        self.last_seconds(now, WINDOW)
    }

    /// Failures in the `width` seconds ending at `now` (at most the ring's), and the
    /// seconds with at least one.
    pub fn last_seconds(&self, now: i64, width: i64) -> (u64, u32) {
        let mut sum = 0u64;
        let mut seconds = 0u32;
        for s in now - width.min(SLOTS as i64) + 1..=now {
            let c = self.count_at(s);
            sum += u64::from(c);
            seconds += u32::from(c > 0);
        }
        (sum, seconds)
    }

    /// Distinct failing connections in about the window ending at `now` (the sketches of
    /// the slices it touches: up to `SLICE - 1` seconds more).
    pub fn distinct(&self, now: i64) -> f64 {
        let from = (now - WINDOW + 1).div_euclid(SLICE);
        let to = now.div_euclid(SLICE);
        let mut merged = [0u8; REGISTERS];
        let mut any = false;
        for s in &self.sketches {
            if (from..=to).contains(&s.slice) {
                any = true;
                for (m, r) in merged.iter_mut().zip(s.registers.iter()) {
                    *m = (*m).max(*r);
                }
            }
        }
        if any {
            estimate(&merged)
        } else {
            0.0
        }
    }

    /// Whether its baseline is past the warm-up at `now` (an alert may judge against it).
    pub fn warm(&self, now: i64) -> bool {
        now >= self.warm_from
    }

    /// The baseline's standard deviation.
    pub fn sd(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// The HyperLogLog estimate of a sketch's registers, with linear counting for small
/// cardinalities (Flajolet et al. 2007; the small-range correction).
fn estimate(registers: &[u8; REGISTERS]) -> f64 {
    let m = REGISTERS as f64;
    let mut sum = 0.0;
    let mut zeros = 0u32;
    for &r in registers {
        sum += 1.0 / f64::from(1u32 << r.min(31));
        zeros += u32::from(r == 0);
    }
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    if raw <= 2.5 * m && zeros > 0 {
        m * (m / f64::from(zeros)).ln()
    } else {
        raw
    }
}

/// A connection key's 64-bit hash (fixed seed: the same key lands in the same register
/// in every sketch, so merged sketches count it once).
/// (The key's fields mixed by SplitMix64's finalizer: every output bit depends on every
/// input bit, which the sketch's register index and rank need.)
fn hash_key(key: &Key) -> u64 {
    let mut h = mix(u64::from(key.source) ^ 0x9e37_79b9_7f4a_7c15);
    h = mix(h ^ key.pid);
    mix(h ^ key.cid)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The counts of every peer, bounded.
pub struct Upstreams {
    peers: Vec<Peer>,
    index: Map<Box<[u8]>, u32>,
    pub capacity: usize,
    clock: u64,
    /// All failures with a peer, per second (named or not).
    all: [u64; SLOTS],
    all_newest: i64,
    pub failures: u64,
    pub without_peer: u64,
    pub evicted: u64,
    /// The newest failure second seen (the reader's clock when none is given).
    pub newest: Option<i64>,
    /// Seconds of log time from the first seen during which baselines learn in full.
    pub warmup: i64,
    /// The first second seen (a failure's, or the reader's clock).
    pub origin: Option<i64>,
    /// Recently counted peers by the low bits of their name's hash: (hash, slot). A hit
    /// is confirmed by the name, so a stale entry (its slot given to another peer) is a
    /// miss. A storm names one peer line after line and a flood a few in turn: one hash
    /// and one equal comparison find them, where the map would compare names that differ.
    recent: [(u64, u32); RECENT],
}

/// Entries of `Upstreams::recent` (a power of two).
const RECENT: usize = 16;

/// The hash of a peer's name for `Upstreams::recent` (fixed seed: only speed depends on it).
fn name_hash(name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5eed).hash_one(name)
}

impl Upstreams {
    pub fn new(capacity: usize, warmup: i64) -> Self {
        Upstreams {
            warmup: warmup.max(0),
            origin: None,
            recent: [(0, u32::MAX); RECENT],
            peers: Vec::new(),
            index: new_map(),
            capacity: capacity.max(1),
            clock: 0,
            all: [0; SLOTS],
            all_newest: i64::MIN,
            failures: 0,
            without_peer: 0,
            evicted: 0,
            newest: None,
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Counts `n` failures of connection `key` at `ts` against `peer` (None: the line
    /// names none, e.g. `no live upstreams` of an unnamed group).
    pub fn failure(&mut self, ts: i64, key: &Key, peer: Option<&[u8]>, n: u64) {
        let Some(peer) = peer else {
            self.without_peer += n;
            return;
        };
        let peer = &peer[..peer.len().min(MAX_NAME)];
        self.failures += n;
        self.origin.get_or_insert(ts);
        self.newest = Some(self.newest.map_or(ts, |t| t.max(ts)));
        self.count_all(ts, n);
        self.clock += 1;
        let h = name_hash(peer);
        let cached = &mut self.recent[h as usize % RECENT];
        let hit = cached.0 == h
            && self
                .peers
                .get(cached.1 as usize)
                .is_some_and(|p| *p.name == *peer);
        let i = if hit {
            cached.1 as usize
        } else {
            let i = match self.index.get(peer) {
                Some(&i) => i as usize,
                None => self.admit(peer, ts),
            };
            self.recent[h as usize % RECENT] = (h, i as u32);
            i
        };
        let p = &mut self.peers[i];
        p.touched = self.clock;
        p.add(ts, key, n);
    }

    fn count_all(&mut self, ts: i64, n: u64) {
        if ts > self.all_newest {
            if self.all_newest == i64::MIN || ts - self.all_newest >= SLOTS as i64 {
                self.all = [0; SLOTS];
            } else {
                for s in self.all_newest + 1..=ts {
                    self.all[slot(s)] = 0;
                }
            }
            self.all_newest = ts;
        }
        if ts > self.all_newest - SLOTS as i64 {
            self.all[slot(ts)] += n;
        }
    }

    /// All failures with a peer in the window ending at `now`.
    pub fn all_in_window(&self, now: i64) -> u64 {
        (now - WINDOW + 1..=now)
            .filter(|&s| s <= self.all_newest && s > self.all_newest - SLOTS as i64)
            .map(|s| self.all[slot(s)])
            .sum()
    }

    /// The first second past the warm-up.
    pub fn warm_from(&self) -> Option<i64> {
        self.origin.map(|o| o.saturating_add(self.warmup))
    }

    fn admit(&mut self, peer: &[u8], ts: i64) -> usize {
        let warm_from = self.warm_from().unwrap_or(ts);
        if self.peers.len() < self.capacity {
            let i = self.peers.len();
            self.peers.push(Peer::new(peer, ts, self.clock, warm_from));
            self.index.insert(peer.into(), i as u32);
            return i;
        }
        let now = self.newest.unwrap_or(ts);
        let victim = self.victim(now);
        self.evicted += 1;
        let new = Peer::new(peer, ts, self.clock, warm_from);
        let old = std::mem::replace(&mut self.peers[victim], new);
        self.index.remove(&old.name);
        self.index.insert(peer.into(), victim as u32);
        victim
    }

    /// Among the `SAMPLE` least recently failing peers, the one with the fewest failures
    /// in the window (a linear pass over the touch order; the table is small).
    fn victim(&self, now: i64) -> usize {
        let mut oldest: Vec<(u64, usize)> = Vec::with_capacity(SAMPLE + 1);
        for (i, p) in self.peers.iter().enumerate() {
            if oldest.len() < SAMPLE || p.touched < oldest[oldest.len() - 1].0 {
                let at = oldest.partition_point(|&(t, _)| t <= p.touched);
                oldest.insert(at, (p.touched, i));
                oldest.truncate(SAMPLE);
            }
        }
        oldest
            .iter()
            .min_by_key(|&&(touched, i)| (self.peers[i].window(now).0, touched))
            .map_or(0, |&(_, i)| i)
    }

    /// Learns the seconds before `now` of every peer (the reader calls it with the
    /// engine's clock, so a peer that stopped failing learns its quiet seconds).
    pub fn settle(&mut self, now: i64) {
        self.origin.get_or_insert(now);
        for p in &mut self.peers {
            if now > p.newest {
                p.learn_until(now);
            }
        }
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// A peer's baseline as saved before a restart (`seconds` learnt, mean and variance
    /// of its failures per second), at log second `now`: it is past its warm-up at once.
    /// Named like any peer (it may make room); a peer named already keeps its own.
    pub fn seed(&mut self, peer: &[u8], mean: f64, var: f64, seconds: u64, now: i64) {
        let peer = &peer[..peer.len().min(MAX_NAME)];
        if self.index.contains_key(peer) || !(mean.is_finite() && var.is_finite()) {
            return;
        }
        self.clock += 1;
        let i = self.admit(peer, now);
        let p = &mut self.peers[i];
        (p.mean, p.var, p.seconds_learnt) = (mean.max(0.0), var.max(0.0), seconds);
        p.warm_from = i64::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cid: u64) -> Key {
        Key {
            source: 0,
            pid: 1,
            cid,
        }
    }

    #[test]
    fn counts_per_second_and_window() {
        let mut u = Upstreams::new(4, 0);
        for ts in 100..160 {
            u.failure(ts, &key(ts as u64), Some(b"a:1"), 2);
        }
        u.failure(150, &key(1), None, 5);
        let a = &u.peers()[0];
        assert_eq!(a.window(159), (120, 60));
        assert_eq!(a.window(160), (118, 59));
        assert_eq!(a.window(218), (2, 1));
        assert_eq!(a.window(219), (0, 0));
        assert_eq!(a.window(99), (0, 0));
        assert_eq!(a.last_seconds(159, 10), (20, 10));
        assert_eq!(a.last_seconds(159, 1_000), (120, 60));
        let mut b = Upstreams::new(4, 0);
        for ts in 100..160 {
            b.failure(ts, &key(1), Some(b"b"), 2);
        }
        b.failure(170, &key(1), Some(b"b"), 1); // the ring holds 107..=170 now
        assert_eq!(b.peers()[0].last_seconds(170, 1_000), (2 * 53 + 1, 54));
        assert_eq!(u.failures, 120);
        assert_eq!(u.without_peer, 5);
        assert_eq!(u.all_in_window(159), 120);
        assert_eq!(u.all_in_window(170), 120 - 22);
        assert_eq!(a.total, 120);
        assert_eq!((a.first, a.last_failure), (100, 159));
    }

    #[test]
    fn a_late_line_counts_in_its_second() {
        let mut u = Upstreams::new(4, 0);
        u.failure(200, &key(1), Some(b"a"), 1);
        u.failure(199, &key(2), Some(b"a"), 1);
        u.failure(120, &key(3), Some(b"a"), 1); // older than the ring: total only
        u.failure(136, &key(4), Some(b"a"), 1); // 200 - 64: just out of it (its slot is 200's)
        let a = &u.peers()[0];
        assert_eq!(a.window(200), (2, 2));
        assert_eq!(a.last_seconds(200, 1), (1, 1));
        assert_eq!(a.total, 4);
        assert_eq!(a.first, 120);
    }

    #[test]
    fn distinct_connections_are_estimated_closely() {
        for n in [1u64, 10, 100, 1_000, 5_000, 50_000] {
            let mut u = Upstreams::new(4, 0);
            for i in 0..n {
                let ts = 1_000 + (i * 50 / n) as i64;
                u.failure(ts, &key(i), Some(b"p"), 1);
                u.failure(ts, &key(i), Some(b"p"), 1); // the same connection again
            }
            let d = u.peers()[0].distinct(1_049);
            let err = (d - n as f64).abs() / n as f64;
            let bound = if n <= 100 { 0.03 } else { 0.1 };
            assert!(err <= bound, "{n}: {d}");
        }
    }

    #[test]
    fn distinct_forgets_slices_out_of_the_window() {
        let mut u = Upstreams::new(4, 0);
        for i in 0..50 {
            u.failure(1_000, &key(i), Some(b"p"), 1);
        }
        for i in 50..60 {
            u.failure(1_075, &key(i), Some(b"p"), 1);
        }
        let p = &u.peers()[0];
        assert!((p.distinct(1_059) - 50.0).abs() < 1.0);
        assert!((p.distinct(1_075) - 10.0).abs() < 1.0); // slice 100 is out
        assert_eq!(p.sketches.len(), 2);
    }

    #[test]
    fn sketches_are_bounded() {
        let mut u = Upstreams::new(1, 0);
        for ts in 0..1_000 {
            u.failure(ts, &key(ts as u64), Some(b"p"), 1);
        }
        u.failure(0, &key(7), Some(b"p"), 1); // older than every slice kept: dropped
        let p = &u.peers()[0];
        assert_eq!(p.sketches.len(), SLICES);
        assert!(p.sketches.iter().all(|s| s.slice > 99 - SLICES as i64));
        assert!((p.distinct(999) - 60.0).abs() < 2.0);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_the_heavy_peers() {
        let mut u = Upstreams::new(16, 0);
        for i in 0..100_000u64 {
            let ts = 10_000 + (i / 2_000) as i64;
            u.failure(ts, &key(i), Some(b"heavy-1"), 1);
            if i % 3 == 0 {
                u.failure(ts, &key(i), Some(b"heavy-2"), 1);
            }
            let one_off = format!("one-off-{i}");
            u.failure(ts, &key(i), Some(one_off.as_bytes()), 1);
        }
        assert_eq!(u.len(), 16);
        assert_eq!(u.index.len(), 16);
        let names: Vec<&[u8]> = u.peers().iter().map(|p| &p.name[..]).collect();
        assert!(names.contains(&&b"heavy-1"[..]));
        assert!(names.contains(&&b"heavy-2"[..]));
        assert_eq!(u.evicted, 100_000 - 14);
        assert_eq!(u.failures, 100_000 + 33_334 + 100_000);
        let heavy = u
            .peers()
            .iter()
            .find(|p| &p.name[..] == b"heavy-1")
            .unwrap();
        assert_eq!(heavy.total, 100_000);
        for (name, &i) in &u.index {
            assert_eq!(&u.peers[i as usize].name, name);
        }
    }

    #[test]
    fn the_baseline_learns_a_steady_rate_and_resists_an_outage() {
        let mut u = Upstreams::new(4, 0);
        // a flaky peer: 2 failures a second for half an hour
        for ts in 0..1_800 {
            u.failure(ts, &key(ts as u64), Some(b"p"), 2);
        }
        u.settle(1_800);
        let p = &u.peers()[0];
        assert!((p.mean - 2.0).abs() < 0.05, "{}", p.mean);
        assert!(p.sd() < 0.2);
        assert_eq!(p.seconds_learnt, 1_800);
        // an outage: 200 a second for ten minutes is still far above it
        for ts in 1_800..2_400 {
            u.failure(ts, &key(ts as u64), Some(b"p"), 200);
        }
        u.settle(2_400);
        let p = &u.peers()[0];
        assert!(p.mean < 6.0, "{}", p.mean);
        assert!(p.mean + 4.0 * p.sd() < 10.0);
        // back to 2 a second: the mean comes back down
        for ts in 2_400..4_200 {
            u.failure(ts, &key(ts as u64), Some(b"p"), 2);
        }
        u.settle(4_200);
        assert!(
            (u.peers()[0].mean - 2.0).abs() < 0.1,
            "{}",
            u.peers()[0].mean
        );
    }

    #[test]
    fn a_second_at_the_clip_is_learnt_in_full() {
        // a fresh baseline (mean 0, no spread) clips at 1: one failure is not an outlier
        let mut u = Upstreams::new(4, 0);
        u.failure(0, &key(1), Some(b"p"), 1);
        u.settle(1);
        let p = &u.peers()[0];
        assert_eq!(p.mean, ALPHA);
        assert_eq!(p.var, (1.0 - ALPHA) * ALPHA);
    }

    #[test]
    fn quiet_seconds_are_learnt_when_settled_and_a_gap_is_bounded() {
        let mut u = Upstreams::new(4, 0);
        u.failure(0, &key(1), Some(b"p"), 300);
        u.settle(1);
        let after_one = u.peers()[0].mean;
        assert!((after_one - 1.0 * ALPHA).abs() < 1e-9); // clipped to mean + 3 sd + 1 = 1
        u.settle(1_000_000);
        let p = &u.peers()[0];
        assert_eq!(p.seconds_learnt, 1 + MAX_GAP as u64);
        assert!(p.mean < 1e-5);
        u.settle(10); // the clock going back learns nothing
        assert_eq!(u.peers()[0].seconds_learnt, 1 + MAX_GAP as u64);
    }

    #[test]
    fn the_warm_up_learns_in_full_and_a_later_peer_is_warm_at_once() {
        let mut u = Upstreams::new(4, 60);
        // a peer failing 50 a second from the start: the status quo
        for ts in 1_000..1_300 {
            u.failure(ts, &key(ts as u64), Some(b"old"), 50);
        }
        u.settle(1_300);
        assert_eq!(u.warm_from(), Some(1_060));
        let old = &u.peers()[0];
        assert!(!old.warm(1_059) && old.warm(1_060));
        // 60 seconds in full from 0 towards 50: mean 50 (1 - (1 - 1/300)^60) = 9.1, then
        // clipped; the spread learnt then keeps the clip near 50
        assert!(old.mean > 9.0, "{}", old.mean);
        // a peer first failing after the warm-up starts from zero and is warm
        u.failure(1_300, &key(1), Some(b"new"), 50);
        u.settle(1_301);
        let new = u.peers().iter().find(|p| &p.name[..] == b"new").unwrap();
        assert!(new.warm(1_300));
        assert!((new.mean - ALPHA).abs() < 1e-9); // clipped to mean + 3 sd + 1 = 1
                                                  // the reader's clock starts the warm-up when it comes first
        let mut v = Upstreams::new(4, 60);
        v.settle(500);
        v.failure(520, &key(1), Some(b"p"), 1);
        assert_eq!(v.warm_from(), Some(560));
        assert!(!v.peers()[0].warm(559));
    }

    #[test]
    fn a_seeded_baseline_is_warm_at_once_and_kept_by_a_named_peer() {
        let mut u = Upstreams::new(2, 60);
        u.failure(100, &key(1), Some(b"a"), 1);
        u.seed(b"a", 9.0, 1.0, 500, 100); // named already: its own kept
        u.seed(b"b", 2.0, 0.25, 700, 100);
        u.seed(b"c", f64::NAN, 0.0, 1, 100); // not a number: ignored
        assert_eq!(u.len(), 2);
        let a = &u.peers()[0];
        assert_eq!((a.mean, a.seconds_learnt), (0.0, 0));
        let b = &u.peers()[1];
        assert_eq!(
            (b.mean, b.var, b.seconds_learnt, b.total),
            (2.0, 0.25, 700, 0)
        );
        assert!(b.warm(i64::MIN + 1));
        // it learns on: the quiet second 100 in full, then 101's 100 failures clipped
        u.failure(101, &key(2), Some(b"b"), 100);
        u.settle(102);
        let mean = 2.0 - 2.0 * ALPHA;
        let var = (1.0 - ALPHA) * (0.25 + 4.0 * ALPHA);
        let clip = mean + 3.0 * var.sqrt() + 1.0;
        let b = &u.peers()[1];
        assert!(
            (b.mean - (mean + ALPHA * (clip - mean))).abs() < 1e-12,
            "{}",
            b.mean
        );
        assert!((b.var - var).abs() < 1e-12); // an outlier leaves the spread alone
    }

    #[test]
    fn a_long_peer_name_is_cut() {
        let mut u = Upstreams::new(4, 0);
        let long = vec![b'x'; 70_000];
        u.failure(1, &key(1), Some(&long), 1);
        let mut other = long.clone();
        other[MAX_NAME] = b'y'; // differs after the cut: the same peer
        u.failure(1, &key(2), Some(&other), 1);
        assert_eq!(u.len(), 1);
        assert_eq!(u.peers()[0].name.len(), MAX_NAME);
        assert_eq!(u.peers()[0].total, 2);
    }

    #[test]
    fn the_all_peers_ring_keeps_its_64_seconds_exactly() {
        let mut u = Upstreams::new(4, 0);
        assert!(u.is_empty());
        u.failure(200, &key(1), Some(b"a"), 5);
        assert!(!u.is_empty());
        u.failure(136, &key(2), Some(b"a"), 7); // 200 - 64: out of the ring (200's slot)
        u.failure(120, &key(3), Some(b"a"), 11); // further out
        assert_eq!(u.all_in_window(200), 5);
        assert_eq!(u.all_in_window(195), 0); // 136..=195: 136 is not kept
        u.failure(150, &key(4), Some(b"a"), 2);
        assert_eq!(u.all_in_window(195), 2);
        assert_eq!(u.failures, 25);
    }

    #[test]
    fn a_recent_entry_whose_slot_went_to_another_peer_is_not_taken() {
        // one slot: each new peer takes it, while the recent entries of the names that
        // held it before still point there
        let mut u = Upstreams::new(1, 0);
        u.failure(100, &key(1), Some(b"a"), 3);
        u.failure(100, &key(2), Some(b"b"), 2);
        u.failure(100, &key(3), Some(b"a"), 1);
        assert_eq!(u.len(), 1);
        assert_eq!(&u.peers()[0].name[..], b"a");
        assert_eq!(u.peers()[0].total, 1); // a afresh: not b's count, not a's old one
        assert_eq!(u.evicted, 2);
        // names whose hashes share the entry's low bits, counted in turn, each its own
        let names: Vec<String> = (0..200).map(|i| format!("10.0.{i}.1:80")).collect();
        let mut many = Upstreams::new(256, 0);
        for round in 0..3 {
            for (i, name) in names.iter().enumerate() {
                many.failure(
                    100,
                    &key((round * 1000 + i) as u64),
                    Some(name.as_bytes()),
                    1,
                );
            }
        }
        assert_eq!(many.len(), 200);
        assert!(many.peers().iter().all(|p| p.total == 3));
    }

    #[test]
    fn room_is_made_by_the_least_recently_failing_of_equals() {
        let mut u = Upstreams::new(2, 0);
        u.failure(100, &key(1), Some(b"a"), 1);
        u.failure(100, &key(2), Some(b"b"), 1);
        u.failure(101, &key(3), Some(b"b"), 1);
        u.failure(101, &key(4), Some(b"a"), 1); // a failed last: b is the older
        u.failure(101, &key(5), Some(b"c"), 1);
        let names: Vec<&[u8]> = u.peers().iter().map(|p| &p.name[..]).collect();
        assert_eq!(names, [&b"a"[..], &b"c"[..]]);
    }

    #[test]
    fn room_is_made_among_the_eight_least_recently_failing_only() {
        let mut u = Upstreams::new(10, 0);
        for i in 0..9u64 {
            let name = format!("p{i}");
            for k in 0..5 {
                u.failure(100, &key(10 * i + k), Some(name.as_bytes()), 1);
            }
        }
        u.failure(100, &key(99), Some(b"p9"), 1); // the fewest, but failed last
        u.failure(100, &key(100), Some(b"new"), 1);
        let names: Vec<&[u8]> = u.peers().iter().map(|p| &p.name[..]).collect();
        assert!(
            !names.contains(&&b"p0"[..]),
            "the oldest of the eight makes room"
        );
        assert!(names.contains(&&b"p9"[..]) && names.contains(&&b"p8"[..]));
        // the eight are the least recently failing whatever their slots: p0, in the
        // first slot, failed last (once in the window); the oldest of the rest makes room
        let mut w = Upstreams::new(10, 0);
        w.failure(40, &key(1), Some(b"p0"), 1); // out of the window at 100
        for i in 1..10u64 {
            let name = format!("p{i}");
            for k in 0..5 {
                w.failure(100, &key(10 * i + k), Some(name.as_bytes()), 1);
            }
        }
        w.failure(100, &key(2), Some(b"p0"), 1);
        w.failure(100, &key(3), Some(b"new"), 1);
        let names: Vec<&[u8]> = w.peers().iter().map(|p| &p.name[..]).collect();
        assert!(names.contains(&&b"p0"[..]) && !names.contains(&&b"p1"[..]));
        // a seeded peer counts as failing when it was seeded
        let mut v = Upstreams::new(2, 0);
        v.failure(10, &key(1), Some(b"a"), 1); // out of the window at 200
        v.seed(b"b", 0.0, 0.0, 1, 200);
        v.failure(200, &key(2), Some(b"c"), 1);
        let names: Vec<&[u8]> = v.peers().iter().map(|p| &p.name[..]).collect();
        assert_eq!(names, [&b"c"[..], &b"b"[..]]);
    }

    #[test]
    fn connection_keys_spread_over_the_registers() {
        // 10,240 keys differing in cid, pid or source: about 10 a register, none far off
        let mut per = [0u32; REGISTERS];
        for i in 0..10_240u64 {
            let k = Key {
                source: (i % 3) as u32,
                pid: 1 + i % 5,
                cid: i / 15,
            };
            per[(hash_key(&k) >> (64 - HLL_BITS)) as usize] += 1;
        }
        let empty = per.iter().filter(|&&n| n == 0).count();
        let most = *per.iter().max().unwrap();
        assert!(empty <= 2 && most <= 30, "{empty} empty, {most} at most");
        // keys that differ in one field only never share a hash
        let mut seen = std::collections::HashSet::new();
        for source in 0..4 {
            for pid in 0..4 {
                for cid in 0..4 {
                    assert!(seen.insert(hash_key(&Key { source, pid, cid })));
                }
            }
        }
        // and the rank bits below the index are mixed too
        let ranks: Vec<u32> = (0..4096u64)
            .map(|cid| (hash_key(&key(cid)) << HLL_BITS).leading_zeros())
            .collect();
        let zero = ranks.iter().filter(|&&r| r == 0).count();
        assert!(
            (1_848..=2_248).contains(&zero),
            "{zero} of 4096 with rank 1"
        );
    }

    #[test]
    fn the_estimate_is_hyperloglogs_when_no_register_is_zero() {
        // every register at rank 1: 2 alpha m, alpha = 0.7213 / (1 + 1.079 / 1024)
        let r = [1u8; REGISTERS];
        let got = estimate(&r);
        assert!((got - 1_475.667).abs() < 0.001, "{got}");
    }

    #[test]
    fn the_estimate_is_linear_counting_when_small() {
        let mut r = [0u8; REGISTERS];
        assert_eq!(estimate(&r), 0.0);
        r[0] = 1;
        let one = estimate(&r);
        assert!((one - 1.0).abs() < 0.01, "{one}");
    }
}
