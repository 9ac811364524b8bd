//! Dispatch policies: which ready worker is offered the next connection.
//!
//! `--policy` (or `policy` in the config file) picks one of four:
//!
//! - `rr`: round-robin over the ready workers in id order;
//! - `least-conn`: the worker with the fewest open connections, ties broken
//!   round-robin. A worker's open count is what dispatch handed it minus what
//!   it reported closed (`CLOSED=<n>`, see `docs/protocol.md`);
//! - `ip-hash`: the client's address picks the worker, by rendezvous (highest
//!   random weight) hashing over the ready workers' ids, so a client sticks to
//!   its worker and a worker leaving moves only its own clients;
//! - `none`: no dispatch at all. Every worker inherits the listening sockets
//!   and accepts by itself ([`crate::shared`]).
//!
//! The functions here only *order* the candidates; [`crate::dispatch`] offers
//! the connection to them in that order until one takes it. They are pure, so
//! the properties that matter (ties, stickiness, minimal remapping) are unit
//! tested without a worker in sight.

use std::fmt;
use std::net::IpAddr;

/// How connections are spread over workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// Round-robin over the ready workers.
    #[default]
    #[value(name = "rr")]
    RoundRobin,
    /// The worker with the fewest open connections; ties round-robin.
    LeastConn,
    /// The same client address goes to the same worker (sticky sessions).
    IpHash,
    /// Shared accept: workers inherit the sockets and accept themselves.
    None,
}

impl Policy {
    /// The name used on the command line, in the config file and in status.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "rr",
            Policy::LeastConn => "least-conn",
            Policy::IpHash => "ip-hash",
            Policy::None => "none",
        }
    }

    /// Whether it goes by the connections workers report closed, which they
    /// must then report at once (least-conn); the others only count them.
    pub fn goes_by_closes(self) -> bool {
        self == Policy::LeastConn
    }

    /// Whether the manager accepts and hands connections over (all but `none`).
    pub fn dispatches(self) -> bool {
        self != Policy::None
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Policy, String> {
        <Policy as clap::ValueEnum>::from_str(text, false).map_err(|_| {
            format!("unknown policy {text:?}: expected rr, least-conn, ip-hash or none")
        })
    }
}

/// The order in which the ready workers are offered a connection: indices
/// into the ring. Round-robin is computed on the fly, so the default policy
/// allocates nothing per connection.
#[derive(Debug)]
pub(crate) enum Order {
    /// `start, start + 1, …` modulo `len`, `len` of them.
    Cyclic {
        /// Where the round starts: the cursor.
        start: usize,
        /// How many workers there are.
        len: usize,
        /// How many have been visited.
        k: usize,
    },
    /// An explicit order.
    Listed(std::vec::IntoIter<usize>),
}

impl Order {
    /// Round-robin over `len` workers from `cursor` on.
    pub(crate) fn cyclic(cursor: usize, len: usize) -> Order {
        let start = if len == 0 { 0 } else { cursor % len };
        Order::Cyclic { start, len, k: 0 }
    }
}

impl Iterator for Order {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Order::Cyclic { start, len, k } => {
                if *k >= *len {
                    return None;
                }
                let at = (*start + *k) % *len;
                *k += 1;
                Some(at)
            }
            Order::Listed(list) => list.next(),
        }
    }
}

/// A ready worker as the policies see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Its slot id: the key of ip-hash, so a client returns to the same slot
    /// when its worker is restarted or replaced.
    pub id: u32,
    /// Connections it holds now (least-conn).
    pub open: u64,
}

/// The order in which to offer a connection from `client` (when known) to
/// `ring`, whose round-robin cursor is at `cursor`.
pub(crate) fn order(
    policy: Policy,
    ring: &[Candidate],
    cursor: usize,
    client: Option<IpAddr>,
) -> Order {
    let len = ring.len();
    let start = if len == 0 { 0 } else { cursor % len };
    match (policy, client) {
        (Policy::LeastConn, _) => {
            let mut listed: Vec<usize> = (0..len).collect();
            // Fewest open first; among equals, the first at or after the cursor.
            listed.sort_by_key(|&at| (ring[at].open, (at + len - start) % len));
            Order::Listed(listed.into_iter())
        }
        (Policy::IpHash, Some(client)) => {
            let key = client_key(client);
            let mut listed: Vec<usize> = (0..len).collect();
            // Highest weight first; a replacement shares its slot's id, and
            // then the older process (earlier in the ring) comes first.
            listed.sort_by_key(|&at| (std::cmp::Reverse(weight(key, ring[at].id)), at));
            Order::Listed(listed.into_iter())
        }
        // Round-robin, and ip-hash for a client without an address (a Unix
        // socket peer): there is nothing to be sticky to.
        _ => Order::cyclic(cursor, len),
    }
}

