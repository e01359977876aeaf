//! A map for the few entries a call holds (its parties, ringing targets, legs: one to a
//! handful).
//!
//! A `BTreeMap` allocates an 11-slot node for its first entry (≈ 0.5–1 KB for a party table),
//! which at 10,000 live calls was a fifth of the daemon's heap (issue 13, heaptrack). This keeps
//! the entries in one vector sorted by key, so lookups are a binary search and iteration is in
//! key order, as with the `BTreeMap` it replaces. It serialises as a map, as a `BTreeMap` does,
//! so state persisted with one reads back as the other.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map sorted by key, stored in one vector. For small maps only: insertion and removal move
/// the entries after the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap { entries: Vec::new() }
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    /// An empty map (no allocation until the first insert).
    pub fn new() -> Self {
        Self::default()
    }

    fn position<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.position(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value under `key`, to change.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.position(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.position(key).is_ok()
    }

    /// Puts `value` under `key`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                // One slot at a time: most maps hold one to three entries, and a vector's
                // first growth would reserve four.
                self.entries.reserve_exact(1);
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Takes the value under `key` out.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.position(key).ok()?;
        let (_, value) = self.entries.remove(i);
        if self.entries.is_empty() {
            // An ended call's table keeps nothing.
            self.entries = Vec::new();
        }
        Some(value)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<K: Serialize, V: Serialize> Serialize for SmallMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for SmallMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = SmallMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                // Bounded: the hint comes from the input.
                let mut map = SmallMap { entries: Vec::with_capacity(access.size_hint().unwrap_or(0).min(16)) };
                while let Some((k, v)) = access.next_entry()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// A set for a few entries: a [`SmallMap`] without values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmallSet<K> {
    map: SmallMap<K, ()>,
}

impl<K: Ord> SmallSet<K> {
    /// An empty set.
    pub fn new() -> Self {
        SmallSet { map: SmallMap::new() }
    }

    /// Adds `key`; false if it was there.
    pub fn insert(&mut self, key: K) -> bool {
        self.map.insert(key, ()).is_none()
    }

    /// Whether `key` is in the set.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Get(u8),
        Bump(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u8..12).prop_map(Op::Remove),
            (0u8..12).prop_map(Op::Get),
            (0u8..12).prop_map(Op::Bump),
        ]
    }

    proptest! {
        /// The same answers and the same order as the `BTreeMap` it replaces.
        #[test]
        fn behaves_as_a_btree_map(ops in proptest::collection::vec(op(), 0..200)) {
            let mut small: SmallMap<String, u32> = SmallMap::new();
            let mut btree: BTreeMap<String, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(small.insert(k.to_string(), v), btree.insert(k.to_string(), v)),
                    Op::Remove(k) => prop_assert_eq!(small.remove(k.to_string().as_str()), btree.remove(k.to_string().as_str())),
                    Op::Get(k) => {
                        prop_assert_eq!(small.get(k.to_string().as_str()), btree.get(k.to_string().as_str()));
                        prop_assert_eq!(small.contains_key(k.to_string().as_str()), btree.contains_key(k.to_string().as_str()));
                    }
                    Op::Bump(k) => {
                        if let Some(v) = small.get_mut(k.to_string().as_str()) { *v = v.wrapping_add(1); }
                        if let Some(v) = btree.get_mut(k.to_string().as_str()) { *v = v.wrapping_add(1); }
                    }
                }
                prop_assert!(small.iter().eq(btree.iter()));
                prop_assert!(small.keys().eq(btree.keys()));
                prop_assert!(small.values().eq(btree.values()));
            }
        }
    }

    #[test]
    fn serialises_as_the_btree_map_it_replaces() {
        let btree: BTreeMap<String, u32> = [("b".to_owned(), 2), ("a".to_owned(), 1)].into();
        let json = serde_json::to_string(&btree).unwrap();
        let small: SmallMap<String, u32> = serde_json::from_str(&json).unwrap();
        assert!(small.iter().eq(btree.iter()));
        assert_eq!(serde_json::to_string(&small).unwrap(), json);
    }

    #[test]
    fn a_set_remembers_what_was_inserted() {
        let mut set = SmallSet::new();
        assert!(set.insert("b".to_owned()));
        assert!(!set.insert("b".to_owned()));
        assert!(set.contains("b"));
        assert!(!set.contains("a"));
    }
}
