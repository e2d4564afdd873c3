//! Container logs in the CRI format the kubelet reads: one file per container instance,
//! `<logs>/<namespace>_<pod>_<uid>_<container>.<instance>.log`, each line `<RFC3339Nano> stdout|stderr F|P <content>`.
//!
//! Writing: one task per output stream splits on newlines; a line longer than [`MAX_LINE`] is
//! written in `P` (partial) pieces ending with an `F` piece, as containerd does. Each entry is a
//! single `write` to a file opened `O_APPEND`, so stdout and stderr entries never interleave
//! inside a line. Reading serves `kubectl logs`: `--tail`, `--timestamps`, `--since-time`,
//! `--limit-bytes`, `--follow` (until the instance has exited and its log is complete) and
//! `--previous` (the instance before the current one; older ones are deleted).
//!
//! The kubelet keeps `<namespace>_<pod>_<uid>/<container>/<instance>.log`; here the files of
//! every pod share one directory, as each new directory costs a new inode, which on ext4
//! without a journal means a search past every inode deleted in the last minute. A pod is
//! named by its *stem*, the path up to its uid. Namespaces, pod names, uids and container names
//! hold no `_` (the runtime refuses it, as Kubernetes names and UUIDs have none), so one pod's
//! prefix `<stem>_` never starts another pod's file name, and an instance number is all digits.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::time::format_rfc3339_nanos;

/// Longer lines are split into partial (`P`) entries.
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// How often `follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The previous instance of the container instead of the current one.
    pub previous: bool,
    /// Keep streaming until the instance exits.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// An instance's log file, shared by its stream pumps.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: Mutex<File>,
}

impl LogWriter {
    pub(crate) fn create(path: &Path) -> io::Result<Arc<LogWriter>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Arc::new(LogWriter { file: Mutex::new(file) }))
    }

    /// Appends one entry. A blocking write, on purpose: it lands in the page cache in
    /// microseconds, which is cheaper than a round trip through tokio's blocking pool.
    fn entry(&self, stream: Stream, partial: bool, content: &[u8]) -> io::Result<()> {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(format_rfc3339_nanos(SystemTime::now()).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.tag().as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
    }
}

/// Copies one output stream into the log until end of file. `strip_cr` drops the `\r` a
/// terminal puts before each newline.
pub(crate) async fn pump<R: AsyncRead + Unpin>(mut reader: R, stream: Stream, log: Arc<LogWriter>, strip_cr: bool) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let mut line = &pending[start..start + pos];
            if strip_cr && line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            write_split(&log, stream, line);
            start += pos + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            let _ = log.entry(stream, true, &pending[..MAX_LINE]);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        let _ = log.entry(stream, false, &pending);
    }
}

/// Writes a complete line, as partial pieces when it is long.
fn write_split(log: &LogWriter, stream: Stream, mut line: &[u8]) {
    while line.len() > MAX_LINE {
        let _ = log.entry(stream, true, &line[..MAX_LINE]);
        line = &line[MAX_LINE..];
    }
    let _ = log.entry(stream, false, line);
}

/// The directory of a pod's logs and the file name prefix before `<container>.`.
fn dir_and_prefix(stem: &Path) -> (&Path, String) {
    let dir = stem.parent().unwrap_or(Path::new("."));
    let pod = stem.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (dir, format!("{pod}_"))
}