/// A client address as a 64-bit hash. IPv4-mapped IPv6 addresses (a dual-stack
/// socket's IPv4 clients) hash like the IPv4 address they are.
pub(crate) fn client_key(client: IpAddr) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let octets = match client.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    // FNV-1a over the bytes, then a full mix: stable across runs and builds,
    // unlike std's hasher, whose algorithm is not specified.
    for byte in octets {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

/// The rendezvous weight of worker slot `id` for the client hashed to `key`:
/// the client goes to the ready worker with the highest weight. Each pair is
/// weighed on its own, so a worker leaving or joining changes the choice only
/// for clients whose highest weight is that worker's.
pub(crate) fn weight(key: u64, id: u32) -> u64 {
    mix(key ^ mix(u64::from(id).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// The splitmix64 finalizer: every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ring(open: &[u64]) -> Vec<Candidate> {
        open.iter()
            .enumerate()
            .map(|(id, open)| Candidate {
                id: id as u32,
                open: *open,
            })
            .collect()
    }

    fn first(policy: Policy, ring: &[Candidate], cursor: usize, client: Option<IpAddr>) -> usize {
        order(policy, ring, cursor, client)
            .next()
            .expect("a candidate")
    }

    #[test]
    fn names_round_trip() {
        for policy in [
            Policy::RoundRobin,
            Policy::LeastConn,
            Policy::IpHash,
            Policy::None,
        ] {
            assert_eq!(policy.name().parse::<Policy>(), Ok(policy));
        }
        assert!("round-robin".parse::<Policy>().is_err());
        assert!("".parse::<Policy>().is_err());
    }

    #[test]
    fn round_robin_starts_at_the_cursor_and_visits_everyone_once() {
        let ring = ring(&[0, 0, 0]);
        let visited: Vec<usize> = order(Policy::RoundRobin, &ring, 4, None).collect();
        assert_eq!(visited, [1, 2, 0]);
        assert_eq!(order(Policy::RoundRobin, &[], 3, None).count(), 0);
    }

    #[test]
    fn least_conn_takes_the_idlest_and_breaks_ties_round_robin() {
        let busy = ring(&[5, 1, 3, 1]);
        let visited: Vec<usize> = order(Policy::LeastConn, &busy, 0, None).collect();
        assert_eq!(visited, [1, 3, 2, 0]);
        // Ties go round-robin from the cursor.
        let idle = ring(&[0, 0, 0]);
        let picks: Vec<usize> = (0..6)
            .map(|cursor| first(Policy::LeastConn, &idle, cursor, None))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(first(Policy::LeastConn, &busy, 2, None), 3);
    }

    #[test]
    fn ip_hash_is_sticky_and_spreads() {
        let ring = ring(&[0; 4]);
        let mut hits = [0; 4];
        for n in 0..4000u32 {
            let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            let chosen = first(Policy::IpHash, &ring, 0, Some(client));
            // The cursor and the load do not matter.
            assert_eq!(first(Policy::IpHash, &ring, 3, Some(client)), chosen);
            hits[chosen] += 1;
        }
        for count in hits {
            assert!((800..1200).contains(&count), "uneven spread: {hits:?}");
        }
    }

    #[test]
    fn a_worker_leaving_moves_only_its_own_clients() {
        let all = ring(&[0; 5]);
        let without_2: Vec<Candidate> = all.iter().copied().filter(|c| c.id != 2).collect();
        let mut moved = 0;
        for n in 0..2000u32 {
            let client = Some(IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + n)));
            let before = all[first(Policy::IpHash, &all, 0, client)].id;
            let after = without_2[first(Policy::IpHash, &without_2, 0, client)].id;
            if before == 2 {
                moved += 1;
                assert_ne!(after, 2);
            } else {
                assert_eq!(before, after, "a client of worker {before} moved");
            }
        }
        assert!(moved > 200, "worker 2 had only {moved} clients");
    }

    #[test]
    fn mapped_ipv4_hashes_like_ipv4() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), client_key(mapped));
    }

    #[test]
    fn ip_hash_without_an_address_is_round_robin() {
        let ring = ring(&[0, 0, 0]);
        let visited: Vec<usize> = order(Policy::IpHash, &ring, 2, None).collect();
        assert_eq!(visited, [2, 0, 1]);
    }
}
