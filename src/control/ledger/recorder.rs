//! The request path's side of the ledger: [`Recorder::offer`] remembers a
//! routing key that `new` served, and [`Recorder::mismatch`] a key whose
//! shadow comparison differed (whichever side served it), each once per
//! flush interval, without a lock and without allocating for a key already
//! seen in the interval.
//!
//! Two bounded, lock-free structures:
//! - a *seen* table of `capacity * 2` atomic slots (open addressing, eight
//!   probes). A slot holds the interval's generation (16 bits) and 48 bits
//!   of a keyed hash of (key, source, [`Marks`]); a slot of an older generation
//!   is free, so starting a new interval clears the table by bumping one
//!   counter.
//! - a queue ([`crossbeam_queue::ArrayQueue`]) of `capacity` exposures, which
//!   the flusher drains every interval. A key not yet seen is copied into
//!   its queue slot ([`Key`]: inline up to 46 bytes, so no allocation for
//!   user IDs, UUIDs or IP text); a full queue drops it and counts.
//!
//! The hash is std's SipHash of the key with a random key per process (the
//! origin and the marks are mixed in after): a client cannot craft keys whose
//! hashes collide with another user's and so hide that user's exposure. Two keys sharing 48 bits of hash in one interval would
//! make the second wait for the next interval (about one in 2^48/capacity).

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use prometheus::IntCounter;

use crate::proxy::split::KeyOrigin;

const PROBES: usize = 8;
const HASH_BITS: u32 = 48;
const HASH_MASK: u64 = (1 << HASH_BITS) - 1;

/// Key bytes kept in the queue slot itself (the slot is 80 bytes).
const INLINE: usize = 46;

/// A routing key's bytes: inline when short (nearly always), else on the
/// heap (a key can be as long as the header size limit allows).
#[derive(Clone)]
pub enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    pub fn new(key: &[u8]) -> Key {
        if key.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline { len: key.len() as u8, bytes }
        } else {
            Key::Heap(key.into())
        }
    }
}

impl Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(bytes) => bytes,
        }
    }
}

// Equality, order and hash are the bytes', whichever way they are kept.
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self), f)
    }
}

/// What a sighting says about its key (docs/src/ledger.md, "Shadow
/// mismatches"): each is kept once true when sightings merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    /// `new` served a non-safe method (POST, PUT, PATCH, DELETE, …).
    pub wrote: bool,
    /// `new` served the key (what exposure means).
    pub served_new: bool,
    /// A shadow comparison of the key's request differed between the versions.
    pub mismatch: bool,
}

impl Marks {
    /// The marks of a request `new` served.
    pub fn served_new(wrote: bool) -> Marks {
        Marks { wrote, served_new: true, mismatch: false }
    }

    /// The three marks as bits 0..=2.
    fn bits(self) -> u64 {
        self.wrote as u64 | (self.served_new as u64) << 1 | (self.mismatch as u64) << 2
    }

    pub fn merge(&mut self, other: Marks) {
        self.wrote |= other.wrote;
        self.served_new |= other.served_new;
        self.mismatch |= other.mismatch;
    }
}

/// One sighting of a key: served by `new`, or seen to mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub key: Key,
    /// [`Recorder::key_hash`] of `key`.
    pub key_hash: u64,
    pub origin: Arc<KeyOrigin>,
    pub marks: Marks,
    /// Unix time, seconds.
    pub at: u64,
}

pub struct Recorder {
    seen: Box<[AtomicU64]>,
    /// Shared with the [`Batch`] the flusher drains on the blocking pool.
    queue: Arc<ArrayQueue<Exposure>>,
    /// The current interval's generation, 1..=0xffff (0 marks an empty slot).
    generation: AtomicU64,
    /// Unix seconds, set by [`Recorder::tick`] (every second, from the
    /// flusher task): a first sighting reads it instead of the system clock.
    clock: AtomicU64,
    hasher: RandomState,
    dropped: IntCounter,
}

impl Recorder {
    pub fn new(capacity: usize, dropped: IntCounter) -> Recorder {
        let slots = (capacity * 2).next_power_of_two();
        Recorder {
            seen: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            queue: Arc::new(ArrayQueue::new(capacity)),
            generation: AtomicU64::new(1),
            clock: AtomicU64::new(unix_now()),
            hasher: RandomState::new(),
            dropped,
        }
    }

    /// `new` served `key` (found where `origin` says). Cheap when the key
    /// was already seen in this interval: one hash and a few atomic loads.
    #[inline]
    pub fn offer(&self, key: &[u8], origin: &Arc<KeyOrigin>, wrote: bool) {
        self.record(key, origin, Marks::served_new(wrote));
    }

    /// The shadow comparison of a request for `key` differed; `served_new`:
    /// the client's answer came from `new`. Called off the request path (the
    /// comparison runs in the background) but just as cheap and bounded:
    /// it never waits, a full queue drops and counts.
    pub fn mismatch(&self, key: &[u8], origin: &Arc<KeyOrigin>, served_new: bool) {
        // `wrote` stays about what `new` served: `offer` records it for the
        // request itself when `new` was the primary.
        self.record(key, origin, Marks { wrote: false, served_new, mismatch: true });
    }

