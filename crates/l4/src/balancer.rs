//! Backend choice for one frontend: random or round-robin, ClientIP affinity with an idle
//! timeout, and retries that skip backends already tried. Pure: no IO, no clock and no
//! global random source (the caller passes `now` and the generator), so it is tested with
//! property tests. It knows nothing about sockets or about which protocol it serves.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::Choice;

/// The mutable selection state of one frontend. Backends are replaced in place by
/// [`Balancer::set`]; connections already made never consult it again, which is what
/// lets a removed backend drain.
#[derive(Debug)]
pub(crate) struct Balancer {
    backends: Vec<SocketAddr>,
    choice: Choice,
    /// Index of the next round-robin pick, always `< backends.len()` when non-empty.
    cursor: usize,
    /// ClientIP affinity: the pins of the frontend's affinity scope, shared with every other
    /// frontend of that scope (one Service port's cluster IP, node port, external and
    /// LoadBalancer IPs pin a client to the same endpoint, as upstream's per-endpoint
    /// affinity sets do).
    affinity: Option<SharedPins>,
}

/// Pins shared by the frontends of one affinity scope.
pub(crate) type SharedPins = Arc<Mutex<Pins>>;

/// ClientIP affinity state: which backend each recent client is pinned to.
#[derive(Debug)]
pub(crate) struct Pins {
    timeout: Duration,
    map: HashMap<IpAddr, Pin>,
    /// Expired pins are swept at most once per `timeout`, so the map stays bounded by the
    /// clients seen in the last two timeouts without a timer task.
    last_sweep: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Pin {
    backend: SocketAddr,
    last_used: Instant,
}

impl Pin {
    fn alive(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.last_used) < timeout
    }
}

impl Pins {
    pub(crate) fn shared(timeout: Duration, now: Instant) -> SharedPins {
        Arc::new(Mutex::new(Pins { timeout, map: HashMap::new(), last_sweep: now }))
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Forgets every pin to a backend outside `live` (the union of the scope's backend
    /// sets): a pin must not outlive its endpoint, as upstream deletes an endpoint's affinity
    /// set with the endpoint.
    pub(crate) fn retain_backends(&mut self, live: &HashSet<SocketAddr>) {
        self.map.retain(|_, pin| live.contains(&pin.backend));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

pub(crate) fn lock(pins: &SharedPins) -> MutexGuard<'_, Pins> {
    // The map is consistent after any panic that could happen while it is held.
    pins.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Balancer {
    pub(crate) fn new() -> Self {
        Balancer { backends: Vec::new(), choice: Choice::Random, cursor: 0, affinity: None }
    }

    pub(crate) fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    pub(crate) fn contains(&self, backend: SocketAddr) -> bool {
        self.backends.contains(&backend)
    }

    /// Replaces the configuration. Returns whether the backend set changed (order is
    /// ignored), which is what tells UDP sessions to re-check where they point.
    pub(crate) fn set(&mut self, backends: &[SocketAddr], choice: Choice, affinity: Option<SharedPins>) -> bool {
        let mut deduped = Vec::with_capacity(backends.len());
        for backend in backends {
            if !deduped.contains(backend) {
                deduped.push(*backend);
            }
        }
        let changed = {
            let old: HashSet<&SocketAddr> = self.backends.iter().collect();
            let new: HashSet<&SocketAddr> = deduped.iter().collect();
            old != new
        };
        self.backends = deduped;
        self.choice = choice;
        self.cursor = if self.backends.is_empty() { 0 } else { self.cursor % self.backends.len() };
        self.affinity = affinity;
        changed
    }

    /// Chooses a backend for a new connection or session from `client`, never one in
    /// `exclude` (backends that already failed for this connection). With affinity, a live
    /// pin to one of this frontend's backends wins and is refreshed; otherwise the new
    /// choice becomes the client's pin.
    pub(crate) fn pick<R: Rng + ?Sized>(
        &mut self,
        client: IpAddr,
        now: Instant,
        exclude: &[SocketAddr],
        rng: &mut R,
    ) -> Option<SocketAddr> {
        if let Some(pins) = &self.affinity {
            let mut pins = lock(pins);
            let timeout = pins.timeout;
            if now.saturating_duration_since(pins.last_sweep) >= timeout {
                pins.map.retain(|_, pin| pin.alive(now, timeout));
                pins.last_sweep = now;
            }
            if let Some(pin) = pins.map.get_mut(&client)
                && pin.alive(now, timeout)
                && !exclude.contains(&pin.backend)
                && self.backends.contains(&pin.backend)
            {
                pin.last_used = now;
                return Some(pin.backend);
            }
        }
        let chosen = self.choose(exclude, rng)?;
        if let Some(pins) = &self.affinity {
            lock(pins).map.insert(client, Pin { backend: chosen, last_used: now });
        }
        Some(chosen)
    }

    /// Drops `client`'s pin if it points at `backend` (which just proved unreachable).
    pub(crate) fn unpin(&mut self, client: IpAddr, backend: SocketAddr) {
        if let Some(pins) = &self.affinity {
            let mut pins = lock(pins);
            if pins.map.get(&client).is_some_and(|pin| pin.backend == backend) {
                pins.map.remove(&client);
            }
        }
    }

    fn choose<R: Rng + ?Sized>(&mut self, exclude: &[SocketAddr], rng: &mut R) -> Option<SocketAddr> {
        let len = self.backends.len();
        if len == 0 {
            return None;
        }
        match self.choice {
            Choice::RoundRobin => {
                for _ in 0..len {
                    let candidate = self.backends[self.cursor];
                    self.cursor = (self.cursor + 1) % len;
                    if !exclude.contains(&candidate) {
                        return Some(candidate);
                    }
                }
                None
            }
            Choice::Random if exclude.is_empty() => Some(self.backends[rng.random_range(0..len)]),
            Choice::Random => {
                let allowed = self.backends.iter().filter(|b| !exclude.contains(b)).count();
                if allowed == 0 {
                    return None;
                }
                let nth = rng.random_range(0..allowed);
                self.backends.iter().filter(|b| !exclude.contains(b)).nth(nth).copied()
            }
        }
    }

    #[cfg(test)]
    fn pinned(&self, client: IpAddr) -> Option<SocketAddr> {
        self.affinity.as_ref().and_then(|a| lock(a).map.get(&client).map(|p| p.backend))
    }

    #[cfg(test)]
    fn pin_count(&self) -> usize {
        self.affinity.as_ref().map_or(0, |a| lock(a).map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::net::Ipv4Addr;

    fn backend(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8000 + u16::from(i)))
    }

    fn client(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))
    }

    fn balancer(n: u8, choice: Choice, affinity: Option<Duration>, now: Instant) -> Balancer {
        let mut b = Balancer::new();
        let backends: Vec<_> = (0..n).map(backend).collect();
        b.set(&backends, choice, affinity.map(|t| Pins::shared(t, now)));
        b
    }

    #[test]
    fn round_robin_cycles_in_order() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = balancer(3, Choice::RoundRobin, None, now);
        let picks: Vec<_> = (0..6).map(|_| b.pick(client(1), now, &[], &mut rng)).collect();
        let expected: Vec<_> = [0, 1, 2, 0, 1, 2].iter().map(|i| Some(backend(*i))).collect();
        assert_eq!(picks, expected);
    }

    #[test]
    fn empty_set_picks_nothing() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        for choice in [Choice::Random, Choice::RoundRobin] {
            let mut b = balancer(0, choice, Some(Duration::from_secs(10)), now);
            assert_eq!(b.pick(client(1), now, &[], &mut rng), None);
        }
    }

