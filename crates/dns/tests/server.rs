//! The real server on loopback: UDP, TCP, truncation and TCP retry, forwarding to a scripted
//! fake upstream (another 127.x address), the forwarding cache, SERVFAIL when upstreams fail,
//! ExternalName targets resolved upstream, shutdown, and `dig` as a client when installed.
//! Every wait is bounded; only 127.0.0.0/8 is used.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A as ARecord, TXT};
use hickory_proto::rr::{RData, Record, RecordType};
use pier_dns::{Server, ServerConfig, Zone};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

/// A scripted upstream resolver on UDP and TCP at one address.
struct FakeUpstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The upstream's zone: `example.com A`, `ext.interwebs.test A`, a `big.example TXT` that
/// only fits over TCP, NXDOMAIN for the rest.
fn upstream_answer(query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(question.clone());
    let name = question.name().to_ascii().to_ascii_lowercase();
    let owner = question.name().clone();
    match (name.as_str(), question.query_type()) {
        ("example.com.", RecordType::A) => {
            m.add_answer(Record::from_rdata(owner, 300, RData::A(ARecord::new(203, 0, 113, 7))));
        }
        ("ext.interwebs.test.", RecordType::A) => {
            m.add_answer(Record::from_rdata(owner, 60, RData::A(ARecord::new(203, 0, 113, 8))));
        }
        ("big.example.", RecordType::TXT) if tcp => {
            for i in 0..40 {
                m.add_answer(Record::from_rdata(
                    owner.clone(),
                    60,
                    RData::TXT(TXT::new(vec![format!("{i:02}").repeat(20)])),
                ));
            }
        }
        ("big.example.", RecordType::TXT) => m.metadata.truncation = true,
        _ => m.metadata.response_code = ResponseCode::NXDomain,
    }
    m.to_vec().ok()
}

async fn fake_upstream(ip: &str) -> FakeUpstream {
    let udp = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let queries = Arc::new(AtomicUsize::new(0));
    let count = queries.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            if let Some(resp) = upstream_answer(&buf[..n], false) {
                let _ = udp.send_to(&resp, peer).await;
            }
        }
    });
    let count = queries.clone();
    let tcp_task = tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                while let Ok(len) = s.read_u16().await {
                    let mut q = vec![0u8; usize::from(len)];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let Some(resp) = upstream_answer(&q, true) else { return };
                    let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&resp);
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeUpstream { addr, queries, tasks: vec![udp_task, tcp_task] }
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) -> Duration {
        let start = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.task).await.expect("server stops").unwrap();
        start.elapsed()
    }
}

async fn start(ip: &str, zone: Zone, upstreams: Vec<SocketAddr>) -> Running {
    start_with(ServerConfig::new(SocketAddr::new(ip.parse().unwrap(), 0), upstreams), zone).await
}

async fn start_with(config: ServerConfig, zone: Zone) -> Running {
    let server = Server::bind(config, zone).unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running { addr, stop: Some(tx), task }
}

async fn udp_exchange(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind((server.ip(), 0)).await.unwrap();
    sock.send_to(query, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf)).await.expect("UDP reply in time").unwrap();
    buf.truncate(n);
    buf
}

async fn tcp_send(s: &mut TcpStream, query: &[u8]) {
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).await.unwrap();
}

async fn tcp_recv(s: &mut TcpStream) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        let len = s.read_u16().await.unwrap();
        let mut resp = vec![0u8; usize::from(len)];
        s.read_exact(&mut resp).await.unwrap();
        resp
    })
    .await
    .expect("TCP reply in time")
}

fn big_zone() -> Zone {
    let zone = fixture();
    zone.apply_service(&headless("ns2", "big", http_port()));
    let ips: Vec<String> = (1..=60).map(|i| format!("10.8.0.{i}")).collect();
    let eps = ips.iter().map(|ip| ep(&[ip.as_str()], None, None)).collect();
    zone.apply_slice(&slice(
        "ns2",
        "big-1",
        "big",
        "IPv4",
        eps,
        json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
    ));
    zone
}

