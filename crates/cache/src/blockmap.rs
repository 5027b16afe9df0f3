//! A compact ordered map from a volume's block number (`u64`) to a cache location (`u32`).
//!
//! Memory is the constraint (at most 16 bytes per cached 4 KiB block, see
//! `docs/PERFORMANCE.md`): a standard `BTreeMap<u64, u32>` costs about 20-30 bytes per entry.
//! Here entries live in fixed-size leaves of [`LEAF_CAP`] slots, each leaf storing its keys as
//! `u32` offsets from the leaf's base key, so an entry costs 8 bytes in a leaf that is on average
//! about 70% full after random inserts. Leaves are found through a `BTreeMap` keyed by base.
//!
//! Invariants: a leaf's keys are sorted, unique, and all in `[base, base + 2^32)`; every key of a
//! leaf is below the next leaf's base; no leaf is empty.

use std::collections::BTreeMap;

/// Slots per leaf.
pub const LEAF_CAP: usize = 128;

struct Leaf {
    len: u16,
    /// Keys (offsets from the base) in `[0, LEAF_CAP)`, values in `[LEAF_CAP, 2 * LEAF_CAP)`.
    slots: Box<[u32; 2 * LEAF_CAP]>,
}

impl Leaf {
    fn new() -> Self {
        Self {
            len: 0,
            slots: Box::new([0; 2 * LEAF_CAP]),
        }
    }
    fn keys(&self) -> &[u32] {
        &self.slots[..self.len as usize]
    }
    fn val(&self, i: usize) -> u32 {
        self.slots[LEAF_CAP + i]
    }
    fn full(&self) -> bool {
        self.len as usize == LEAF_CAP
    }
    fn insert_at(&mut self, i: usize, key: u32, val: u32) {
        let n = self.len as usize;
        self.slots.copy_within(i..n, i + 1);
        self.slots
            .copy_within(LEAF_CAP + i..LEAF_CAP + n, LEAF_CAP + i + 1);
        self.slots[i] = key;
        self.slots[LEAF_CAP + i] = val;
        self.len += 1;
    }
    fn remove_at(&mut self, i: usize) -> u32 {
        let n = self.len as usize;
        let v = self.slots[LEAF_CAP + i];
        self.slots.copy_within(i + 1..n, i);
        self.slots
            .copy_within(LEAF_CAP + i + 1..LEAF_CAP + n, LEAF_CAP + i);
        self.len -= 1;
        v
    }
    /// Adds `delta` to every key (rebasing to a lower base).
    fn shift(&mut self, delta: u32) {
        for k in &mut self.slots[..self.len as usize] {
            *k += delta;
        }
    }
}

/// The map. See the module documentation.
#[derive(Default)]
pub struct BlockMap {
    leaves: BTreeMap<u64, Leaf>,
    len: usize,
}

