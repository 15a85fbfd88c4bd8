//! One flush interval's rows: the sightings merged per key (first and last
//! seen, the [`Marks`]), grouped by their shared origin so no release or source
//! string is copied per row, and the [`Row`]s the sinks read back.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::control::ledger::recorder::{Key, Marks};
use crate::proxy::split::KeyOrigin;

/// One key's exposure in one release, merged over sightings: what the sink
/// reads back and the CSV lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub release: String,
    pub key: String,
    pub source: String,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub wrote: bool,
    /// `new` served the key. Lines written before the shadow existed have
    /// no such field: every one of them was a key `new` served.
    #[serde(default = "yes")]
    pub served_new: bool,
    /// A shadow comparison of the key's requests differed.
    #[serde(default)]
    pub mismatch: bool,
}

fn yes() -> bool {
    true
}

/// What identifies a row: (release, source, key), as the table's primary key.
pub type RowId = (String, String, String);

/// When a key was seen, and what its sightings said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub first_seen: u64,
    pub last_seen: u64,
    pub marks: Marks,
}

impl Seen {
    /// As the table's upsert merges: the widest span, a mark once set stays set.
    pub fn merge(&mut self, other: Seen) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.marks.merge(other.marks);
    }
}

/// Rows waiting to be written, merged by id (so one INSERT never names a
/// row twice, which PostgreSQL's ON CONFLICT refuses).
pub type Rows = HashMap<RowId, Seen>;

pub fn merge(rows: &mut Rows, id: RowId, seen: Seen) {
    rows.entry(id).and_modify(|s| s.merge(seen)).or_insert(seen);
}

/// The flusher's rows, waiting to be written: grouped by the origin their
/// sightings share (an `Arc` from the splitter), so a row costs its key and
/// its `Seen`, never copies of the release and source strings. Each map is
/// keyed by the hash the request path already computed (SipHash, keyed per
/// process), so a key is hashed once. Kept from one interval to the next and
/// cleared, so the maps keep their capacity.
#[derive(Debug)]
pub struct Pending {
    groups: Vec<(Arc<KeyOrigin>, KeyRows)>,
    len: usize,
    /// The recorder's: a key made text here must hash as the same text would.
    hasher: RandomState,
}

/// One origin's rows: key → when it was seen.
type KeyRows = HashMap<Hashed, Seen, BuildHasherDefault<Prehashed>>;

/// A key (valid UTF-8, see [`Pending::add`]) with its hash.
#[derive(Debug)]
struct Hashed {
    hash: u64,
    key: Key,
}

impl PartialEq for Hashed {
    fn eq(&self, other: &Hashed) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}
impl Eq for Hashed {}
impl Hash for Hashed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes the stored hash through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn write(&mut self, _: &[u8]) {
        unreachable!("Hashed writes one u64")
    }
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Pending {
    /// `hasher` is the recorder's ([`Recorder::hasher`](super::Recorder::hasher)).
    pub fn new(hasher: RandomState) -> Pending {
        Pending { groups: Vec::new(), len: 0, hasher }
    }

    pub fn hasher(&self) -> &RandomState {
        &self.hasher
    }

    /// How many origins the rows are grouped under (the tests check reuse).
    #[cfg(test)]
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Merge a sighting of `key` (`hash`: the recorder's key hash) as the
    /// table's upsert would. Rows are text: invalid UTF-8 is replaced by
    /// U+FFFD, and sightings that become the same text merge into one row.
    pub fn add(&mut self, origin: &Arc<KeyOrigin>, key: Key, hash: u64, seen: Seen) {
        let key = match std::str::from_utf8(&key) {
            Ok(_) => Hashed { hash, key },
            Err(_) => {
                let text = String::from_utf8_lossy(&key);
                let mut hasher = std::hash::BuildHasher::build_hasher(&self.hasher);
                hasher.write(text.as_bytes()); // as Recorder::key_hash does
                Hashed { hash: hasher.finish(), key: Key::new(text.as_bytes()) }
            }
        };
        // A handful of origins (one per key source); the same `Arc` almost
        // always, equal strings after a reload built new ones.
        let group = match self.groups.iter().position(|(o, _)| Arc::ptr_eq(o, origin)) {
            Some(i) => i,
            None => match self.groups.iter().position(|(o, _)| **o == **origin) {
                Some(i) => i,
                None => {
                    self.groups.push((origin.clone(), HashMap::default()));
                    self.groups.len() - 1
                }
            },
        };
        match self.groups[group].1.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().merge(seen),
            Entry::Vacant(e) => {
                e.insert(seen);
                self.len += 1;
            }
        }
    }

    /// (release, source, key, seen) of every row.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &str, &Seen)> {
        self.by_origin().flat_map(|(release, source, keys)| keys.map(move |(k, s)| (release, source, k, s)))
    }

    /// The rows origin by origin: (release, source, its (key, seen)s), for a
    /// writer that formats what an origin's rows share once.
    pub fn by_origin(&self) -> impl Iterator<Item = (&str, &str, impl Iterator<Item = (&str, &Seen)>)> {
        fn text(key: &Hashed) -> &str {
            std::str::from_utf8(&key.key).unwrap_or_default() // always text, see add
        }
        self.groups.iter().map(|(o, keys)| (&*o.release, &*o.source, keys.iter().map(|(k, s)| (text(k), s))))
    }

    /// Empty, keeping the maps' memory for the next interval (an origin
    /// that had no row since the last clear goes: an old config's).
    pub fn clear(&mut self) {
        self.groups.retain(|(_, keys)| !keys.is_empty());
        for (_, keys) in &mut self.groups {
            keys.clear();
        }
        self.len = 0;
    }
}

impl Row {
    pub fn split(self) -> (RowId, Seen) {
        let marks = Marks { wrote: self.wrote, served_new: self.served_new, mismatch: self.mismatch };
        let seen = Seen { first_seen: self.first_seen, last_seen: self.last_seen, marks };
        ((self.release, self.source, self.key), seen)
    }

    fn join((release, source, key): RowId, seen: Seen) -> Row {
        let Marks { wrote, served_new, mismatch } = seen.marks;
        Row {
            release,
            key,
            source,
            first_seen: seen.first_seen,
            last_seen: seen.last_seen,
            wrote,
            served_new,
            mismatch,
        }
    }
}

/// Rows sorted by key (then source), as the CSV lists them.
pub fn sorted(rows: Rows) -> Vec<Row> {
    let mut rows: Vec<Row> = rows.into_iter().map(|(id, seen)| Row::join(id, seen)).collect();
    rows.sort_by(|a, b| (&a.key, &a.source).cmp(&(&b.key, &b.source)));
    rows
}
