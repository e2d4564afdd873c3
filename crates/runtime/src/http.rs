//! The built-in web servers (kubia, httpd, nginx): a tiny HTTP/1.1 responder on tokio.
//!
//! Hand-written because each site is one fixed page: it parses a request head, skips a
//! `Content-Length` body, answers, and keeps the connection for the next request (keep-alive and
//! pipelining; HTTP/1.0 closes unless asked not to). One task per connection; idle connections
//! close after a minute; SIGTERM or SIGINT ends the server at once, as `nginx` and `httpd` do on
//! a fast shutdown. Access logs go to stdout in each original's format, so `kubectl logs` shows
//! what the real image would.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::images::Builtin;
use crate::time::{format_clf, format_http_date};

/// How long a connection may sit without a complete request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Larger request heads get `431` (nginx's default buffers are about this size).
const MAX_HEAD: usize = 16 * 1024;

const HTTPD_PAGE: &str = "<html><body><h1>It works!</h1></body></html>\n";
const HTTPD_SERVER: &str = "Apache/2.4.62 (Unix)";
const HTTPD_404: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>404 Not Found</title>\n</head><body>\n<h1>Not Found</h1>\n<p>The requested URL was not found on this server.</p>\n</body></html>\n";
const NGINX_SERVER: &str = "nginx/1.27.4";
/// The stock `index.html` of nginx (615 bytes).
const NGINX_PAGE: &str = "<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href=\"http://nginx.org/\">nginx.org</a>.<br/>
Commercial support is available at
<a href=\"http://nginx.com/\">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
";

/// Runs a built-in server until SIGTERM; the process exit code.
pub(crate) fn run(builtin: Builtin, _args: &[String]) -> i32 {
    let work = move || -> i32 {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{}: starting the async runtime: {e}", builtin.name());
                return 1;
            }
        };
        match rt.block_on(serve_until_terminated(builtin)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{}: {e}", builtin.name());
                1
            }
        }
    };
    // Called from inside an async runtime, a nested one must live on a thread of its own.
    if tokio::runtime::Handle::try_current().is_ok() { std::thread::spawn(work).join().unwrap_or(1) } else { work() }
}

async fn serve_until_terminated(builtin: Builtin) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let port = builtin.port().unwrap_or(80);
    // Dual-stack like the originals; IPv4 only where IPv6 is off.
    let listener = match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind(("0.0.0.0", port)).await?,
    };
    let hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let site = Arc::new(Site { builtin, hostname });
    site.started();
    serve(listener, site, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
    .await
}

/// Accepts connections until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    site: Arc<Site>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let site = site.clone();
                    tokio::spawn(async move {
                        let _ = handle_connection(stream, peer, &site).await;
                    });
                }
                // Out of descriptors or a connection reset before accept: wait a little, go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// One built-in site.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub builtin: Builtin,
    pub hostname: String,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    /// The minor version: HTTP/1.0 or HTTP/1.1.
    minor: u8,
    keep_alive: bool,
    content_length: u64,
    chunked: bool,
    user_agent: Option<String>,
    referer: Option<String>,
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: Option<&'static str>,
    body: String,
}

impl Site {
    fn started(&self) {
        match self.builtin {
            Builtin::Kubia => println!("Kubia server starting..."),
            Builtin::Httpd => eprintln!("[mpm_event:notice] {HTTPD_SERVER} configured -- resuming normal operations"),
            Builtin::Nginx => eprintln!("[notice] 1#1: {NGINX_SERVER} start worker processes"),
            Builtin::Pause => {}
        }
    }

    fn respond(&self, head: &Head) -> Response {
        let path = head.target.split(['?', '#']).next().unwrap_or("");
        let page = path == "/" || path == "/index.html";
        let ok =
            |content_type, body: &str| Response { status: 200, reason: "OK", content_type, body: body.to_string() };
        match self.builtin {
            Builtin::Kubia => Response {
                status: 200,
                reason: "OK",
                content_type: None,
                body: format!("You've hit {}\n", self.hostname),
            },
            Builtin::Httpd if page => ok(Some("text/html"), HTTPD_PAGE),
            Builtin::Httpd => Response {
                status: 404,
                reason: "Not Found",
                content_type: Some("text/html; charset=iso-8859-1"),
                body: HTTPD_404.to_string(),
            },
            Builtin::Nginx if !matches!(head.method.as_str(), "GET" | "HEAD") => nginx_error(405, "Not Allowed"),
            Builtin::Nginx if page => ok(Some("text/html"), NGINX_PAGE),
            Builtin::Nginx => nginx_error(404, "Not Found"),
            Builtin::Pause => Response { status: 404, reason: "Not Found", content_type: None, body: String::new() },
        }
    }