impl BlockMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of leaves (for memory accounting).
    pub fn leaves(&self) -> usize {
        self.leaves.len()
    }

    fn leaf_for(&self, key: u64) -> Option<(u64, &Leaf)> {
        self.leaves
            .range(..=key)
            .next_back()
            .map(|(b, l)| (*b, l))
            .filter(|(b, _)| key - b <= u64::from(u32::MAX))
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<u32> {
        let (base, leaf) = self.leaf_for(key)?;
        let off = (key - base) as u32;
        leaf.keys().binary_search(&off).ok().map(|i| leaf.val(i))
    }

    /// Sets `key` to `val`, returning the previous value.
    pub fn insert(&mut self, key: u64, val: u32) -> Option<u32> {
        let base = match self.leaf_for(key).map(|(b, _)| b) {
            Some(b) => b,
            None => self.make_room_below(key),
        };
        let leaf = self.leaves.get_mut(&base).expect("leaf exists");
        let off = (key - base) as u32;
        match leaf.keys().binary_search(&off) {
            Ok(i) => {
                let old = leaf.slots[LEAF_CAP + i];
                leaf.slots[LEAF_CAP + i] = val;
                Some(old)
            }
            Err(i) if !leaf.full() => {
                leaf.insert_at(i, off, val);
                self.len += 1;
                None
            }
            Err(_) => {
                self.split(base);
                self.insert(key, val)
            }
        }
    }

    /// `key` has no leaf at or below it within reach: rebase the next leaf down to `key` if it
    /// has room and reach, or start a new leaf. Returns the base now covering `key`.
    fn make_room_below(&mut self, key: u64) -> u64 {
        let next = self
            .leaves
            .range(key..)
            .next()
            .map(|(b, l)| (*b, l.full(), l.keys().last().copied().unwrap_or(0)));
        if let Some((nb, full, last)) = next {
            let delta = nb - key;
            if !full && delta + u64::from(last) <= u64::from(u32::MAX) {
                let mut leaf = self.leaves.remove(&nb).expect("listed");
                leaf.shift(delta as u32);
                self.leaves.insert(key, leaf);
                return key;
            }
        }
        self.leaves.insert(key, Leaf::new());
        key
    }

    fn split(&mut self, base: u64) {
        let leaf = self.leaves.get_mut(&base).expect("leaf exists");
        let mid = LEAF_CAP / 2;
        let pivot = leaf.slots[mid];
        let mut right = Leaf::new();
        let n = leaf.len as usize;
        for i in mid..n {
            right.slots[i - mid] = leaf.slots[i] - pivot;
            right.slots[LEAF_CAP + i - mid] = leaf.slots[LEAF_CAP + i];
        }
        right.len = (n - mid) as u16;
        leaf.len = mid as u16;
        self.leaves.insert(base + u64::from(pivot), right);
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: u64) -> Option<u32> {
        self.remove_where(key, |_| true)
    }

    /// Removes `key` only if it maps to `val`; true if it did.
    pub fn remove_if(&mut self, key: u64, val: u32) -> bool {
        self.remove_where(key, |v| v == val).is_some()
    }

    fn remove_where(&mut self, key: u64, pred: impl FnOnce(u32) -> bool) -> Option<u32> {
        let base = self.leaf_for(key)?.0;
        let leaf = self.leaves.get_mut(&base).expect("leaf exists");
        let i = leaf.keys().binary_search(&((key - base) as u32)).ok()?;
        if !pred(leaf.val(i)) {
            return None;
        }
        let v = leaf.remove_at(i);
        self.len -= 1;
        self.after_shrink(base);
        Some(v)
    }

    /// Drops an empty leaf, or merges a sparse one into its right neighbour when they fit.
    fn after_shrink(&mut self, base: u64) {
        let len = self.leaves[&base].len as usize;
        if len == 0 {
            self.leaves.remove(&base);
            return;
        }
        if len > LEAF_CAP / 4 {
            return;
        }
        let Some((&nb, next)) = self.leaves.range(base + 1..).next() else {
            return;
        };
        let next_last = nb - base + u64::from(next.keys().last().copied().unwrap_or(0));
        if len + next.len as usize > LEAF_CAP / 2 || next_last > u64::from(u32::MAX) {
            return;
        }
        let next = self.leaves.remove(&nb).expect("listed");
        let leaf = self.leaves.get_mut(&base).expect("leaf exists");
        let delta = (nb - base) as u32;
        for i in 0..next.len as usize {
            let at = leaf.len as usize;
            leaf.slots[at] = next.slots[i] + delta;
            leaf.slots[LEAF_CAP + at] = next.slots[LEAF_CAP + i];
            leaf.len += 1;
        }
    }

    /// The base of the leaf that may hold `start` (or `start` when none is below it): where a
    /// scan of keys from `start` begins.
    fn first_base(&self, start: u64) -> u64 {
        self.leaves
            .range(..=start)
            .next_back()
            .map_or(start, |(b, _)| *b)
    }

    /// Removes every key in `[start, end)`; returns how many.
    pub fn remove_range(&mut self, start: u64, end: u64) -> usize {
        if start >= end {
            return 0;
        }
        let first = self.first_base(start);
        let bases: Vec<u64> = self.leaves.range(first..end).map(|(b, _)| *b).collect();
        let mut removed = 0;
        for base in bases {
            let leaf = self.leaves.get_mut(&base).expect("listed");
            let lo = start.saturating_sub(base).min(u64::from(u32::MAX) + 1);
            let hi = end.saturating_sub(base).min(u64::from(u32::MAX) + 1);
            let keys = leaf.keys();
            let a = keys.partition_point(|&k| u64::from(k) < lo);
            let b = keys.partition_point(|&k| u64::from(k) < hi);
            if a == b {
                continue;
            }
            let n = leaf.len as usize;
            leaf.slots.copy_within(b..n, a);
            leaf.slots
                .copy_within(LEAF_CAP + b..LEAF_CAP + n, LEAF_CAP + a);
            leaf.len -= (b - a) as u16;
            removed += b - a;
            if leaf.len == 0 {
                self.leaves.remove(&base);
            }
        }
        self.len -= removed;
        removed
    }

    /// Visits every entry in `[start, end)` in key order.
    pub fn for_each_in(&self, start: u64, end: u64, mut f: impl FnMut(u64, u32)) {
        if start >= end {
            return;
        }
        let first = self.first_base(start);
        for (&base, leaf) in self.leaves.range(first..end) {
            for (i, &k) in leaf.keys().iter().enumerate() {
                let key = base + u64::from(k);
                if key >= end {
                    break;
                }
                if key >= start {
                    f(key, leaf.val(i));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap as Model;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        RemoveIf(u64, u32),
        RemoveRange(u64, u64),
    }

    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..2000,
            Just(u64::MAX - 1),
            (0u64..4).prop_map(|k| k << 33),
            any::<u64>()
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => key().prop_map(Op::Remove),
            1 => (key(), 0u32..3).prop_map(|(k, v)| Op::RemoveIf(k, v)),
            1 => (key(), 0u64..300).prop_map(|(k, n)| Op::RemoveRange(k, k.saturating_add(n))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn behaves_like_btreemap(ops in proptest::collection::vec(op(), 1..600)) {
            let mut m = BlockMap::new();
            let mut model = Model::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(m.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(m.remove(k), model.remove(&k)),
                    Op::RemoveIf(k, v) => {
                        let expect = model.get(&k) == Some(&v);
                        if expect { model.remove(&k); }
                        prop_assert_eq!(m.remove_if(k, v), expect);
                    }
                    Op::RemoveRange(a, b) => {
                        let keys: Vec<u64> = model.range(a..b).map(|(k, _)| *k).collect();
                        for k in &keys { model.remove(k); }
                        prop_assert_eq!(m.remove_range(a, b), keys.len());
                    }
                }
                prop_assert_eq!(m.len(), model.len());
            }
            let mut seen = Vec::new();
            m.for_each_in(0, u64::MAX, |k, v| seen.push((k, v)));
            let expect: Vec<(u64, u32)> = model.range(..u64::MAX).map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(seen, expect);
            for (k, v) in &model {
                prop_assert_eq!(m.get(*k), Some(*v));
            }
        }
    }

    #[test]
    fn descending_inserts_share_leaves() {
        let mut m = BlockMap::new();
        for k in (0..10_000u64).rev() {
            m.insert(k, k as u32);
        }
        assert_eq!(m.len(), 10_000);
        assert!(
            m.leaves() <= 10_000 / (LEAF_CAP / 2) + 2,
            "{} leaves",
            m.leaves()
        );
        for k in 0..10_000u64 {
            assert_eq!(m.get(k), Some(k as u32));
        }
    }
}
