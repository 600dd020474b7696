//! Token buckets: per source, so one noisy sender cannot crowd out the others, and per client
//! address for rejected traffic, so a flood of forgeries is answered cheaply without touching
//! any real sender's budget.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// A token bucket refilled continuously at `per_second`, holding at most `burst` tokens.
#[derive(Debug)]
pub struct TokenBucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Self::new_at(limit, Instant::now())
    }

    /// A full bucket whose refill clock starts at `now`.
    pub fn new_at(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            state: Mutex::new((f64::from(limit.burst), now)),
        }
    }

    /// Take one token at `now`, or say how long until one is available.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update; the numbers are
        // still usable.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *guard;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - *tokens) / self.limit.per_second,
            ))
        }
    }
}

/// Per client address, a token bucket of *rejected* requests, in a table of at most
/// `capacity` addresses: when it is full, the address seen least recently is forgotten (it
/// starts again with a full bucket). A flood from many addresses therefore costs a fixed amount
/// of memory, and one from a single address is refused after its burst.
#[derive(Debug)]
pub struct ClientBuckets {
    limit: RateLimit,
    capacity: usize,
    table: Mutex<ClientTable>,
}

/// The buckets, and their addresses ordered by last use (for eviction in O(log n)).
#[derive(Debug, Default)]
struct ClientTable {
    /// Address → (last-use stamp, bucket state).
    buckets: HashMap<IpAddr, (u64, TokenBucket)>,
    /// Last-use stamp → address; the first entry is the least recently used.
    by_use: BTreeMap<u64, IpAddr>,
    next_stamp: u64,
}

impl ClientBuckets {
    /// An empty table holding at most `capacity` addresses (at least one).
    pub fn new(limit: RateLimit, capacity: usize) -> Self {
        Self {
            limit,
            capacity: capacity.max(1),
            table: Mutex::default(),
        }
    }

    /// Charge one rejected request of `client` at `now`; `Err` with the wait when its bucket is
    /// empty.
    pub fn try_take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = &mut *guard;
        let stamp = table.next_stamp;
        table.next_stamp += 1;
        if let Some((used, _)) = table.buckets.get(&client) {
            table.by_use.remove(used);
        } else if table.buckets.len() >= self.capacity {
            if let Some((_, oldest)) = table.by_use.pop_first() {
                table.buckets.remove(&oldest);
            }
        }
        table.by_use.insert(stamp, client);
        let (used, bucket) = table
            .buckets
            .entry(client)
            .or_insert_with(|| (stamp, TokenBucket::new_at(self.limit, now)));
        *used = stamp;
        bucket.try_take(now)
    }

    /// How many addresses are tracked now.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .buckets
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_is_refused_after_its_burst_without_affecting_another() {
        let buckets = ClientBuckets::new(
            RateLimit {
                per_second: 1.0,
                burst: 2,
            },
            16,
        );
        let t0 = Instant::now();
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("address"),
            "192.0.2.2".parse().expect("address"),
        );
        assert!(buckets.try_take(a, t0).is_ok());
        assert!(buckets.try_take(a, t0).is_ok());
        assert!(buckets.try_take(a, t0).is_err());
        assert!(buckets.try_take(b, t0).is_ok());
        assert!(buckets.try_take(a, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_flood_from_many_addresses_keeps_the_table_at_its_capacity_and_forgets_the_oldest() {
        let buckets = ClientBuckets::new(
            RateLimit {
                per_second: 0.001,
                burst: 1,
            },
            100,
        );
        let t0 = Instant::now();
        let first: IpAddr = "198.51.100.1".parse().expect("address");
        assert!(buckets.try_take(first, t0).is_ok());
        assert!(buckets.try_take(first, t0).is_err());
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = buckets.try_take(ip, t0);
            assert!(buckets.tracked() <= 100);
        }
        assert_eq!(buckets.tracked(), 100);
        // The first address was evicted long ago, so it starts again with a full bucket.
        assert!(buckets.try_take(first, t0).is_ok());
    }

    #[test]
    fn a_recently_used_address_is_not_the_one_evicted() {
        let buckets = ClientBuckets::new(
            RateLimit {
                per_second: 0.001,
                burst: 1,
            },
            2,
        );
        let t0 = Instant::now();
        let ips: Vec<IpAddr> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .iter()
            .map(|s| s.parse().expect("address"))
            .collect();
        assert!(buckets.try_take(ips[0], t0).is_ok());
        assert!(buckets.try_take(ips[1], t0).is_ok());
        // Touch the first again: the second is now the least recently used.
        assert!(buckets.try_take(ips[0], t0).is_err());
        assert!(buckets.try_take(ips[2], t0).is_ok());
        assert!(
            buckets.try_take(ips[0], t0).is_err(),
            "still tracked, still empty"
        );
        assert!(
            buckets.try_take(ips[1], t0).is_ok(),
            "forgotten, full again"
        );
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let bucket = TokenBucket::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(bucket.try_take(t0).is_ok());
        }
        let wait = bucket.try_take(t0).expect_err("bucket should be empty");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(bucket.try_take(t0 + Duration::from_millis(500)).is_ok());
        assert!(bucket.try_take(t0 + Duration::from_millis(500)).is_err());
    }
}