    #[inline(always)]
    fn record(&self, key: &[u8], origin: &Arc<KeyOrigin>, marks: Marks) {
        // The key's hash alone (one SipHash pass, kept with the sighting for
        // the flusher's map), then the origin and the marks mixed in for the
        // table: (key, origin, marks) is what is recorded once.
        let key_hash = self.key_hash(key);
        let hash = (key_hash ^ mix(origin, marks)) & HASH_MASK;
        let generation = self.generation.load(Ordering::Relaxed);
        let tag = generation << HASH_BITS | hash;
        let mask = self.seen.len() - 1;
        let start = hash as usize & mask;
        for probe in 0..PROBES {
            let slot = &self.seen[(start + probe) & mask];
            let mut current = slot.load(Ordering::Relaxed);
            loop {
                if current == tag {
                    return;
                }
                if current >> HASH_BITS == generation {
                    break; // another key of this interval: probe on
                }
                match slot.compare_exchange_weak(current, tag, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return self.enqueue(key, key_hash, origin, marks),
                    Err(now) => current = now,
                }
            }
        }
        // The table is full for this interval: record without deduplicating
        // (the queue still bounds what is kept).
        self.enqueue(key, key_hash, origin, marks);
    }

    /// The keyed hash of a key's bytes, as [`Exposure::key_hash`] holds it.
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key); // one write, no length prefix: nothing follows it
        hasher.finish()
    }

    /// The hasher behind [`Recorder::key_hash`], for the flusher's map.
    pub fn hasher(&self) -> &RandomState {
        &self.hasher
    }

    fn enqueue(&self, key: &[u8], key_hash: u64, origin: &Arc<KeyOrigin>, marks: Marks) {
        let exposure = Exposure {
            key: Key::new(key),
            key_hash,
            origin: origin.clone(),
            marks,
            at: self.clock.load(Ordering::Relaxed),
        };
        if self.queue.push(exposure).is_err() {
            self.dropped.inc();
        }
    }

    /// Read the system clock for the sightings to come. A sighting's time is
    /// at most a tick old, well inside the interval it is recorded once in.
    pub fn tick(&self) {
        self.clock.store(unix_now(), Ordering::Relaxed);
    }

    /// Start a new interval (every key is recorded again once) and take what
    /// was queued.
    pub fn rotate(&self) -> Vec<Exposure> {
        self.rotate_batch().collect()
    }

    /// [`Recorder::rotate`] without collecting: the flusher pops the
    /// interval's sightings straight into its map on the blocking pool
    /// (no `Vec` of tens of thousands of 80-byte sightings to build, grow
    /// and free every interval).
    pub fn rotate_batch(&self) -> Batch {
        let next = self.generation.load(Ordering::Relaxed) % 0xffff + 1;
        self.generation.store(next, Ordering::Relaxed);
        Batch { left: self.queue.len(), queue: self.queue.clone() }
    }

    /// Take what is queued, without starting a new interval.
    pub fn drain(&self) -> Vec<Exposure> {
        std::iter::from_fn(|| self.queue.pop()).collect()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// The origin (its address: one `Arc` per key source) and the marks, spread
/// over the hash's bits. Pointers are 8-aligned, so bits 0..=2 are free for
/// the marks.
fn mix(origin: &Arc<KeyOrigin>, marks: Marks) -> u64 {
    (Arc::as_ptr(origin) as u64 | marks.bits()).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// What was queued when an interval ended, popped as it is read. Sightings
/// queued after the rotation stay for the next batch; a batch dropped
/// before it is read to its end leaves the rest queued.
pub struct Batch {
    queue: Arc<ArrayQueue<Exposure>>,
    left: usize,
}

impl Iterator for Batch {
    type Item = Exposure;

    fn next(&mut self) -> Option<Exposure> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let exposure = self.queue.pop();
        if exposure.is_none() {
            self.left = 0;
        }
        exposure
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(source: &str) -> Arc<KeyOrigin> {
        Arc::new(KeyOrigin { release: "r".into(), source: source.into() })
    }

    fn recorder(capacity: usize) -> (Recorder, IntCounter) {
        let dropped = IntCounter::new("d", "d").unwrap();
        (Recorder::new(capacity, dropped.clone()), dropped)
    }

    #[test]
    fn a_key_is_recorded_once_per_interval_and_per_wrote() {
        let (r, _) = recorder(64);
        let (header, ip) = (origin("header:x-user-id"), origin("client_ip"));
        for _ in 0..10 {
            r.offer(b"alice", &header, false);
        }
        r.offer(b"alice", &header, true);
        r.offer(b"alice", &ip, false);
        r.offer(b"bob", &header, false);
        let got = r.rotate();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().any(|e| &*e.key == b"alice" && e.marks.wrote));
        r.offer(b"alice", &header, false);
        assert_eq!(r.rotate().len(), 1, "a new interval records the key again");
        assert!(r.rotate().is_empty());
    }

    #[test]
    fn keys_are_kept_inline_up_to_the_limit_and_on_the_heap_beyond() {
        assert_eq!(std::mem::size_of::<Key>(), 48);
        let short = Key::new(b"user-42");
        assert!(matches!(short, Key::Inline { len: 7, .. }));
        let edge = vec![b'x'; INLINE];
        assert!(matches!(Key::new(&edge), Key::Inline { .. }));
        let long = vec![b'y'; INLINE + 1];
        assert!(matches!(Key::new(&long), Key::Heap(_)));
        assert_eq!(&*Key::new(&long), &long[..]);
        assert_eq!(Key::new(b"user-42"), short);
        assert_eq!(Key::new(b""), Key::Heap(Box::default()), "equal bytes are equal keys, however kept");
    }

    #[test]
    fn a_batch_takes_what_was_queued_at_the_rotation_only() {
        let (r, _) = recorder(16);
        let o = origin("client_ip");
        r.offer(b"a", &o, false);
        r.offer(b"b", &o, false);
        let batch = r.rotate_batch();
        r.offer(b"c", &o, false); // the next interval's
        let keys: Vec<Key> = batch.map(|e| e.key).collect();
        assert_eq!(keys, [Key::new(b"a"), Key::new(b"b")]);
        let next: Vec<Key> = r.rotate_batch().map(|e| e.key).collect();
        assert_eq!(next, [Key::new(b"c")]);
        assert_eq!(r.rotate_batch().count(), 0);
    }

    #[test]
    fn sightings_carry_the_ticked_clock() {
        let (r, _) = recorder(16);
        let o = origin("client_ip");
        r.clock.store(1_000, Ordering::Relaxed);
        r.offer(b"a", &o, false);
        r.tick();
        r.offer(b"b", &o, false);
        let got = r.rotate();
        assert_eq!(got[0].at, 1_000);
        assert!(got[1].at >= unix_now() - 1 && got[1].at <= unix_now());
    }

    #[test]
    fn overflow_is_dropped_and_counted_never_blocks() {
        let (r, dropped) = recorder(16);
        let o = origin("client_ip");
        for i in 0..100u32 {
            r.offer(i.to_string().as_bytes(), &o, false);
        }
        assert_eq!(r.queued(), 16);
        assert_eq!(dropped.get(), 84);
        assert_eq!(r.rotate().len(), 16);
    }

    #[test]
    fn a_full_table_still_records() {
        let (r, dropped) = recorder(16);
        // 32 slots; 40 distinct keys fill them, the rest go straight to the queue.
        let o = origin("client_ip");
        for i in 0..40u32 {
            r.offer(i.to_string().as_bytes(), &o, false);
            if i % 16 == 15 {
                assert_eq!(r.drain().len(), 16);
            }
        }
        assert_eq!(dropped.get(), 0);
        assert_eq!(r.drain().len(), 8);
    }

    #[test]
    fn generations_wrap_without_reusing_zero() {
        let (r, _) = recorder(16);
        let o = origin("client_ip");
        r.generation.store(0xffff, Ordering::Relaxed);
        r.offer(b"k", &o, false);
        assert_eq!(r.rotate().len(), 1);
        assert_eq!(r.generation.load(Ordering::Relaxed), 1);
        r.offer(b"k", &o, false);
        assert_eq!(r.rotate().len(), 1);
    }

    #[test]
    fn concurrent_offers_record_each_key_once() {
        let (r, _) = recorder(4096);
        let r = Arc::new(r);
        let o = origin("header:x-user-id");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (r, o) = (r.clone(), o.clone());
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        r.offer(format!("user-{i}").as_bytes(), &o, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut keys: Vec<_> = r.rotate().into_iter().map(|e| e.key).collect();
        keys.sort();
        let before = keys.len();
        keys.dedup();
        assert_eq!(before, 1000);
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn a_mismatch_is_recorded_beside_the_exposure_with_who_served_it() {
        let (r, _) = recorder(64);
        let o = origin("header:x-user-id");
        r.offer(b"alice", &o, false);
        r.mismatch(b"alice", &o, true);
        r.mismatch(b"alice", &o, true);
        r.mismatch(b"bob", &o, false);
        let got: Vec<(Key, Marks)> = r.rotate().into_iter().map(|e| (e.key, e.marks)).collect();
        assert_eq!(
            got,
            [
                (Key::new(b"alice"), Marks { wrote: false, served_new: true, mismatch: false }),
                (Key::new(b"alice"), Marks { wrote: false, served_new: true, mismatch: true }),
                (Key::new(b"bob"), Marks { wrote: false, served_new: false, mismatch: true }),
            ],
            "a mismatch is its own sighting, once per interval; stable's keeps served_new false"
        );
    }

    #[test]
    fn marks_merge_once_true_stays_true() {
        let mut m = Marks { wrote: false, served_new: false, mismatch: true };
        m.merge(Marks::served_new(true));
        assert_eq!(m, Marks { wrote: true, served_new: true, mismatch: true });
        assert_eq!(m.bits(), 7);
        assert_eq!(Marks::default().bits(), 0);
    }
}