    #[test]
    fn affinity_pins_then_expires_after_idle_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = balancer(3, Choice::RoundRobin, Some(timeout), t0);
        let first = b.pick(client(1), t0, &[], &mut rng);
        assert_eq!(first, Some(backend(0)));
        // Refreshed by each use: 9 s steps keep it alive well past one timeout in total.
        for step in 1..=4 {
            let now = t0 + Duration::from_secs(9 * step);
            assert_eq!(b.pick(client(1), now, &[], &mut rng), first);
        }
        let later = t0 + Duration::from_secs(36 + 10);
        assert_eq!(b.pick(client(1), later, &[], &mut rng), Some(backend(1)));
    }

    #[test]
    fn removing_the_pinned_backend_repins() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = balancer(3, Choice::RoundRobin, Some(Duration::from_secs(100)), now);
        assert_eq!(b.pick(client(1), now, &[], &mut rng), Some(backend(0)));
        let pins = b.affinity.clone();
        assert!(b.set(&[backend(1), backend(2)], Choice::RoundRobin, pins));
        let again = b.pick(client(1), now, &[], &mut rng);
        assert!(again == Some(backend(1)) || again == Some(backend(2)));
        assert_eq!(b.pinned(client(1)), again);
    }

    #[test]
    fn failed_pin_is_replaced_by_the_retry() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = balancer(2, Choice::RoundRobin, Some(Duration::from_secs(100)), now);
        assert_eq!(b.pick(client(1), now, &[], &mut rng), Some(backend(0)));
        assert_eq!(b.pick(client(1), now, &[backend(0)], &mut rng), Some(backend(1)));
        assert_eq!(b.pick(client(1), now, &[], &mut rng), Some(backend(1)));
    }

    #[test]
    fn reordering_is_not_a_change_and_dropping_affinity_forgets_pins() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = balancer(2, Choice::Random, Some(Duration::from_secs(100)), now);
        b.pick(client(1), now, &[], &mut rng);
        let pins = b.affinity.clone();
        assert!(!b.set(&[backend(1), backend(0), backend(1)], Choice::Random, pins));
        assert_eq!(b.backends(), &[backend(1), backend(0)]);
        assert_eq!(b.pin_count(), 1);
        b.set(&[backend(1), backend(0)], Choice::Random, None);
        assert_eq!(b.pin_count(), 0);
    }

    #[test]
    fn frontends_of_one_scope_share_their_pins() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let pins = Pins::shared(Duration::from_secs(100), now);
        let all: Vec<_> = (0..4).map(backend).collect();
        let (mut cluster_ip, mut node_port) = (Balancer::new(), Balancer::new());
        cluster_ip.set(&all, Choice::Random, Some(pins.clone()));
        node_port.set(&all, Choice::Random, Some(pins.clone()));
        for c in 1..=20 {
            let first = cluster_ip.pick(client(c), now, &[], &mut rng);
            for _ in 0..5 {
                assert_eq!(node_port.pick(client(c), now, &[], &mut rng), first);
                assert_eq!(cluster_ip.pick(client(c), now, &[], &mut rng), first);
            }
        }
        // A frontend with fewer backends (externalTrafficPolicy: Local) never follows a pin
        // to a backend it does not have: it chooses among its own and re-pins.
        let mut local = Balancer::new();
        local.set(&[backend(3)], Choice::Random, Some(pins.clone()));
        for c in 1..=20 {
            assert_eq!(local.pick(client(c), now, &[], &mut rng), Some(backend(3)));
            assert_eq!(cluster_ip.pick(client(c), now, &[], &mut rng), Some(backend(3)));
        }
        // Pins to backends that left every frontend of the scope are forgotten.
        lock(&pins).retain_backends(&[backend(0)].into_iter().collect());
        assert_eq!(lock(&pins).len(), 0);
    }

    #[test]
    fn expired_pins_are_swept() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = balancer(2, Choice::Random, Some(Duration::from_secs(1)), t0);
        for i in 1..=50 {
            b.pick(client(i), t0, &[], &mut rng);
        }
        assert_eq!(b.pin_count(), 50);
        b.pick(client(200), t0 + Duration::from_secs(2), &[], &mut rng);
        assert_eq!(b.pin_count(), 1);
    }

    fn choice() -> impl Strategy<Value = Choice> {
        prop_oneof![Just(Choice::Random), Just(Choice::RoundRobin)]
    }

    proptest! {
        #[test]
        fn picks_are_members_and_never_excluded(
            n in 0u8..8,
            choice in choice(),
            sticky in any::<bool>(),
            excluded in proptest::collection::vec(0u8..8, 0..8),
            clients in proptest::collection::vec(1u8..6, 1..40),
            seed in any::<u64>(),
        ) {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(seed);
            let affinity = sticky.then(|| Duration::from_secs(60));
            let mut b = balancer(n, choice, affinity, now);
            let exclude: Vec<_> = excluded.iter().map(|i| backend(*i)).collect();
            let allowed = (0..n).map(backend).filter(|b| !exclude.contains(b)).count();
            for c in clients {
                let picked = b.pick(client(c), now, &exclude, &mut rng);
                match picked {
                    Some(p) => {
                        prop_assert!(b.contains(p));
                        prop_assert!(!exclude.contains(&p));
                    }
                    None => prop_assert_eq!(allowed, 0),
                }
            }
        }

        #[test]
        fn round_robin_visits_every_backend_in_one_cycle(n in 1u8..16, skip in 0usize..16, seed in any::<u64>()) {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = balancer(n, Choice::RoundRobin, None, now);
            for _ in 0..skip {
                b.pick(client(1), now, &[], &mut rng);
            }
            let seen: HashSet<_> = (0..n).filter_map(|_| b.pick(client(1), now, &[], &mut rng)).collect();
            prop_assert_eq!(seen.len(), usize::from(n));
        }

        #[test]
        fn affinity_gives_one_backend_per_client_while_the_set_is_stable(
            n in 1u8..8,
            choice in choice(),
            clients in proptest::collection::vec(1u8..6, 1..60),
            seed in any::<u64>(),
        ) {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = balancer(n, choice, Some(Duration::from_secs(10_800)), now);
            let mut first: HashMap<u8, SocketAddr> = HashMap::new();
            for c in clients {
                let picked = b.pick(client(c), now, &[], &mut rng);
                prop_assert!(picked.is_some());
                if let Some(p) = picked {
                    prop_assert_eq!(*first.entry(c).or_insert(p), p);
                }
            }
        }

        #[test]
        fn updates_keep_the_cursor_in_range(
            sizes in proptest::collection::vec(0u8..8, 1..20),
            seed in any::<u64>(),
        ) {
            let now = Instant::now();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Balancer::new();
            for n in sizes {
                let backends: Vec<_> = (0..n).map(backend).collect();
                b.set(&backends, Choice::RoundRobin, None);
                let picked = b.pick(client(1), now, &[], &mut rng);
                prop_assert_eq!(picked.is_some(), n > 0);
            }
        }
    }
}
