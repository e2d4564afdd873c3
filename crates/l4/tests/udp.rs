//! UDP frontends end to end on loopback: per-client sessions, replies from the frontend
//! address, choice and affinity per session, idle expiry, backend removal and frontend
//! removal. Each test has its own frontend IP (127.11.<test>.1).

mod common;

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use common::*;
use pier_l4::{Choice, Frontend, Proxy, ProxyConfig};

const WAIT: Duration = Duration::from_secs(2);

fn proxy_with_idle(idle: Duration) -> Proxy {
    Proxy::with_config(ProxyConfig { udp_idle_timeout: idle, ..ProxyConfig::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_for_several_clients_from_the_frontend_address() {
    let backend = udp_who_am_i().await;
    let frontend = free_port(ip(11, 1, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([udp_frontend(frontend, &[backend], Choice::Random)]).is_empty());

    let mut clients = Vec::new();
    for i in 1..=3u8 {
        // A connected client socket only accepts datagrams from `frontend`: a reply sent
        // from any other address would never be received.
        clients.push(udp_client(ip(21, 1, i), frontend).await);
    }
    for round in 0..3 {
        for (i, client) in clients.iter().enumerate() {
            let payload = format!("client {i} round {round}");
            let (port, echoed) = udp_ask(client, payload.as_bytes(), WAIT).await.expect("reply");
            assert_eq!(port, backend.port());
            assert_eq!(echoed, payload.as_bytes(), "each client gets its own reply");
        }
    }
    // A 2000-byte datagram passes unchanged (upstream's "large requests" check), and so
    // does one near the IPv4 maximum.
    for size in [2000usize, 60_000] {
        let big: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let (_, echoed) = udp_ask(&clients[0], &big, WAIT).await.expect("large reply");
        assert_eq!(echoed, big);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_reach_every_backend() {
    let backends = [udp_who_am_i().await, udp_who_am_i().await, udp_who_am_i().await];
    let all: HashSet<u16> = backends.iter().map(|b| b.port()).collect();
    let frontend = free_port(ip(11, 2, 1));
    let mut proxy = Proxy::new();

    assert!(proxy.sync([udp_frontend(frontend, &backends, Choice::RoundRobin)]).is_empty());
    let mut order = Vec::new();
    for _ in 0..6 {
        // Each new client socket is a new session (new source port).
        let client = udp_client(ip(21, 2, 1), frontend).await;
        order.push(udp_ask(&client, b"hi", WAIT).await.expect("reply").0);
    }
    let ports: Vec<u16> = backends.iter().map(|b| b.port()).collect();
    assert_eq!(order, [ports.clone(), ports].concat(), "round-robin per session");

    assert!(proxy.sync([udp_frontend(frontend, &backends, Choice::Random)]).is_empty());
    let mut reached = HashSet::new();
    for _ in 0..60 {
        let client = udp_client(ip(21, 2, 2), frontend).await;
        reached.insert(udp_ask(&client, b"hi", WAIT).await.expect("reply").0);
    }
    assert_eq!(reached, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sticks_and_client_ip_affinity_spans_sessions() {
    let backends = [udp_who_am_i().await, udp_who_am_i().await, udp_who_am_i().await];
    let frontend = free_port(ip(11, 3, 1));
    let mut proxy = Proxy::new();

    // Within one session (same client address) every datagram goes to one backend, even
    // under round-robin.
    assert!(proxy.sync([udp_frontend(frontend, &backends, Choice::RoundRobin)]).is_empty());
    let client = udp_client(ip(21, 3, 1), frontend).await;
    let mut within = HashSet::new();
    for _ in 0..10 {
        within.insert(udp_ask(&client, b"x", WAIT).await.expect("reply").0);
    }
    assert_eq!(within.len(), 1, "one session, one backend: {within:?}");

    // ClientIP affinity: new sessions (new source ports) from one IP share the backend,
    // while another IP gets the next round-robin choice.
    let sticky = Frontend {
        affinity: Some(Duration::from_secs(10_800)),
        ..udp_frontend(frontend, &backends, Choice::RoundRobin)
    };
    assert!(proxy.sync([sticky]).is_empty());
    let mut pinned = HashSet::new();
    for _ in 0..15 {
        let client = udp_client(ip(21, 3, 2), frontend).await;
        pinned.insert(udp_ask(&client, b"x", WAIT).await.expect("reply").0);
    }
    assert_eq!(pinned.len(), 1, "sessions of one client IP: {pinned:?}");
    let other = udp_client(ip(21, 3, 3), frontend).await;
    let elsewhere = udp_ask(&other, b"x", WAIT).await.expect("reply").0;
    assert!(!pinned.contains(&elsewhere), "another client IP takes the next backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_active_ones_do_not() {
    let backends = [udp_who_am_i().await, udp_who_am_i().await];
    let frontend = free_port(ip(11, 4, 1));
    // Wide margins: the machine is shared, and a stalled step must not look like expiry.
    let idle = Duration::from_millis(800);
    let mut proxy = proxy_with_idle(idle);
    assert!(proxy.sync([udp_frontend(frontend, &backends, Choice::RoundRobin)]).is_empty());

    let client = udp_client(ip(21, 4, 1), frontend).await;
    let first = udp_ask(&client, b"a", WAIT).await.expect("reply").0;
    assert_eq!(first, backends[0].port());
    // Traffic every 200 ms keeps the session (and its backend) well past one idle timeout.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(udp_ask(&client, b"a", WAIT).await.expect("reply").0, first, "active session kept");
    }
    // Silence past the timeout: the next datagram opens a new session, and round-robin
    // sends it to the other backend.
    tokio::time::sleep(idle * 2).await;
    assert_eq!(udp_ask(&client, b"a", WAIT).await.expect("reply").0, backends[1].port(), "session expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_loses_its_sessions() {
    let backends = [udp_who_am_i().await, udp_who_am_i().await];
    let frontend = free_port(ip(11, 5, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([udp_frontend(frontend, &backends, Choice::RoundRobin)]).is_empty());

    let client = udp_client(ip(21, 5, 1), frontend).await;
    assert_eq!(udp_ask(&client, b"a", WAIT).await.expect("reply").0, backends[0].port());
    assert!(proxy.sync([udp_frontend(frontend, &backends[1..], Choice::RoundRobin)]).is_empty());
    // Same client address, so without the flush it would stay on the removed backend.
    assert_eq!(udp_ask(&client, b"a", WAIT).await.expect("reply").0, backends[1].port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backends_rejects_and_recovers() {
    let backend = udp_who_am_i().await;
    let frontend = free_port(ip(11, 6, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([udp_frontend(frontend, &[], Choice::Random)]).is_empty());

    // The frontend is not bound, so the kernel answers port-unreachable and a connected
    // client sees "connection refused" (upstream rejects with ICMP too).
    let client = udp_client(ip(21, 6, 1), frontend).await;
    let outcome = udp_ask(&client, b"anyone?", WAIT).await;
    assert!(matches!(&outcome, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused), "{outcome:?}");

    assert!(proxy.sync([udp_frontend(frontend, &[backend], Choice::Random)]).is_empty());
    let client = udp_client(ip(21, 6, 2), frontend).await;
    assert_eq!(udp_ask(&client, b"now?", WAIT).await.expect("reply").0, backend.port());

    assert!(proxy.sync([udp_frontend(frontend, &[], Choice::Random)]).is_empty());
    let outcome = udp_ask(&client, b"and now?", WAIT).await;
    assert!(outcome.is_err(), "no reply without backends: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_ends_the_session_and_the_client_moves_on() {
    let live = udp_who_am_i().await;
    let dead = dead_backend();
    let frontend = free_port(ip(11, 7, 1));
    let mut proxy = Proxy::new();
    let sticky = Frontend {
        affinity: Some(Duration::from_secs(10_800)),
        ..udp_frontend(frontend, &[dead, live], Choice::RoundRobin)
    };
    assert!(proxy.sync([sticky]).is_empty());

    // The first session goes to the dead backend (round-robin starts there) and its
    // datagram is lost; retries from the same client must reach the live one.
    let client = udp_client(ip(21, 7, 1), frontend).await;
    let mut answered = None;
    for _ in 0..5 {
        if let Ok((port, _)) = udp_ask(&client, b"x", Duration::from_millis(300)).await {
            answered = Some(port);
            break;
        }
    }
    assert_eq!(answered, Some(live.port()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_frontend_stops_answering_while_others_keep_working() {
    let backend = udp_who_am_i().await;
    let gone = free_port(ip(11, 8, 1));
    let kept = free_port(ip(11, 8, 2));
    let mut proxy = Proxy::new();
    let both = [udp_frontend(gone, &[backend], Choice::Random), udp_frontend(kept, &[backend], Choice::Random)];
    assert!(proxy.sync(both.clone()).is_empty());
    let to_gone = udp_client(ip(21, 8, 1), gone).await;
    let to_kept = udp_client(ip(21, 8, 1), kept).await;
    udp_ask(&to_gone, b"1", WAIT).await.expect("gone answers before removal");
    udp_ask(&to_kept, b"1", WAIT).await.expect("kept answers");

    assert!(proxy.sync([both[1].clone()]).is_empty());
    assert!(udp_ask(&to_gone, b"2", Duration::from_millis(500)).await.is_err(), "removed frontend must not answer");
    let fresh = udp_client(ip(21, 8, 2), gone).await;
    assert!(udp_ask(&fresh, b"2", Duration::from_millis(500)).await.is_err(), "nor to a new client");
    assert_eq!(udp_ask(&to_kept, b"2", WAIT).await.expect("kept still answers").0, backend.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_on_the_same_port_are_independent() {
    let udp_backend = udp_who_am_i().await;
    let tcp_backend = tcp_who_am_i().await;
    let frontend = free_port(ip(11, 9, 1));
    let mut proxy = Proxy::new();
    let tcp = tcp_frontend(frontend, &[tcp_backend], Choice::Random);
    let udp = udp_frontend(frontend, &[udp_backend], Choice::Random);
    assert!(proxy.sync([tcp.clone(), udp.clone()]).is_empty());
    let client = udp_client(ip(21, 9, 1), frontend).await;
    assert_eq!(udp_ask(&client, b"u", WAIT).await.expect("udp").0, udp_backend.port());
    assert_eq!(who_answers(ip(21, 9, 1), frontend).await, tcp_backend.port());

    // Dropping the TCP port leaves UDP alone.
    assert!(proxy.sync([udp]).is_empty());
    assert!(connect_from(ip(21, 9, 1), frontend).await.is_err());
    assert_eq!(udp_ask(&client, b"u", WAIT).await.expect("udp").0, udp_backend.port());
}