/// The pod's files (by the stem's prefix), with what follows the prefix.
fn pod_files(stem: &Path) -> Vec<(PathBuf, String)> {
    let (dir, prefix) = dir_and_prefix(stem);
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let rest = e.file_name().to_str()?.strip_prefix(prefix.as_str())?.to_string();
                    Some((e.path(), rest))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The instance numbers of `container` of the pod `stem` that have a log, ascending.
pub(crate) fn instances(stem: &Path, container: &str) -> Vec<u32> {
    let mut v: Vec<u32> = pod_files(stem)
        .into_iter()
        .filter_map(|(_, rest)| {
            let n = rest.strip_suffix(".log")?.strip_prefix(container)?.strip_prefix('.')?;
            if n.bytes().all(|b| b.is_ascii_digit()) { n.parse().ok() } else { None }
        })
        .collect();
    v.sort_unstable();
    v
}

pub(crate) fn instance_path(stem: &Path, container: &str, instance: u32) -> PathBuf {
    let (dir, prefix) = dir_and_prefix(stem);
    dir.join(format!("{prefix}{container}.{instance}.log"))
}

/// Deletes the logs of `container`'s instances older than the previous one of `current`.
pub(crate) fn prune(stem: &Path, container: &str, current: u32) {
    for n in instances(stem, container) {
        if n + 1 < current {
            let _ = fs::remove_file(instance_path(stem, container, n));
        }
    }
}

/// Deletes every log of the pod `stem`.
pub(crate) fn remove_pod(stem: &Path) -> io::Result<()> {
    for (path, _) in pod_files(stem) {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// One parsed CRI log entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub timestamp: &'a [u8],
    pub partial: bool,
    pub content: &'a [u8],
}

pub(crate) fn parse_entry(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    if stream != b"stdout" && stream != b"stderr" {
        return None;
    }
    Some(Entry { timestamp, partial: tag == b"P", content })
}

/// The offset where the last `n` lines of `file` begin (scanning backwards in chunks, so a
/// large log costs only the tail it returns).
pub(crate) fn tail_offset(file: &mut File, n: usize) -> io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut first = true;
    while pos > 0 {
        let step = (chunk.len() as u64).min(pos);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let buf = &mut chunk[..step as usize];
        file.read_exact(buf)?;
        for i in (0..buf.len()).rev() {
            if buf[i] != b'\n' {
                continue;
            }
            // The file's final newline ends the last line; it does not start one.
            if first && pos + i as u64 == len - 1 {
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(pos + i as u64 + 1);
            }
        }
        first = false;
    }
    Ok(0)
}

/// Renders CRI entries as `kubectl logs` prints them.
#[derive(Debug)]
struct Renderer<'o> {
    opts: &'o LogOptions,
    since: Option<String>,
    written: u64,
    /// The previous entry was partial: the next continues its line (no timestamp prefix).
    continuing: bool,
}

impl Renderer<'_> {
    /// The bytes to print for one raw line of the file; `None` once the byte limit is reached.
    fn render(&mut self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(entry) = parse_entry(raw) else {
            // Not CRI (should not happen): pass it through rather than lose it.
            out.extend_from_slice(raw);
            out.push(b'\n');
            return self.account(out);
        };
        if let Some(since) = &self.since
            && !self.continuing
            && entry.timestamp < since.as_bytes()
        {
            self.continuing = entry.partial;
            return true;
        }
        if self.opts.timestamps && !self.continuing {
            out.extend_from_slice(entry.timestamp);
            out.push(b' ');
        }
        out.extend_from_slice(entry.content);
        if !entry.partial {
            out.push(b'\n');
        }
        self.continuing = entry.partial;
        self.account(out)
    }

    fn account(&mut self, out: &mut Vec<u8>) -> bool {
        if let Some(limit) = self.opts.limit_bytes {
            let room = limit.saturating_sub(self.written);
            if out.len() as u64 >= room {
                out.truncate(room as usize);
                self.written = limit;
                return false;
            }
        }
        self.written += out.len() as u64;
        true
    }
}

