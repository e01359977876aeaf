//! [`SourceLimiter`]: how many connections one source may hold open at once, for the network
//! listeners (leg announcements, HEP over TCP). Sockets stay in their IO layers; this only
//! counts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Counts open connections per source and refuses one more past the cap. Cheap to clone (the
/// clones share the counts). Memory is bounded by the connections open: a source's entry goes
/// when its last connection does.
///
/// A source is an IPv4 address, or an IPv6 /64 network (one host is usually given a whole
/// /64, so counting addresses would not bound it); an IPv4-mapped IPv6 address is its IPv4
/// address.
///
/// ```
/// use listener_core::SourceLimiter;
/// let limiter = SourceLimiter::new(2);
/// let ip = "192.0.2.7".parse().unwrap();
/// let (a, b) = (limiter.try_acquire(ip), limiter.try_acquire(ip));
/// assert!(a.is_some() && b.is_some());
/// assert!(limiter.try_acquire(ip).is_none());
/// assert!(limiter.try_acquire("192.0.2.8".parse().unwrap()).is_some());
/// drop(a);
/// assert!(limiter.try_acquire(ip).is_some());
/// ```
#[derive(Debug, Clone)]
pub struct SourceLimiter {
    max_per_source: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open connection of a source; dropping it gives its place back.
#[derive(Debug)]
pub struct SourceGuard {
    source: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl SourceLimiter {
    /// At most `max_per_source` connections per source (at least one).
    pub fn new(max_per_source: usize) -> SourceLimiter {
        SourceLimiter { max_per_source: max_per_source.max(1), open: Arc::default() }
    }

    /// A place for one more connection from `peer`, or `None` when its source holds the most
    /// it may.
    pub fn try_acquire(&self, peer: IpAddr) -> Option<SourceGuard> {
        let source = source_of(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(source).or_insert(0);
        if *n >= self.max_per_source {
            return None;
        }
        *n += 1;
        Some(SourceGuard { source, open: self.open.clone() })
    }

    /// How many connections `peer`'s source holds now.
    pub fn open_from(&self, peer: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&source_of(peer)).copied().unwrap_or(0)
    }

    /// How many sources hold a connection now.
    pub fn sources(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// The source a peer address counts against.
pub fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn sources_are_v4_addresses_and_v6_networks() {
        assert_eq!(source_of(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        let limiter = SourceLimiter::new(1);
        let held = limiter.try_acquire(ip("2001:db8:1:2::1"));
        assert!(held.is_some());
        // Another address of the same /64 is the same source; another /64 is not.
        assert!(limiter.try_acquire(ip("2001:db8:1:2::ffff")).is_none());
        assert!(limiter.try_acquire(ip("2001:db8:1:3::1")).is_some());
        assert_eq!(limiter.open_from(ip("2001:db8:1:2::9")), 1);
        drop(held);
        // The entry goes with the last connection: memory follows what is open.
        assert_eq!((limiter.open_from(ip("2001:db8:1:2::9")), limiter.sources()), (0, 0));
    }
}