    fn server_header(&self) -> Option<&'static str> {
        match self.builtin {
            Builtin::Httpd => Some(HTTPD_SERVER),
            Builtin::Nginx => Some(NGINX_SERVER),
            Builtin::Kubia | Builtin::Pause => None,
        }
    }

    fn log(&self, peer: SocketAddr, head: &Head, status: u16, bytes: usize) {
        let ip: IpAddr = peer.ip();
        let when = format_clf(SystemTime::now());
        let request = format!("{} {} HTTP/1.{}", head.method, head.target, head.minor);
        match self.builtin {
            // Node's peer address, as the book's app prints it (`::ffff:10.244.1.1`).
            Builtin::Kubia => println!("Received request from {ip}"),
            Builtin::Httpd => println!("{} - - [{when}] \"{request}\" {status} {bytes}", ip.to_canonical()),
            Builtin::Nginx => println!(
                "{} - - [{when}] \"{request}\" {status} {bytes} \"{}\" \"{}\" \"-\"",
                ip.to_canonical(),
                head.referer.as_deref().unwrap_or("-"),
                head.user_agent.as_deref().unwrap_or("-")
            ),
            Builtin::Pause => {}
        }
    }
}

fn nginx_error(status: u16, reason: &'static str) -> Response {
    Response {
        status,
        reason,
        content_type: Some("text/html"),
        body: format!(
            "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>{NGINX_SERVER}</center>\r\n</body>\r\n</html>\r\n"
        ),
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target, version) = (request_line.next()?, request_line.next()?, request_line.next()?);
    if request_line.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_alphabetic())
        || target.is_empty()
    {
        return None;
    }
    let minor = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return None,
    };
    let mut head = Head {
        method: method.to_string(),
        target: target.to_string(),
        minor,
        keep_alive: minor == 1,
        content_length: 0,
        chunked: false,
        user_agent: None,
        referer: None,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" => {
                for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                    match token.as_str() {
                        "close" => head.keep_alive = false,
                        "keep-alive" => head.keep_alive = true,
                        _ => {}
                    }
                }
            }
            "content-length" => head.content_length = value.parse().ok()?,
            "transfer-encoding" => head.chunked = value.to_ascii_lowercase().contains("chunked"),
            "user-agent" => head.user_agent = Some(value.to_string()),
            "referer" => head.referer = Some(value.to_string()),
            _ => {}
        }
    }
    Some(head)
}