/// Streams the log at `path` into `out`. With `exited` (the current instance's exit watch) and
/// `opts.follow`, keeps reading until the instance has exited and everything it wrote is out.
pub(crate) async fn copy<W: AsyncWrite + Unpin>(
    path: &Path,
    opts: &LogOptions,
    exited: Option<watch::Receiver<bool>>,
    out: &mut W,
) -> io::Result<()> {
    let mut std_file = File::open(path)?;
    let start = match opts.tail_lines {
        Some(n) => tail_offset(&mut std_file, n)?,
        None => 0,
    };
    std_file.seek(SeekFrom::Start(start))?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut renderer = Renderer { opts, since: opts.since.map(format_rfc3339_nanos), written: 0, continuing: false };
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut rendered = Vec::new();
    let follow = if opts.follow { exited } else { None };
    loop {
        // Whether the writer had finished before this read: then this read sees everything.
        let finished = follow.as_ref().is_none_or(|rx| *rx.borrow());
        let n = file.read(&mut chunk).await?;
        if n > 0 {
            pending.extend_from_slice(&chunk[..n]);
            let mut consumed = 0;
            while let Some(pos) = pending[consumed..].iter().position(|&b| b == b'\n') {
                rendered.clear();
                let more = renderer.render(&pending[consumed..consumed + pos], &mut rendered);
                out.write_all(&rendered).await?;
                consumed += pos + 1;
                if !more {
                    return out.flush().await;
                }
            }
            pending.drain(..consumed);
            continue;
        }
        if finished {
            break;
        }
        out.flush().await?;
        if let Some(rx) = &follow {
            let mut rx = rx.clone();
            // Wake on new data (polled) or on exit, whichever comes first.
            let _ = tokio::time::timeout(FOLLOW_POLL, rx.wait_for(|done| *done)).await;
        }
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, lines: &[&str]) -> PathBuf {
        let path = dir.join("0.log");
        fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
        path
    }

    async fn read(path: &Path, opts: LogOptions) -> String {
        let mut out = Vec::new();
        copy(path, &opts, None, &mut out).await.expect("copy");
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn pump_writes_cri_lines_and_splits_long_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let log = LogWriter::create(&path).expect("create");
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("hello\r\nworld\n{long}\nno newline");
        pump(input.as_bytes(), Stream::Stderr, log, true).await;
        let text = fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text:.200}");
        let e = parse_entry(lines[0].as_bytes()).expect("entry");
        assert_eq!(e.content, b"hello");
        assert_eq!(e.timestamp.len(), "2006-01-02T15:04:05.000000000Z".len());
        assert!(lines[0].contains(" stderr F hello"));
        assert!(lines[2].contains(" stderr P x"));
        assert!(lines[3].ends_with(" stderr F xxxxxxxxxx"));
        assert!(lines[4].ends_with(" stderr F no newline"));
        // Reading joins the partial pieces back into one line.
        assert_eq!(read(&path, LogOptions::default()).await, format!("hello\nworld\n{long}\nno newline\n"));
    }

    #[tokio::test]
    async fn tail_timestamps_since_and_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_log(
            dir.path(),
            &[
                "2024-01-01T00:00:01.000000000Z stdout F one",
                "2024-01-01T00:00:02.000000000Z stderr F two",
                "2024-01-01T00:00:03.000000000Z stdout P thr",
                "2024-01-01T00:00:03.000000001Z stdout F ee",
            ],
        );
        assert_eq!(read(&path, LogOptions::default()).await, "one\ntwo\nthree\n");
        assert_eq!(read(&path, LogOptions { tail_lines: Some(2), ..Default::default() }).await, "three\n");
        assert_eq!(read(&path, LogOptions { tail_lines: Some(0), ..Default::default() }).await, "");
        assert_eq!(read(&path, LogOptions { tail_lines: Some(99), ..Default::default() }).await, "one\ntwo\nthree\n");
        assert_eq!(
            read(&path, LogOptions { timestamps: true, tail_lines: Some(3), ..Default::default() }).await,
            "2024-01-01T00:00:02.000000000Z two\n2024-01-01T00:00:03.000000000Z three\n"
        );
        let since = std::time::UNIX_EPOCH + Duration::from_secs(1_704_067_202);
        assert_eq!(read(&path, LogOptions { since: Some(since), ..Default::default() }).await, "two\nthree\n");
        assert_eq!(read(&path, LogOptions { limit_bytes: Some(6), ..Default::default() }).await, "one\ntw");
    }

    #[test]
    fn tail_offset_scans_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.log");
        let line = format!("{}\n", "y".repeat(999));
        fs::write(&path, line.repeat(300)).expect("write");
        let mut f = File::open(&path).expect("open");
        assert_eq!(tail_offset(&mut f, 1).expect("tail"), 299 * 1000);
        assert_eq!(tail_offset(&mut f, 150).expect("tail"), 150 * 1000);
        assert_eq!(tail_offset(&mut f, 300).expect("tail"), 0);
    }

    #[test]
    fn prune_keeps_current_and_previous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = dir.path().join("default_web_uid1");
        for n in 0..4 {
            fs::write(instance_path(&pod, "main", n), "").expect("write");
        }
        assert!(dir.path().join("default_web_uid1_main.3.log").is_file());
        // Another container whose name starts the same way, and another pod: theirs stay.
        fs::write(instance_path(&pod, "main-sidecar", 0), "").expect("write");
        let other = dir.path().join("default_web_uid10");
        fs::write(instance_path(&other, "main", 0), "").expect("write");
        prune(&pod, "main", 3);
        assert_eq!(instances(&pod, "main"), vec![2, 3]);
        assert_eq!(instances(&pod, "main-sidecar"), vec![0]);
        remove_pod(&pod).expect("remove");
        assert_eq!(instances(&pod, "main"), Vec::<u32>::new());
        assert_eq!(instances(&other, "main"), vec![0], "another pod's logs stay");
    }

    #[tokio::test]
    async fn follow_ends_when_the_instance_has_exited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let log = LogWriter::create(&path).expect("create");
        let (tx, rx) = watch::channel(false);
        let reader = {
            let path = path.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                copy(&path, &LogOptions { follow: true, ..Default::default() }, Some(rx), &mut out)
                    .await
                    .expect("copy");
                out
            })
        };
        log.entry(Stream::Stdout, false, b"first").expect("write");
        tokio::time::sleep(Duration::from_millis(250)).await;
        log.entry(Stream::Stdout, false, b"second").expect("write");
        tx.send_replace(true);
        let out = tokio::time::timeout(Duration::from_secs(5), reader).await.expect("follow ends").expect("join");
        assert_eq!(out, b"first\nsecond\n");
    }
}
