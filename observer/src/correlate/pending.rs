//! A bounded table of things waiting for their match (a publish for its confirm, a delivery
//! for its ack): entries grouped by scope (a connection, or [`GLOBAL`]) and key, oldest first
//! within a key, with a size cap and a time-to-live. An entry that is neither matched nor
//! removed leaves by eviction (cap or TTL), and the caller is told so it can count it.
//!
//! Eviction order is insertion order: a queue of (id, time, scope, key) references. Matched
//! entries leave their references behind; those are skipped when reached and compacted away
//! when they outnumber the live entries, so memory stays proportional to the cap.
use std::{
    collections::{VecDeque, hash_map::Entry},
    hash::Hash,
};

use crate::FastMap;

/// The scope of tables whose matches may cross connections.
pub const GLOBAL: u64 = u64::MAX;

/// One waiting entry.
#[derive(Debug)]
pub struct Slot<V> {
    /// Insertion number: increases with every insert, so entries under a key are in id order.
    pub id: u64,
    /// Event time (ns since the epoch) of the event that created it.
    pub ts_ns: u64,
    pub value: V,
}

/// The entries under one key, oldest first. Most keys hold a single entry (a publish
/// sequence, a packet id, a body), so that case is stored inline: no queue allocation per
/// message. Emptied by taking: `Many` with an empty queue (never `One` of nothing).
#[derive(Debug)]
enum Slots<V> {
    One(Slot<V>),
    Many(VecDeque<Slot<V>>),
}

