//! A growing Bloom filter over the dedup keys in the index levels, so the writer asks the
//! levels only about keys they may hold: a new delivery's key almost never is there.
//!
//! Filters are added as keys arrive (each twice the size of the last) rather than sized up
//! front, at 12 bits per key and 8 probes: about 0.3 % false positives per filter.

/// Bits per key a filter is sized for.
const BITS_PER_KEY: u64 = 12;
/// Probes per key (double hashing of the 64-bit key).
const PROBES: u64 = 8;
/// Keys of the first filter.
const FIRST_KEYS: u64 = 1 << 16;

#[derive(Debug)]
struct Filter {
    bits: Vec<u64>,
    keys: u64,
    capacity: u64,
}

impl Filter {
    fn new(capacity: u64) -> Self {
        let words = (capacity * BITS_PER_KEY).div_ceil(64).max(1);
        Self {
            bits: vec![0; usize::try_from(words).unwrap_or(usize::MAX)],
            keys: 0,
            capacity,
        }
    }

    fn probes(&self, key: i64) -> impl Iterator<Item = (usize, u64)> {
        // The key is an HMAC prefix (uniform); mix it anyway, as a rebuilt one may not be.
        let h = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (h1, h2) = (h, h.rotate_left(32) | 1);
        let nbits = self.bits.len() as u64 * 64;
        (0..PROBES).map(move |i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % nbits;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    fn insert(&mut self, key: i64) {
        let probes: Vec<_> = self.probes(key).collect();
        for (word, mask) in probes {
            self.bits[word] |= mask;
        }
        self.keys += 1;
    }

    fn may_hold(&self, key: i64) -> bool {
        self.probes(key)
            .all(|(word, mask)| self.bits[word] & mask != 0)
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Bloom {
    filters: Vec<Filter>,
}

impl Bloom {
    pub(crate) fn insert(&mut self, key: i64) {
        let full = self.filters.last().is_none_or(|f| f.keys >= f.capacity);
        if full {
            let capacity = self
                .filters
                .last()
                .map_or(FIRST_KEYS, |f| f.capacity.saturating_mul(2));
            self.filters.push(Filter::new(capacity));
        }
        if let Some(f) = self.filters.last_mut() {
            f.insert(key);
        }
    }

    /// False: the key was never inserted. True: it may have been.
    pub(crate) fn may_hold(&self, key: i64) -> bool {
        self.filters.iter().any(|f| f.may_hold(key))
    }

    pub(crate) fn keys(&self) -> u64 {
        self.filters.iter().map(|f| f.keys).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_key_it_was_given_and_few_others() {
        let mut bloom = Bloom::default();
        let key = |i: u64| i.wrapping_mul(0xD6E8_FEB8_6659_FD93) as i64;
        // More than the first filter, so the growth path is used.
        for i in 0..200_000u64 {
            bloom.insert(key(i));
        }
        assert_eq!(bloom.keys(), 200_000);
        assert!(bloom.filters.len() >= 2, "it grew");
        assert!((0..200_000u64).all(|i| bloom.may_hold(key(i))));
        let false_positives = (1_000_000..1_100_000u64)
            .filter(|i| bloom.may_hold(key(*i)))
            .count();
        // Three filters at about 0.3 % each: well under 2 %.
        assert!(false_positives < 2_000, "{false_positives} of 100 000");
    }
}