/// Reads more bytes into `buf`; `Ok(false)` at end of stream.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle connection"))??;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Serves requests on one connection until the client or the protocol ends it.
pub(crate) async fn handle_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    site: &Site,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            let found = find_head_end(&buf);
            if found.unwrap_or(buf.len()) > MAX_HEAD {
                return reject(&mut stream, site, 431, "Request Header Fields Too Large").await;
            }
            if let Some(end) = found {
                break end;
            }
            if !fill(&mut stream, &mut buf).await? {
                return Ok(());
            }
        };
        let Some(head) = parse_head(&buf[..head_end]) else {
            return reject(&mut stream, site, 400, "Bad Request").await;
        };
        buf.drain(..head_end);
        // Skip the body; a chunked one is answered, then the connection closes (its end is not
        // worth parsing for pages that ignore it).
        let mut remaining = head.content_length;
        while remaining > 0 {
            if buf.is_empty() && !fill(&mut stream, &mut buf).await? {
                return Ok(());
            }
            let take = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
            buf.drain(..take);
            remaining -= take as u64;
        }
        let keep_alive = head.keep_alive && !head.chunked;
        let response = site.respond(&head);
        let wire = render(site, &head, &response, keep_alive);
        stream.write_all(&wire).await?;
        site.log(peer, &head, response.status, if head.method == "HEAD" { 0 } else { response.body.len() });
        if !keep_alive {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

fn render(site: &Site, head: &Head, response: &Response, keep_alive: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", response.status, response.reason);
    if let Some(server) = site.server_header() {
        out.push_str(&format!("Server: {server}\r\n"));
    }
    out.push_str(&format!("Date: {}\r\n", format_http_date(SystemTime::now())));
    if let Some(ct) = response.content_type {
        out.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    out.push_str(if keep_alive { "Connection: keep-alive\r\n\r\n" } else { "Connection: close\r\n\r\n" });
    let mut wire = out.into_bytes();
    if head.method != "HEAD" {
        wire.extend_from_slice(response.body.as_bytes());
    }
    wire
}

async fn reject<S: AsyncWrite + Unpin>(
    stream: &mut S,
    site: &Site,
    status: u16,
    reason: &'static str,
) -> io::Result<()> {
    let head = Head {
        method: "GET".into(),
        target: "/".into(),
        minor: 1,
        keep_alive: false,
        content_length: 0,
        chunked: false,
        user_agent: None,
        referer: None,
    };
    let body = match site.builtin {
        Builtin::Nginx => nginx_error(status, reason).body,
        _ => String::new(),
    };
    let response = Response { status, reason, content_type: Some("text/html"), body };
    stream.write_all(&render(site, &head, &response, false)).await?;
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn site(builtin: Builtin) -> Site {
        Site { builtin, hostname: "kubia-abcde".into() }
    }

    /// Feeds `request` to a fresh connection and returns everything the server wrote.
    async fn exchange(builtin: Builtin, request: &str) -> String {
        let (mut client, server) = duplex(64 * 1024);
        let s = site(builtin);
        let peer: SocketAddr = "[::ffff:10.244.0.7]:40000".parse().expect("peer");
        let task = tokio::spawn(async move { handle_connection(server, peer, &s).await });
        client.write_all(request.as_bytes()).await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
            .await
            .expect("in time")
            .expect("read");
        let _ = task.await;
        String::from_utf8(out).expect("utf-8")
    }

    fn bodies(wire: &str) -> Vec<&str> {
        wire.split("HTTP/1.1 ").skip(1).map(|r| r.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")).collect()
    }

    #[test]
    fn the_nginx_page_is_the_stock_one() {
        assert_eq!(NGINX_PAGE.len(), 615);
        assert!(NGINX_PAGE.contains("<title>Welcome to nginx!</title>"));
    }

    #[tokio::test]
    async fn kubia_answers_every_request_with_its_hostname_and_keeps_alive() {
        let wire = exchange(Builtin::Kubia, "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /any HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\n\r\n").await;
        assert_eq!(wire.matches("HTTP/1.1 200 OK").count(), 3, "{wire}");
        assert_eq!(bodies(&wire), vec!["You've hit kubia-abcde\n"; 3]);
        assert!(wire.contains("Connection: keep-alive"));
    }

    #[tokio::test]
    async fn httpd_serves_it_works_and_404s_elsewhere() {
        let wire = exchange(
            Builtin::Httpd,
            "GET / HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\nServer: Apache/"), "{wire}");
        let b = bodies(&wire);
        assert_eq!(b.len(), 2, "the connection closes after `Connection: close`");
        assert_eq!(b[0], HTTPD_PAGE);
        assert!(wire.contains("HTTP/1.1 404 Not Found"));
    }

    #[tokio::test]
    async fn nginx_serves_the_welcome_page_head_and_http10() {
        let wire = exchange(
            Builtin::Nginx,
            "HEAD / HTTP/1.1\r\n\r\nGET /index.html?x=1 HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        )
        .await;
        let b = bodies(&wire);
        assert_eq!(b.len(), 2, "HTTP/1.0 without keep-alive closes: {wire}");
        assert_eq!(b[0], "", "HEAD has no body");
        assert!(wire.contains("Content-Length: 615"));
        assert_eq!(b[1], NGINX_PAGE);
        let wire = exchange(Builtin::Nginx, "DELETE / HTTP/1.1\r\n\r\nGET /missing HTTP/1.1\r\n\r\n").await;
        assert!(wire.contains("405 Not Allowed") && wire.contains("404 Not Found"), "{wire}");
    }

    #[tokio::test]
    async fn garbage_gets_400_and_a_closed_connection() {
        let wire = exchange(Builtin::Nginx, "HELLO\r\n\r\nGET / HTTP/1.1\r\n\r\n").await;
        assert!(wire.starts_with("HTTP/1.1 400 Bad Request"), "{wire}");
        assert_eq!(wire.matches("HTTP/1.1 ").count(), 1);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD + 10));
        assert!(exchange(Builtin::Kubia, &huge).await.starts_with("HTTP/1.1 431"));
    }

    #[tokio::test]
    async fn serves_concurrent_loopback_clients_and_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(site(Builtin::Kubia)), async move {
            let _ = stop_rx.await;
        }));
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
                let mut out = String::new();
                s.read_to_string(&mut out).await.expect("read");
                out
            }));
        }
        for c in clients {
            let out = tokio::time::timeout(Duration::from_secs(5), c).await.expect("in time").expect("join");
            assert!(out.ends_with("You've hit kubia-abcde\n"), "{out}");
        }
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("stops promptly")
            .expect("join")
            .expect("serve");
    }
}