impl<V> Slots<V> {
    fn push_back(&mut self, slot: Slot<V>) {
        match self {
            Slots::Many(q) => q.push_back(slot),
            Slots::One(_) => {
                let Slots::One(first) = std::mem::replace(self, Slots::Many(VecDeque::new()))
                else {
                    unreachable!("matched One")
                };
                let mut q = VecDeque::with_capacity(4);
                q.push_back(first);
                q.push_back(slot);
                *self = Slots::Many(q);
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Slots::Many(q) if q.is_empty())
    }

    fn front(&self) -> Option<&Slot<V>> {
        match self {
            Slots::One(s) => Some(s),
            Slots::Many(q) => q.front(),
        }
    }

    fn pop_front(&mut self) -> Option<Slot<V>> {
        match self {
            Slots::Many(q) => q.pop_front(),
            Slots::One(_) => match std::mem::replace(self, Slots::Many(VecDeque::new())) {
                Slots::One(s) => Some(s),
                Slots::Many(_) => unreachable!("matched One"),
            },
        }
    }

    /// Removes the entry at `at` (0 = oldest).
    fn remove(&mut self, at: usize) -> Option<Slot<V>> {
        match self {
            Slots::Many(q) => q.remove(at),
            Slots::One(_) if at == 0 => self.pop_front(),
            Slots::One(_) => None,
        }
    }

    fn position(&self, mut pred: impl FnMut(&Slot<V>) -> bool) -> Option<usize> {
        match self {
            Slots::One(s) => pred(s).then_some(0),
            Slots::Many(q) => q.iter().position(pred),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Slot<V>> {
        let (one, many) = match self {
            Slots::One(s) => (Some(s), None),
            Slots::Many(q) => (None, Some(q.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot<V>> {
        let (one, many) = match self {
            Slots::One(s) => (Some(s), None),
            Slots::Many(q) => (None, Some(q.iter_mut())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn for_each(self, mut each: impl FnMut(Slot<V>)) {
        match self {
            Slots::One(s) => each(s),
            Slots::Many(q) => q.into_iter().for_each(each),
        }
    }

    /// The oldest entry with an id of at least `min_id` that satisfies `pred` (binary search
    /// to `min_id`, then forward).
    fn first_from(
        &mut self,
        min_id: u64,
        mut pred: impl FnMut(&V) -> bool,
    ) -> Option<&mut Slot<V>> {
        match self {
            Slots::One(s) => (s.id >= min_id && pred(&s.value)).then_some(s),
            Slots::Many(q) => {
                let start = q.partition_point(|s| s.id < min_id);
                q.range_mut(start..).find(|s| pred(&s.value))
            }
        }
    }
}

type Keys<K, V> = FastMap<K, Slots<V>>;

#[derive(Debug)]
pub struct Pending<K, V> {
    scopes: FastMap<u64, Keys<K, V>>,
    order: VecDeque<(u64, u64, u64, K)>,
    live: usize,
    next_id: u64,
    cap: usize,
    ttl_ns: u64,
}

impl<K: Hash + Eq + Clone, V> Pending<K, V> {
    pub fn new(cap: usize, ttl_ns: u64) -> Self {
        Self {
            scopes: FastMap::default(),
            order: VecDeque::new(),
            live: 0,
            next_id: 0,
            cap: cap.max(1),
            ttl_ns,
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds an entry; at the cap, the oldest entry is evicted first and handed to `evicted`.
    pub fn insert(&mut self, scope: u64, key: K, ts_ns: u64, value: V, evicted: impl FnMut(V)) {
        if self.live >= self.cap {
            self.evict_oldest(evicted);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.order.push_back((id, ts_ns, scope, key.clone()));
        let slot = Slot { id, ts_ns, value };
        match self.scopes.entry(scope).or_default().entry(key) {
            Entry::Occupied(mut o) => o.get_mut().push_back(slot),
            Entry::Vacant(v) => {
                v.insert(Slots::One(slot));
            }
        }
        self.live += 1;
        if self.order.len() > 2 * self.live + 1024 {
            self.compact();
        }
    }

    /// Runs `f` on the entries under `key`, then frees the key (and the scope) if `f` left
    /// them empty: one lookup per level for the whole operation.
    fn with_slots<R>(
        &mut self,
        scope: u64,
        key: &K,
        f: impl FnOnce(&mut Slots<V>) -> R,
    ) -> Option<R> {
        let keys = self.scopes.get_mut(&scope)?;
        let slots = keys.get_mut(key)?;
        let r = f(slots);
        if slots.is_empty() {
            keys.remove(key);
            if keys.is_empty() {
                self.scopes.remove(&scope);
            }
        }
        Some(r)
    }

    /// Removes and returns the oldest entry under `key`.
    pub fn take_front(&mut self, scope: u64, key: &K) -> Option<Slot<V>> {
        let slot = self.with_slots(scope, key, Slots::pop_front).flatten();
        self.live -= slot.is_some() as usize;
        slot
    }

    /// Removes and returns the oldest entry under `key` that satisfies `pred`.
    pub fn take_where(
        &mut self,
        scope: u64,
        key: &K,
        mut pred: impl FnMut(&V) -> bool,
    ) -> Option<Slot<V>> {
        let slot = self
            .with_slots(scope, key, |slots| {
                let at = slots.position(|s| pred(&s.value))?;
                slots.remove(at)
            })
            .flatten();
        self.live -= slot.is_some() as usize;
        slot
    }

    /// Removes the leading entries under `key` that satisfy `pred`, oldest first.
    pub fn take_while(
        &mut self,
        scope: u64,
        key: &K,
        mut pred: impl FnMut(&V) -> bool,
        mut each: impl FnMut(Slot<V>),
    ) {
        let taken = self
            .with_slots(scope, key, |slots| {
                let mut taken = 0;
                while slots.front().is_some_and(|s| pred(&s.value)) {
                    each(slots.pop_front().expect("front checked"));
                    taken += 1;
                }
                taken
            })
            .unwrap_or(0);
        self.live -= taken;
    }

    /// The entries under `key`, oldest first, for in-place updates (fan-out matches).
    pub fn iter_mut(&mut self, scope: u64, key: &K) -> impl Iterator<Item = &mut Slot<V>> {
        self.scopes
            .get_mut(&scope)
            .and_then(|keys| keys.get_mut(key))
            .into_iter()
            .flat_map(|s| s.iter_mut())
    }

    /// The oldest entry under `key` with an id of at least `min_id` that satisfies `pred`
    /// (found by binary search, then scanning forward).
    pub fn first_from(
        &mut self,
        scope: u64,
        key: &K,
        min_id: u64,
        pred: impl FnMut(&V) -> bool,
    ) -> Option<&mut Slot<V>> {
        self.scopes
            .get_mut(&scope)?
            .get_mut(key)?
            .first_from(min_id, pred)
    }

    /// Drops every entry of `scope` (a closed connection); returns them to `each`.
    pub fn remove_scope(&mut self, scope: u64, mut each: impl FnMut(Slot<V>)) {
        if let Some(keys) = self.scopes.remove(&scope) {
            for slots in keys.into_values() {
                slots.for_each(|slot| {
                    self.live -= 1;
                    each(slot);
                });
            }
        }
    }

    /// Drops every entry under one key (an AMQP channel that closed).
    pub fn remove_key(&mut self, scope: u64, key: &K, mut each: impl FnMut(Slot<V>)) {
        let Some(keys) = self.scopes.get_mut(&scope) else {
            return;
        };
        if let Some(slots) = keys.remove(key) {
            slots.for_each(|slot| {
                self.live -= 1;
                each(slot);
            });
        }
        if keys.is_empty() {
            self.scopes.remove(&scope);
        }
    }

    /// Evicts entries created before `now_ns - ttl`.
    pub fn expire(&mut self, now_ns: u64, mut evicted: impl FnMut(V)) {
        let horizon = now_ns.saturating_sub(self.ttl_ns);
        while let Some(&(_, ts, _, _)) = self.order.front() {
            if ts > horizon {
                break;
            }
            let (id, _, scope, key) = self.order.pop_front().expect("front checked");
            if let Some(v) = self.remove_id(scope, &key, id) {
                evicted(v);
            }
        }
    }

    /// Every live value (for gauges such as messages in flight).
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.scopes
            .values()
            .flat_map(|k| k.values())
            .flat_map(|s| s.iter())
            .map(|s| &s.value)
    }

    fn evict_oldest(&mut self, mut evicted: impl FnMut(V)) {
        while let Some((id, _, scope, key)) = self.order.pop_front() {
            if let Some(v) = self.remove_id(scope, &key, id) {
                evicted(v);
                return;
            }
        }
    }

    /// Removes entry `id` if it is still there. Entries under a key leave oldest first unless
    /// taken by predicate, so a live entry is found near the front.
    fn remove_id(&mut self, scope: u64, key: &K, id: u64) -> Option<V> {
        let slot = self
            .with_slots(scope, key, |slots| {
                let at = slots.position(|s| s.id == id)?;
                slots.remove(at)
            })
            .flatten()?;
        self.live -= 1;
        Some(slot.value)
    }

    fn compact(&mut self) {
        let scopes = &self.scopes;
        self.order.retain(|(id, _, scope, key)| {
            scopes
                .get(scope)
                .and_then(|k| k.get(key))
                .is_some_and(|slots| slots.iter().any(|s| s.id == *id))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_per_key_and_ttl_eviction() {
        let mut p: Pending<u32, &str> = Pending::new(10, 100);
        let mut gone = Vec::new();
        p.insert(1, 7, 0, "a", |v| gone.push(v));
        p.insert(1, 7, 50, "b", |v| gone.push(v));
        p.insert(2, 7, 60, "c", |v| gone.push(v));
        assert_eq!(p.take_front(1, &7).unwrap().value, "a");
        p.expire(155, |v| gone.push(v));
        assert_eq!(gone, vec!["b"], "a was matched, b expired, c is young");
        assert_eq!(p.len(), 1);
        p.expire(1000, |v| gone.push(v));
        assert_eq!(gone, vec!["b", "c"]);
        assert!(p.is_empty());
        assert!(p.scopes.is_empty(), "empty scopes and keys are freed");
    }

    #[test]
    fn cap_evicts_the_oldest_live_entry() {
        let mut p: Pending<u32, u32> = Pending::new(3, u64::MAX);
        let mut gone = Vec::new();
        for i in 0..3 {
            p.insert(GLOBAL, i, u64::from(i), i, |v| gone.push(v));
        }
        p.take_front(GLOBAL, &0);
        p.insert(GLOBAL, 9, 9, 9, |v| gone.push(v));
        assert!(gone.is_empty(), "room after a match");
        p.insert(GLOBAL, 10, 10, 10, |v| gone.push(v));
        assert_eq!(
            gone,
            vec![1],
            "entry 0 was matched; 1 is the oldest live one"
        );
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn predicates_scopes_and_keys() {
        let mut p: Pending<u16, u64> = Pending::new(100, 1000);
        for tag in 1..=5 {
            p.insert(1, 1, tag, tag, |_| {});
        }
        p.insert(1, 2, 0, 100, |_| {});
        p.insert(2, 1, 0, 200, |_| {});
        assert_eq!(p.take_where(1, &1, |&t| t == 3).unwrap().value, 3);
        let mut upto = Vec::new();
        p.take_while(1, &1, |&t| t <= 4, |s| upto.push(s.value));
        assert_eq!(upto, vec![1, 2, 4]);
        let mut closed = Vec::new();
        p.remove_key(1, &2, |s| closed.push(s.value));
        assert_eq!(closed, vec![100]);
        p.remove_scope(2, |s| closed.push(s.value));
        assert_eq!(closed, vec![100, 200]);
        assert_eq!(p.values().copied().collect::<Vec<_>>(), vec![5]);
        // References to entries that left are skipped by expiry.
        let mut gone = Vec::new();
        p.expire(u64::MAX, |v| gone.push(v));
        assert_eq!(gone, vec![5]);
    }

    #[test]
    fn references_are_compacted() {
        let mut p: Pending<u32, u32> = Pending::new(10, u64::MAX);
        for i in 0..100_000 {
            p.insert(GLOBAL, 1, i, i as u32, |_| {});
            p.take_front(GLOBAL, &1);
        }
        assert!(p.order.len() < 2000, "{} references kept", p.order.len());
    }
}
