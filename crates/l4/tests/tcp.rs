//! TCP frontends end to end on loopback: the real proxy between test clients bound to
//! chosen 127/8 addresses and who-am-I backends on 127.0.0.1. Each test has its own
//! frontend IP (127.10.<test>.1) so tests run in parallel without sharing state.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use common::*;
use pier_l4::{Choice, Frontend, Protocol, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Refused at connect time, as upstream rejects a Service without endpoints: not a
/// connection that is accepted and then reset, and not a timeout.
fn assert_refused_at_once(result: io::Result<tokio::net::TcpStream>, started: Instant) {
    let elapsed = started.elapsed();
    let err = result.expect_err("connection must be refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "refused with {err:?}");
    assert!(elapsed < Duration::from_millis(200), "refusal took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_reaches_every_backend_in_turn() {
    let backends = [tcp_who_am_i().await, tcp_who_am_i().await, tcp_who_am_i().await];
    let frontend = free_port(ip(10, 1, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([tcp_frontend(frontend, &backends, Choice::RoundRobin)]).is_empty());

    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(who_answers(ip(0, 0, 1), frontend).await);
    }
    let ports: Vec<u16> = backends.iter().map(|b| b.port()).collect();
    let expected: Vec<u16> = ports.iter().chain(ports.iter()).copied().collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reaches_every_backend() {
    let backends = [tcp_who_am_i().await, tcp_who_am_i().await, tcp_who_am_i().await];
    let frontend = free_port(ip(10, 2, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([tcp_frontend(frontend, &backends, Choice::Random)]).is_empty());

    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    // Missing one of 3 backends in 60 uniform picks has probability 3·(2/3)^60 ≈ 1e-10.
    for _ in 0..60 {
        *counts.entry(who_answers(ip(0, 0, 1), frontend).await).or_default() += 1;
    }
    let reached: HashSet<u16> = counts.keys().copied().collect();
    let all: HashSet<u16> = backends.iter().map(|b| b.port()).collect();
    assert_eq!(reached, all, "distribution {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_pins_each_client() {
    let backends = [tcp_who_am_i().await, tcp_who_am_i().await, tcp_who_am_i().await];
    let frontend = free_port(ip(10, 3, 1));
    let mut proxy = Proxy::new();
    let sticky = Frontend {
        affinity: Some(Duration::from_secs(10_800)),
        ..tcp_frontend(frontend, &backends, Choice::RoundRobin)
    };
    assert!(proxy.sync([sticky]).is_empty());

    // Round-robin underneath: without the pin, consecutive connections would rotate.
    let mut per_client: BTreeMap<u8, HashSet<u16>> = BTreeMap::new();
    for round in 0..15 {
        for client in [11u8, 12, 13] {
            let port = who_answers(ip(20, 3, client), frontend).await;
            per_client.entry(client).or_default().insert(port);
            let _ = round;
        }
    }
    for (client, ports) in &per_client {
        assert_eq!(ports.len(), 1, "client 127.20.3.{client} reached {ports:?}");
    }
    let distinct: HashSet<u16> = per_client.values().flatten().copied().collect();
    assert_eq!(distinct.len(), 3, "three clients pinned by round-robin to three backends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_is_refreshed_by_use_and_expires_when_idle() {
    let backends = [tcp_who_am_i().await, tcp_who_am_i().await];
    let frontend = free_port(ip(10, 4, 1));
    let mut proxy = Proxy::new();
    // Margins are wide because the machine is shared: a stalled step must not look like an
    // expiry, and the expiry check waits well past the timeout.
    let timeout = Duration::from_secs(1);
    let sticky = Frontend { affinity: Some(timeout), ..tcp_frontend(frontend, &backends, Choice::RoundRobin) };
    assert!(proxy.sync([sticky]).is_empty());

    let client = ip(20, 4, 1);
    let pinned = who_answers(client, frontend).await;
    assert_eq!(pinned, backends[0].port());
    // Uses 300 ms apart keep the pin alive for longer than one timeout in total.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(who_answers(client, frontend).await, pinned, "pin must be refreshed by use");
    }
    tokio::time::sleep(timeout + Duration::from_millis(500)).await;
    // Round-robin's next pick is the other backend, so a lapsed pin is visible.
    assert_eq!(who_answers(client, frontend).await, backends[1].port(), "pin must lapse after the idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_moves_when_the_pinned_backend_leaves() {
    let backends = [tcp_who_am_i().await, tcp_who_am_i().await];
    let frontend = free_port(ip(10, 5, 1));
    let mut proxy = Proxy::new();
    let sticky = |set: &[std::net::SocketAddr]| Frontend {
        affinity: Some(Duration::from_secs(10_800)),
        ..tcp_frontend(frontend, set, Choice::Random)
    };
    assert!(proxy.sync([sticky(&backends)]).is_empty());
    let client = ip(20, 5, 1);
    let first = who_answers(client, frontend).await;
    let other = backends.iter().map(|b| b.port()).find(|p| *p != first).expect("two backends");
    let remaining: Vec<_> = backends.iter().copied().filter(|b| b.port() != first).collect();
    assert!(proxy.sync([sticky(&remaining)]).is_empty());
    for _ in 0..5 {
        assert_eq!(who_answers(client, frontend).await, other);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backends_is_refused_at_once_and_recovers() {
    let backend = tcp_who_am_i().await;
    let frontend = free_port(ip(10, 6, 1));
    let client = ip(20, 6, 1);
    let mut proxy = Proxy::new();

    // Declared without backends from the start.
    assert!(proxy.sync([tcp_frontend(frontend, &[], Choice::Random)]).is_empty());
    let started = Instant::now();
    assert_refused_at_once(connect_from(client, frontend).await, started);

    // Gains a backend: served.
    assert!(proxy.sync([tcp_frontend(frontend, &[backend], Choice::Random)]).is_empty());
    assert_eq!(who_answers(client, frontend).await, backend.port());

    // Loses it again: refused at once, with an established connection left alone.
    let mut open = Conversation::open(client, frontend).await.expect("open");
    assert!(proxy.sync([tcp_frontend(frontend, &[], Choice::Random)]).is_empty());
    let started = Instant::now();
    assert_refused_at_once(connect_from(client, frontend).await, started);
    open.echo(b"still here").await.expect("established connection drains");
    open.finish().await.expect("clean close");

    // And back.
    assert!(proxy.sync([tcp_frontend(frontend, &[backend], Choice::Random)]).is_empty());
    assert_eq!(who_answers(client, frontend).await, backend.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backend_drains_while_new_connections_avoid_it() {
    let old = tcp_who_am_i().await;
    let new = tcp_who_am_i().await;
    let frontend = free_port(ip(10, 7, 1));
    let client = ip(20, 7, 1);
    let mut proxy = Proxy::new();
    assert!(proxy.sync([tcp_frontend(frontend, &[old], Choice::RoundRobin)]).is_empty());

    let mut established = Conversation::open(client, frontend).await.expect("open");
    assert_eq!(established.backend_port, old.port());
    established.echo(b"before").await.expect("echo before");

    assert!(proxy.sync([tcp_frontend(frontend, &[new], Choice::RoundRobin)]).is_empty());
    for _ in 0..10 {
        assert_eq!(who_answers(client, frontend).await, new.port(), "new connections go to the new set only");
    }
    established.echo(b"after the backend left the set").await.expect("draining connection keeps working");
    established.finish().await.expect("draining connection closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_updates_keep_the_listener_and_refuse_nobody() {
    let a = tcp_who_am_i().await;
    let b = tcp_who_am_i().await;
    let frontend = free_port(ip(10, 8, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([tcp_frontend(frontend, &[a], Choice::RoundRobin)]).is_empty());
    let inode = listen_inode(frontend).expect("listening socket in /proc/net/tcp");

    let client = tokio::spawn(async move {
        let mut answers = Vec::new();
        for _ in 0..200 {
            answers.push(Conversation::open(ip(20, 8, 1), frontend).await.map(|c| c.backend_port));
        }
        answers
    });
    // 100 flips between two disjoint sets while the client connects in a loop.
    for flip in 0..100 {
        let set = if flip % 2 == 0 { [b] } else { [a] };
        let choice = if flip % 3 == 0 { Choice::Random } else { Choice::RoundRobin };
        assert!(proxy.sync([tcp_frontend(frontend, &set, choice)]).is_empty());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let answers = tokio::time::timeout(Duration::from_secs(60), client).await.expect("client ends").expect("join");
    let failures: Vec<_> = answers.iter().filter(|r| r.is_err()).collect();
    assert!(failures.is_empty(), "{} of {} connections failed: {failures:?}", failures.len(), answers.len());
    assert_eq!(listen_inode(frontend), Some(inode), "the listener must not be rebound");
}

/// xorshift64* bytes: a cheap deterministic stream that differs per seed.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// FNV-1a, 64-bit.
struct Checksum(u64);

impl Checksum {
    fn new() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

const BULK: u64 = 64 << 20;
const CHUNK: usize = 64 * 1024;

async fn send_pattern(mut writer: impl AsyncWriteExt + Unpin, seed: u64) -> io::Result<u64> {
    let mut pattern = Pattern(seed);
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0;
    while sent < BULK {
        pattern.fill(&mut buf);
        sum.update(&buf);
        writer.write_all(&buf).await?;
        sent += CHUNK as u64;
    }
    Ok(sum.0)
}

async fn receive_exactly(mut reader: impl AsyncReadExt + Unpin, len: u64) -> io::Result<u64> {
    let mut sum = Checksum::new();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    while got < len {
        let want = usize::try_from((len - got).min(CHUNK as u64)).unwrap_or(CHUNK);
        let n = reader.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF after {got} bytes")));
        }
        sum.update(&buf[..n]);
        got += n as u64;
    }
    Ok(sum.0)
}

/// 64 MiB each way at once. The backend only sends its trailer (the checksum of what it
/// received) after it has seen the client's half-close while its own stream is still
/// flowing, and the client then expects a clean EOF: half-close must pass through intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_transfer_both_ways_with_half_close() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (reader, mut writer) = stream.into_split();
        let receiving = tokio::spawn(async move {
            let mut reader = reader;
            let sum = receive_exactly(&mut reader, BULK).await?;
            let mut extra = [0u8; 1];
            // The client's half-close must arrive as EOF right after its data.
            let eof = reader.read(&mut extra).await?;
            Ok::<_, io::Error>((sum, eof))
        });
        let sent_sum = send_pattern(&mut writer, 0xB0B).await?;
        let (received_sum, eof) = receiving.await.map_err(io::Error::other)??;
        assert_eq!(eof, 0, "backend expected EOF after the client's data");
        writer.write_all(&received_sum.to_le_bytes()).await?;
        writer.shutdown().await?;
        Ok::<_, io::Error>(sent_sum)
    });

    let frontend = free_port(ip(10, 9, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([tcp_frontend(frontend, &[backend], Choice::Random)]).is_empty());
    let started = Instant::now();
    let stream = connect_from(ip(20, 9, 1), frontend).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        let sum = send_pattern(&mut writer, 0xA11CE).await?;
        writer.shutdown().await?;
        Ok::<_, io::Error>(sum)
    });
    let transfer = async {
        let from_backend = receive_exactly(&mut reader, BULK).await?;
        let mut trailer = Vec::new();
        reader.read_to_end(&mut trailer).await?;
        Ok::<_, io::Error>((from_backend, trailer))
    };
    let (from_backend, trailer) =
        tokio::time::timeout(Duration::from_secs(120), transfer).await.expect("transfer in time").expect("transfer");
    let client_sum = sending.await.expect("join").expect("client sends");
    let backend_sum = server.await.expect("join").expect("backend");
    assert_eq!(from_backend, backend_sum, "backend → client bytes differ");
    assert_eq!(trailer, client_sum.to_le_bytes().to_vec(), "client → backend bytes differ (or trailer/EOF wrong)");
    eprintln!("128 MiB through the proxy in {:?} (debug build)", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backends_are_skipped() {
    let live = tcp_who_am_i().await;
    let dead = [dead_backend(), dead_backend()];
    let frontend = free_port(ip(10, 10, 1));
    let client = ip(20, 10, 1);
    let mut proxy = Proxy::new();
    for choice in [Choice::RoundRobin, Choice::Random] {
        assert!(proxy.sync([tcp_frontend(frontend, &[dead[0], live, dead[1]], choice)]).is_empty());
        for _ in 0..12 {
            assert_eq!(who_answers(client, frontend).await, live.port());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_dead_resets_the_client_quickly() {
    let frontend = free_port(ip(10, 11, 1));
    let mut proxy = Proxy::new();
    assert!(proxy.sync([tcp_frontend(frontend, &[dead_backend(), dead_backend()], Choice::Random)]).is_empty());
    let started = Instant::now();
    // On loopback the reset can beat the client's own connect completion, so it shows
    // either as a failed connect or as a failed first read.
    let outcome = match connect_from(ip(20, 11, 1), frontend).await {
        Ok(mut stream) => {
            let mut buf = [0u8; 16];
            tokio::time::timeout(STEP, stream.read(&mut buf)).await.expect("no hang")
        }
        Err(e) => Err(e),
    };
    let elapsed = started.elapsed();
    assert!(
        matches!(&outcome, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "expected a reset, got {outcome:?}"
    );
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_frontend_stops_answering_while_others_keep_working() {
    let backend = tcp_who_am_i().await;
    let gone = free_port(ip(10, 12, 1));
    let kept = free_port(ip(10, 12, 2));
    let client = ip(20, 12, 1);
    let mut proxy = Proxy::new();
    let both = [tcp_frontend(gone, &[backend], Choice::Random), tcp_frontend(kept, &[backend], Choice::Random)];
    assert!(proxy.sync(both.clone()).is_empty());
    assert_eq!(who_answers(client, gone).await, backend.port());
    assert_eq!(who_answers(client, kept).await, backend.port());

    assert!(proxy.sync([both[1].clone()]).is_empty());
    let started = Instant::now();
    assert_refused_at_once(connect_from(client, gone).await, started);
    assert_eq!(who_answers(client, kept).await, backend.port());
    assert!(!proxy.is_serving(&both[0].key()));
    assert!(proxy.is_serving(&both[1].key()));

    // Idempotent: the same desired set again changes nothing.
    let inode = listen_inode(kept);
    assert!(proxy.sync([both[1].clone()]).is_empty());
    assert_eq!(listen_inode(kept), inode);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_frontends_and_connections() {
    let backend = tcp_who_am_i().await;
    let frontend = free_port(ip(10, 13, 1));
    let client = ip(20, 13, 1);
    let mut proxy = Proxy::new();
    assert!(proxy.sync([tcp_frontend(frontend, &[backend], Choice::Random)]).is_empty());
    let open = Conversation::open(client, frontend).await.expect("open");
    proxy.shutdown();

    let started = Instant::now();
    assert_refused_at_once(connect_from(client, frontend).await, started);
    let ended = tokio::time::timeout(STEP, async {
        let mut open = open;
        loop {
            match open.echo(b"x").await {
                Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("the established connection must be closed by shutdown");
    assert!(
        matches!(
            ended.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe
        ),
        "{ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_unbindable_frontends_are_reported_and_others_served() {
    let backend = tcp_who_am_i().await;
    let ok = free_port(ip(10, 14, 1));
    let taken = free_port(ip(10, 14, 2));
    // Someone else listens on `taken` without SO_REUSEADDR semantics that would share it.
    let squatter = std::net::TcpListener::bind(taken).expect("squat");
    let mut proxy = Proxy::new();
    let desired = vec![
        tcp_frontend(ok, &[backend], Choice::Random),
        tcp_frontend(ok, &[backend], Choice::RoundRobin),
        tcp_frontend(taken, &[backend], Choice::Random),
    ];
    let errors = proxy.sync(desired.clone());
    let keys: Vec<_> = errors.iter().map(|(k, _)| (k.addr, k.protocol)).collect();
    assert!(keys.contains(&(ok, Protocol::Tcp)), "duplicate reported: {errors:?}");
    assert!(keys.contains(&(taken, Protocol::Tcp)), "bind failure reported: {errors:?}");
    assert_eq!(who_answers(ip(20, 14, 1), ok).await, backend.port());

    // Level-triggered: once the port is free, the next sync serves it.
    drop(squatter);
    let errors = proxy.sync(desired[1..].to_vec());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(who_answers(ip(20, 14, 1), taken).await, backend.port());
}

/// A connection that always has data to move must not starve the rest of the runtime:
/// on a single-threaded runtime, a new connection is still served while a firehose
/// streams through the proxy. The runtime runs on its own thread so a starved runtime
/// fails the test instead of hanging it.
#[test]
fn a_busy_connection_does_not_starve_others() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let result = runtime.block_on(async {
            let firehose = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let firehose_addr = firehose.local_addr().expect("addr");
            std::thread::spawn(move || {
                use std::io::Write;
                let Ok((mut stream, _)) = firehose.accept() else { return };
                let chunk = vec![7u8; 256 * 1024];
                while stream.write_all(&chunk).is_ok() {}
            });
            let backend = tcp_who_am_i().await;
            let busy = free_port(ip(10, 15, 1));
            let other = free_port(ip(10, 15, 2));
            let mut proxy = Proxy::new();
            let errors = proxy.sync([
                tcp_frontend(busy, &[firehose_addr], Choice::Random),
                tcp_frontend(other, &[backend], Choice::Random),
            ]);
            assert!(errors.is_empty(), "{errors:?}");
            // A blocking reader on its own thread keeps the firehose flowing.
            let reader = std::net::TcpStream::connect(busy).expect("connect firehose");
            let drained = std::thread::spawn(move || {
                use std::io::Read;
                let mut reader = reader;
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while total < (512 << 20) {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                total
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let port = who_answers(ip(20, 15, 1), other).await;
            drop(proxy);
            (port == backend.port(), drained)
        });
        let _ = done_tx.send(result);
    });
    let (served, drained) =
        done_rx.recv_timeout(Duration::from_secs(30)).expect("runtime starved by a busy connection");
    assert!(served);
    assert!(drained.join().expect("reader") > 0, "the firehose flowed");
}

/// A backend that silently drops SYNs (its accept queue is full) costs one bounded
/// connect timeout, after which the next backend serves the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_backend_costs_one_connect_timeout() {
    let hole = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    hole.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr").into()).expect("bind");
    hole.listen(0).expect("listen");
    let hole_addr = hole.local_addr().expect("addr").as_socket().expect("inet");
    // Fill the accept queue; nobody ever accepts, so later SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), socket.connect(hole_addr)).await {
            fillers.push(stream);
        }
    }
    let probe = tokio::net::TcpSocket::new_v4().expect("socket");
    let probe = tokio::time::timeout(Duration::from_millis(300), probe.connect(hole_addr)).await;
    assert!(probe.is_err(), "the backlog must be full for this test to mean anything");

    let live = tcp_who_am_i().await;
    let frontend = free_port(ip(10, 16, 1));
    let timeout = Duration::from_millis(300);
    let mut proxy = Proxy::with_config(pier_l4::ProxyConfig { connect_timeout: timeout, ..Default::default() });
    assert!(proxy.sync([tcp_frontend(frontend, &[hole_addr, live], Choice::RoundRobin)]).is_empty());
    let started = Instant::now();
    // Round-robin tries the black hole first.
    assert_eq!(who_answers(ip(20, 16, 1), frontend).await, live.port());
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "the black hole was not tried first ({elapsed:?})");
    assert!(elapsed < timeout * 4, "connect was not bounded ({elapsed:?})");
    drop(fillers);
}