#[tokio::test]
async fn udp_answers_cluster_names() {
    let server = start("127.53.1.1", fixture(), vec![]).await;
    let resp = udp_exchange(server.addr, &ask("SVC1.testns.svc.cluster.local.", RecordType::A).id(99).bytes()).await;
    let m = Message::from_vec(&resp).unwrap();
    assert_eq!(m.metadata.id, 99);
    assert_eq!(answers(&m), ["SVC1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]);
    server.stop().await;
}

#[tokio::test]
async fn tcp_serves_several_queries_on_one_connection() {
    let server = start("127.53.2.1", fixture(), vec![]).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // Pipelined: both queries written before either answer is read.
    tcp_send(&mut s, &ask("svc1.testns.svc.cluster.local.", RecordType::A).id(1).bytes()).await;
    tcp_send(&mut s, &ask("svc6.testns.svc.cluster.local.", RecordType::AAAA).id(2).bytes()).await;
    let first = Message::from_vec(&tcp_recv(&mut s).await).unwrap();
    let second = Message::from_vec(&tcp_recv(&mut s).await).unwrap();
    assert_eq!((first.metadata.id, second.metadata.id), (1, 2));
    assert_eq!(answers(&first), ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]);
    assert_eq!(answers(&second), ["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"]);
    server.stop().await;
}

#[tokio::test]
async fn truncated_udp_answer_is_complete_over_tcp() {
    let server = start("127.53.3.1", big_zone(), vec![]).await;
    let query = ask("big.ns2.svc.cluster.local.", RecordType::A).bytes();
    let udp = udp_exchange(server.addr, &query).await;
    assert!(udp.len() <= 512);
    let m = Message::from_vec(&udp).unwrap();
    assert!(m.metadata.truncation, "TC over UDP");
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    tcp_send(&mut s, &query).await;
    let m = Message::from_vec(&tcp_recv(&mut s).await).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    server.stop().await;
}

#[tokio::test]
async fn other_names_are_forwarded_and_cached() {
    let upstream = fake_upstream("127.54.4.1").await;
    let server = start("127.53.4.1", fixture(), vec![upstream.addr]).await;
    let resp = udp_exchange(server.addr, &ask("Example.COM.", RecordType::A).id(4321).bytes()).await;
    let m = Message::from_vec(&resp).unwrap();
    assert_eq!(m.metadata.id, 4321, "the client's ID, not the upstream query's");
    assert_eq!(answers(&m), ["Example.COM. 300 IN A 203.0.113.7"]);
    assert_eq!(upstream.queries.load(Ordering::SeqCst), 1);
    // Again, in another case: from the cache, with the case of this query.
    let resp = udp_exchange(server.addr, &ask("example.com.", RecordType::A).id(5).bytes()).await;
    let m = Message::from_vec(&resp).unwrap();
    assert_eq!(m.metadata.id, 5);
    assert_eq!(m.answers[0].name.to_ascii(), "example.com.");
    assert!(m.answers[0].ttl <= 300);
    assert_eq!(upstream.queries.load(Ordering::SeqCst), 1, "second answer came from the cache");
    // NXDOMAIN from upstream is passed on.
    let resp = udp_exchange(server.addr, &ask("nope.example.", RecordType::A).bytes()).await;
    assert_eq!(rcode_name(rcode_of(&resp)), "NXDOMAIN");
    // Cluster names never reach the upstream.
    udp_exchange(server.addr, &ask("nosvc.testns.svc.cluster.local.", RecordType::A).bytes()).await;
    assert_eq!(upstream.queries.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn forwarded_tcp_queries_go_upstream_over_tcp() {
    let upstream = fake_upstream("127.54.5.1").await;
    let server = start("127.53.5.1", fixture(), vec![upstream.addr]).await;
    let query = ask("big.example.", RecordType::TXT).bytes();
    // Over UDP the upstream truncates and the client is told so.
    let m = Message::from_vec(&udp_exchange(server.addr, &query).await).unwrap();
    assert!(m.metadata.truncation);
    // The retry over TCP gets it all.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    tcp_send(&mut s, &query).await;
    let m = Message::from_vec(&tcp_recv(&mut s).await).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
    server.stop().await;
}

#[tokio::test]
async fn silent_upstream_gets_servfail_within_the_deadline() {
    // Bound but never read: queries vanish.
    let silent = UdpSocket::bind("127.54.6.1:0").await.unwrap();
    let server = start("127.53.6.1", fixture(), vec![silent.local_addr().unwrap()]).await;
    let start = Instant::now();
    let resp = udp_exchange(server.addr, &ask("example.com.", RecordType::A).id(66).bytes()).await;
    let took = start.elapsed();
    assert_eq!(rcode_name(rcode_of(&resp)), "SERVFAIL");
    assert_eq!(&resp[..2], &[0, 66]);
    assert!(took <= Duration::from_millis(2500), "SERVFAIL took {took:?}");
    // Cluster names are still answered at once meanwhile.
    let t = Instant::now();
    udp_exchange(server.addr, &ask("svc1.testns.svc.cluster.local.", RecordType::A).bytes()).await;
    assert!(t.elapsed() < Duration::from_millis(500));
    server.stop().await;
}

#[tokio::test]
async fn refusing_upstream_gets_servfail_at_once() {
    // Nothing listens there: the kernel answers port unreachable.
    let server = start("127.53.7.1", fixture(), vec!["127.54.7.1:9".parse().unwrap()]).await;
    let start = Instant::now();
    let resp = udp_exchange(server.addr, &ask("example.com.", RecordType::A).bytes()).await;
    assert_eq!(rcode_name(rcode_of(&resp)), "SERVFAIL");
    assert!(start.elapsed() < Duration::from_millis(500), "took {:?}", start.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn no_upstreams_gets_servfail_at_once() {
    let server = start("127.53.8.1", fixture(), vec![]).await;
    let start = Instant::now();
    let resp = udp_exchange(server.addr, &ask("example.com.", RecordType::A).bytes()).await;
    assert_eq!(rcode_name(rcode_of(&resp)), "SERVFAIL");
    assert!(start.elapsed() < Duration::from_millis(500));
    server.stop().await;
}

#[tokio::test]
async fn a_second_upstream_is_tried_when_the_first_refuses() {
    let upstream = fake_upstream("127.54.9.1").await;
    let server = start("127.53.9.1", fixture(), vec!["127.54.9.2:9".parse().unwrap(), upstream.addr]).await;
    for _ in 0..2 {
        let resp = udp_exchange(server.addr, &ask("nope-uncached.example.", RecordType::A).bytes()).await;
        assert_eq!(rcode_name(rcode_of(&resp)), "NXDOMAIN");
    }
    server.stop().await;
}

#[tokio::test]
async fn externalname_target_is_resolved_upstream() {
    let upstream = fake_upstream("127.54.10.1").await;
    let server = start("127.53.10.1", fixture(), vec![upstream.addr]).await;
    for tcp in [false, true] {
        let query = ask("ext.testns.svc.cluster.local.", RecordType::A).bytes();
        let resp = if tcp {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            tcp_send(&mut s, &query).await;
            tcp_recv(&mut s).await
        } else {
            udp_exchange(server.addr, &query).await
        };
        let m = Message::from_vec(&resp).unwrap();
        assert_eq!(
            answers(&m),
            ["ext.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test.", "ext.interwebs.test. 60 IN A 203.0.113.8",]
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn zone_updates_are_served_at_once() {
    let zone = fixture();
    let server = start("127.53.11.1", zone.clone(), vec![]).await;
    let query = ask("late.testns.svc.cluster.local.", RecordType::A).bytes();
    assert_eq!(rcode_name(rcode_of(&udp_exchange(server.addr, &query).await)), "NXDOMAIN");
    zone.apply_service(&cluster_ip("testns", "late", &["10.0.0.77"], http_port()));
    let m = Message::from_vec(&udp_exchange(server.addr, &query).await).unwrap();
    assert_eq!(answers(&m), ["late.testns.svc.cluster.local. 5 IN A 10.0.0.77"]);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_serving_promptly() {
    let server = start("127.53.12.1", fixture(), vec![]).await;
    let addr = server.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let took = server.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    // The idle connection was closed and the port no longer accepts.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(WAIT, idle.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    assert!(TcpStream::connect(addr).await.is_err());
}

/// `dig` as a real client, when it is installed.
mod with_dig {
    use super::*;

    async fn dig(server: SocketAddr, args: &[&str]) -> Option<String> {
        if std::process::Command::new("dig").arg("-v").output().is_err() {
            eprintln!("dig not installed: skipping");
            return None;
        }
        let mut cmd = tokio::process::Command::new("dig");
        cmd.arg(format!("@{}", server.ip())).args(["-p", &server.port().to_string(), "+time=2", "+tries=1"]).args(args);
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await.expect("dig finishes").unwrap();
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[tokio::test]
    async fn dig_over_udp_and_tcp() {
        let upstream = fake_upstream("127.54.13.1").await;
        let server = start("127.53.13.1", big_zone(), vec![upstream.addr]).await;
        let Some(out) = dig(server.addr, &["svc1.testns.svc.cluster.local", "+short"]).await else { return };
        assert_eq!(out.trim(), "10.0.0.1");
        let out =
            dig(server.addr, &["+tcp", "_http._tcp.svc1.testns.svc.cluster.local", "SRV", "+short"]).await.unwrap();
        assert_eq!(out.trim(), "0 100 80 svc1.testns.svc.cluster.local.");
        let out = dig(server.addr, &["-x", "10.0.0.1", "+short"]).await.unwrap();
        assert_eq!(out.trim(), "svc1.testns.svc.cluster.local.");
        let out = dig(server.addr, &["example.com", "+short"]).await.unwrap();
        assert_eq!(out.trim(), "203.0.113.7");
        let out = dig(server.addr, &["nosvc.testns.svc.cluster.local"]).await.unwrap();
        assert!(out.contains("status: NXDOMAIN"), "{out}");
        assert!(out.contains("flags: qr aa rd ra"), "{out}");
        server.stop().await;
    }

    #[tokio::test]
    async fn dig_bufsize_truncation_and_tcp_retry() {
        let server = start("127.53.14.1", big_zone(), vec![]).await;
        let Some(out) = dig(server.addr, &["big.ns2.svc.cluster.local", "+bufsize=512", "+ignore"]).await else {
            return;
        };
        assert!(out.contains(" tc "), "truncated at 512: {out}");
        let out = dig(server.addr, &["big.ns2.svc.cluster.local", "+bufsize=1232", "+ignore"]).await.unwrap();
        assert!(!out.contains(" tc "), "60 A records fit 1232 bytes: {out}");
        assert!(out.contains("ANSWER: 60"), "{out}");
        assert!(out.contains("udp: 1232"), "OPT echoed: {out}");
        // Without +ignore dig retries the truncated answer over TCP.
        let out = dig(server.addr, &["big.ns2.svc.cluster.local", "+bufsize=512", "+short"]).await.unwrap();
        assert_eq!(out.lines().count(), 60);
        let out = dig(server.addr, &["+tcp", "big.ns2.svc.cluster.local", "+short"]).await.unwrap();
        assert_eq!(out.lines().count(), 60);
        server.stop().await;
    }
}
