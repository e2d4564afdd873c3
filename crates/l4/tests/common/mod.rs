//! Loopback fixtures shared by the TCP and UDP tests: "who am I" backends that answer
//! with their own port, clients bound to chosen 127/8 source addresses, free frontend
//! ports, and the listening-socket inode from /proc. Everything stays on 127.0.0.0/8 and
//! every wait is bounded.
#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pier_l4::{Choice, Frontend, Protocol};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// Upper bound for any single network step in a test.
pub const STEP: Duration = Duration::from_secs(5);

pub fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// A port free for both TCP and UDP on `ip`, found by binding port 0 (tests never use a
/// fixed port). The proxy binds it right after; nothing else on 127.10/16 or 127.11/16
/// competes for it.
pub fn free_port(ip: IpAddr) -> SocketAddr {
    for _ in 0..50 {
        let Ok(tcp) = std::net::TcpListener::bind(SocketAddr::new(ip, 0)) else { continue };
        let Ok(addr) = tcp.local_addr() else { continue };
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port on {ip}");
}

pub fn tcp_frontend(addr: SocketAddr, backends: &[SocketAddr], choice: Choice) -> Frontend {
    Frontend {
        addr,
        protocol: Protocol::Tcp,
        backends: backends.to_vec(),
        choice,
        affinity: None,
        affinity_scope: None,
    }
}

pub fn udp_frontend(addr: SocketAddr, backends: &[SocketAddr], choice: Choice) -> Frontend {
    Frontend {
        addr,
        protocol: Protocol::Udp,
        backends: backends.to_vec(),
        choice,
        affinity: None,
        affinity_scope: None,
    }
}

/// A TCP backend that greets each connection with "<its port>\n" and then echoes until
/// the client half-closes, then closes.
pub async fn tcp_who_am_i() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let greeting = format!("{}\n", addr.port());
                if stream.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}

/// An address where nothing listens (TCP) and nothing receives (UDP).
pub fn dead_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Connects to `frontend` from `source` (any port).
pub async fn connect_from(source: IpAddr, frontend: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    tokio::time::timeout(STEP, socket.connect(frontend))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// A connection through the proxy to a who-am-I backend.
pub struct Conversation {
    pub backend_port: u16,
    reader: BufReader<TcpStream>,
}

impl Conversation {
    pub async fn open(source: IpAddr, frontend: SocketAddr) -> io::Result<Conversation> {
        let stream = connect_from(source, frontend).await?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let read = tokio::time::timeout(STEP, reader.read_line(&mut line))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no greeting"))??;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the greeting"));
        }
        let backend_port = line.trim().parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Conversation { backend_port, reader })
    }

    pub async fn echo(&mut self, payload: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(payload).await?;
        let mut back = vec![0u8; payload.len()];
        tokio::time::timeout(STEP, self.reader.read_exact(&mut back))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
        assert_eq!(back, payload, "echo mismatch");
        Ok(())
    }

    /// Half-closes and expects the backend to close in turn, with nothing else sent.
    pub async fn finish(mut self) -> io::Result<()> {
        self.reader.get_mut().shutdown().await?;
        let mut rest = Vec::new();
        tokio::time::timeout(STEP, self.reader.read_to_end(&mut rest))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no close"))??;
        assert!(rest.is_empty(), "unexpected bytes after half-close");
        Ok(())
    }
}

/// Which backend a new connection from `source` reaches.
pub async fn who_answers(source: IpAddr, frontend: SocketAddr) -> u16 {
    let conversation = Conversation::open(source, frontend).await.expect("connection through the proxy");
    let port = conversation.backend_port;
    conversation.finish().await.expect("clean close");
    port
}

/// A UDP backend that answers each datagram with "<its port>:<payload>".
pub async fn udp_who_am_i() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp backend");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else { return };
            let mut reply = format!("{}:", addr.port()).into_bytes();
            reply.extend_from_slice(&buf[..len]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    addr
}

pub async fn udp_client(source: IpAddr, frontend: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::new(source, 0)).await.expect("bind client");
    socket.connect(frontend).await.expect("connect client");
    socket
}

/// Sends `payload` and returns (backend port, echoed payload) or the receive error /
/// a TimedOut error after `wait`.
pub async fn udp_ask(client: &UdpSocket, payload: &[u8], wait: Duration) -> io::Result<(u16, Vec<u8>)> {
    client.send(payload).await?;
    let mut buf = vec![0u8; 65_536];
    let len = tokio::time::timeout(wait, client.recv(&mut buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply"))??;
    let reply = &buf[..len];
    let colon = reply.iter().position(|b| *b == b':').ok_or_else(|| io::Error::other("malformed reply"))?;
    let port = std::str::from_utf8(&reply[..colon])
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other("malformed port"))?;
    Ok((port, reply[colon + 1..].to_vec()))
}

/// The inode of the TCP socket listening on `addr` (IPv4), from /proc/net/tcp: the same
/// inode before and after a change proves the listener was not rebound.
pub fn listen_inode(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = addr else { return None };
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
            .then(|| fields.get(9).and_then(|inode| inode.parse().ok()))
            .flatten()
    })
}
