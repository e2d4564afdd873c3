//! `cargo xtask bench api`: the API-server benchmark of issue 2.
//!
//! Against a fresh `pier server` in a sealed network namespace (see [`crate::sealed`]; the
//! client runs on a thread inside it), in the namespace `bench`:
//! 1. W watches on the namespace's Services are opened (from the revision of an empty list);
//! 2. N Services are created with C requests in flight (`buffer_unordered` over one pooled
//!    `kube::Client`, so C HTTP/1.1 connections); for each the instant its create response
//!    arrived is recorded, and in each watcher the instant its `ADDED` event arrived;
//! 3. the full list of the N Services is timed `--lists` times with the typed `kube` client
//!    (`Api::list`, decoding included) and as many times as raw bytes (no decoding);
//! 4. the server's VmRSS / VmHWM (`/proc/<pid>/status`) after the creates and after the lists,
//!    its CPU time, and the SQLite file sizes are read.
//!
//! Everything is bounded by timeouts; the report is printed and the task exits 0 whether or not
//! the goals are met. It fails only when the run itself fails (a request errors, the server
//! dies, a timeout expires).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use futures::future::join_all;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::sync::watch;

use crate::ApiArgs;
use crate::procfs::{proc_cpu, proc_status_bytes};
use crate::report::{Machine, machine, mb, median, ms, percentile, print_table, revision, verdict};
use crate::sealed::{self, Sealed};

const NAMESPACE: &str = "bench";
/// Bound on one create, get or watch-start request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one full list.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the watchers may still take, after the last create answered, to see every event.
const WATCH_SETTLE: Duration = Duration::from_secs(60);
/// A watcher never runs longer than this, whatever happens.
const WATCH_HARD_LIMIT: Duration = Duration::from_secs(30 * 60);
/// `timeoutSeconds` of each watch request; a watch that ends is resumed from its last revision.
const WATCH_SECONDS: u32 = 1800;
const MAX_REWATCHES: usize = 20;

const GOAL_CREATES_PER_S: f64 = 2000.0;
const GOAL_LIST: Duration = Duration::from_millis(300);
const GOAL_WATCH_P99: Duration = Duration::from_millis(10);
const GOAL_RSS_BYTES: u64 = 150_000_000;

fn name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix("svc-")?.parse().ok()
}

/// A typical small ClusterIP Service: one port, a selector, a couple of labels.
fn service(i: usize) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name(i), "labels": {"app": format!("bench-{i}"), "tier": "bench"}},
        "spec": {
            "selector": {"app": format!("bench-{i}")},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
        }
    }))?)
}

/// The server the client measures (it runs in the sealed namespace the client thread joined).
struct Target {
    kubeconfig: std::path::PathBuf,
    pid: u32,
    data_dir: std::path::PathBuf,
}

async fn client(server: &Target) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(&server.kubeconfig).context("reading the server's kubeconfig")?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("loading the server's kubeconfig")?;
    // Errors must show, not be retried inside the measurement.
    config.default_retry = false;
    config.connect_timeout = Some(Duration::from_secs(10));
    ensure!(
        config.cluster_url.host() == Some("127.0.0.1"),
        "the kubeconfig points at {}, not at 127.0.0.1",
        config.cluster_url
    );
    kube::Client::try_from(config).context("building the kube client")
}

async fn bounded<T>(what: &str, limit: Duration, f: impl Future<Output = kube::Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {limit:?}"),
    }
}

/// What one watcher saw.
struct WatchOutcome {
    /// When the `ADDED` event of Service `i` arrived.
    received: Vec<Option<Instant>>,
    duplicates: usize,
    other_events: usize,
    rewatches: usize,
    error: Option<String>,
}

async fn watcher(
    api: Api<Service>,
    mut stream: BoxStream<'static, kube::Result<WatchEvent<Service>>>,
    mut rv: String,
    n: usize,
    mut stop: watch::Receiver<bool>,
) -> WatchOutcome {
    let mut out = WatchOutcome { received: vec![None; n], duplicates: 0, other_events: 0, rewatches: 0, error: None };
    let hard_limit = tokio::time::Instant::now() + WATCH_HARD_LIMIT;
    let mut seen = 0;
    while seen < n {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep_until(hard_limit) => {
                out.error = Some(format!("still missing events after {WATCH_HARD_LIMIT:?}"));
                break;
            }
            ev = stream.next() => ev,
        };
        let now = Instant::now();
        let ended = match next {
            Some(Ok(WatchEvent::Added(s))) => {
                rv = s.metadata.resource_version.unwrap_or(rv);
                match s.metadata.name.as_deref().and_then(index_of).and_then(|i| out.received.get_mut(i)) {
                    Some(slot @ None) => {
                        *slot = Some(now);
                        seen += 1;
                    }
                    Some(Some(_)) => out.duplicates += 1,
                    None => out.other_events += 1,
                }
                None
            }
            Some(Ok(WatchEvent::Modified(s) | WatchEvent::Deleted(s))) => {
                rv = s.metadata.resource_version.unwrap_or(rv);
                out.other_events += 1;
                None
            }
            Some(Ok(WatchEvent::Bookmark(b))) => {
                rv = b.metadata.resource_version;
                None
            }
            Some(Ok(WatchEvent::Error(e))) => Some(format!("watch error event: {e:?}")),
            Some(Err(e)) => Some(format!("watch stream failed: {e}")),
            None => Some("watch stream ended".to_string()),
        };
        let Some(why) = ended else { continue };
        if out.rewatches >= MAX_REWATCHES {
            out.error = Some(format!("{why}; gave up after {MAX_REWATCHES} re-watches"));
            break;
        }
        out.rewatches += 1;
        let wp = WatchParams::default().timeout(WATCH_SECONDS);
        match bounded("re-watching services", REQUEST_TIMEOUT, api.watch(&wp, &rv)).await {
            Ok(s) => stream = s.boxed(),
            Err(e) => {
                out.error = Some(format!("{why}; re-watch failed: {e:#}"));
                break;
            }
        }
    }
    out
}

/// Reads a memory field of the server, failing if the process is gone.
fn rss(server: &Target, field: &str) -> Result<u64> {
    proc_status_bytes(server.pid, field)
        .ok_or_else(|| anyhow!("cannot read {field} of pid {} (has it exited?)", server.pid))
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Everything measured in one run.
struct Measured {
    n: usize,
    c: usize,
    w: usize,
    create_wall: Duration,
    /// Sorted create latencies (request sent to response decoded).
    create_lat: Vec<Duration>,
    /// Sorted watch delivery latencies, clamped at 0.
    delivery: Vec<Duration>,
    early: usize,
    missing: usize,
    duplicates: usize,
    other_events: usize,
    rewatches: usize,
    watch_errors: Vec<String>,
    typed: Vec<Duration>,
    raw: Vec<Duration>,
    raw_bytes: usize,
    rss_creates: u64,
    hwm_creates: u64,
    rss_lists: u64,
    hwm_lists: u64,
    server_cpu_creates: Duration,
    client_cpu_creates: Duration,
    server_cpu_lists: Duration,
    db: u64,
    wal: u64,
}

/// Starts the server in a sealed network namespace (it runs a whole node, which takes
/// addresses and programs nftables where it runs), measures from a client thread inside that
/// namespace, stops and removes everything, prints the report.
pub fn run(args: &ApiArgs, pier: &Path) -> Result<()> {
    let machine = machine();
    for r in sealed::remove_stale(None) {
        eprintln!("xtask: removed what an earlier killed run left: {r}");
    }
    let mut cluster = Sealed::create(None)?;
    eprintln!("xtask: starting {} server in the sealed network namespace {}", pier.display(), cluster.netns);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(cluster.start(pier, &args.common.server_env))?;
    let target = Target { kubeconfig: cluster.kubeconfig(), pid: cluster.pid, data_dir: cluster.data_dir.clone() };
    let netns = format!("/run/netns/{}", cluster.netns);
    let client_args = args.clone();
    // The client's runtime is built on a thread inside the namespace: its worker threads are
    // created from that thread and so start there too.
    let outcome = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || -> Result<Measured> {
            sealed::enter_netns(&netns)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            rt.block_on(measure(&client_args, &target))
        })
        .context("starting the client thread")?
        .join()
        .map_err(|_| anyhow!("the client thread panicked"))?;
    let measured = match outcome {
        Ok(m) => m,
        // A failure caused by the server dying says so, with the end of its log.
        Err(e) => match cluster.check_alive() {
            Err(dead) => return Err(e.context(format!("{dead:#}"))),
            Ok(()) => return Err(e),
        },
    };
    cluster.check_alive()?;
    drop(cluster);
    report(args, pier, &machine, &measured);
    Ok(())
}

async fn measure(args: &ApiArgs, server: &Target) -> Result<Measured> {
    let n = args.services as usize;
    let c = args.concurrency as usize;
    let w = args.watchers as usize;
    let pid = server.pid.to_string();
    let client = client(server).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    bounded("creating the bench namespace", REQUEST_TIMEOUT, namespaces.create(&PostParams::default(), &ns)).await?;
    let api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let empty = bounded("listing the empty namespace", LIST_TIMEOUT, api.list(&ListParams::default())).await?;
    ensure!(empty.items.is_empty(), "the bench namespace is not empty");
    let rv = empty.metadata.resource_version.unwrap_or_default();

    // Watchers first: a watch is registered in the server before its response headers arrive.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watchers = Vec::new();
    for _ in 0..w {
        let wp = WatchParams::default().timeout(WATCH_SECONDS);
        let stream = bounded("starting a watch", REQUEST_TIMEOUT, api.watch(&wp, &rv)).await?.boxed();
        watchers.push(tokio::spawn(watcher(api.clone(), stream, rv.clone(), n, stop_rx.clone())));
    }

    eprintln!("xtask: creating {n} Services, {c} in flight, {w} watcher(s)");
    let server_cpu0 = proc_cpu(&pid).unwrap_or_default();
    let client_cpu0 = proc_cpu("self").unwrap_or_default();
    let t0 = Instant::now();
    let mut created: Vec<(usize, Instant, Duration, String)> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let body = service(i)?;
                let start = Instant::now();
                let svc = bounded(&format!("creating Service {}", name(i)), REQUEST_TIMEOUT, async {
                    api.create(&PostParams::default(), &body).await
                })
                .await?;
                let done = Instant::now();
                let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
                Ok::<_, anyhow::Error>((i, done, done - start, ip))
            }
        })
        .buffer_unordered(c)
        .try_collect()
        .await?;
    let create_wall = t0.elapsed();
    let server_cpu_creates = proc_cpu(&pid).unwrap_or_default().saturating_sub(server_cpu0);
    let client_cpu_creates = proc_cpu("self").unwrap_or_default().saturating_sub(client_cpu0);
    let rss_creates = rss(server, "VmRSS")?;
    let hwm_creates = rss(server, "VmHWM")?;
    created.sort_by_key(|c| c.0);
    let distinct_ips: HashSet<&str> = created.iter().map(|c| c.3.as_str()).filter(|ip| !ip.is_empty()).collect();
    ensure!(
        distinct_ips.len() == n,
        "expected {n} distinct ClusterIPs, got {} (a create answered without one, or an IP was handed out twice)",
        distinct_ips.len()
    );
    let mut create_lat: Vec<Duration> = created.iter().map(|c| c.2).collect();
    create_lat.sort();

    // Let the watchers catch up, then stop whatever is still running.
    let mut all = std::pin::pin!(join_all(watchers));
    let outcomes = tokio::select! {
        r = &mut all => r,
        _ = tokio::time::sleep(WATCH_SETTLE) => {
            let _ = stop_tx.send(true);
            tokio::time::timeout(REQUEST_TIMEOUT, &mut all).await.map_err(|_| anyhow!("watchers did not stop"))?
        }
    };
    let _ = stop_tx.send(true);
    let mut delivery = Vec::with_capacity(n * w);
    let (mut early, mut missing, mut duplicates, mut other_events, mut rewatches) = (0, 0, 0, 0, 0);
    let mut watch_errors = Vec::new();
    for o in outcomes {
        let o = o.context("a watcher task panicked")?;
        for (i, recv) in o.received.iter().enumerate() {
            match recv {
                Some(recv) => {
                    let resp = created[i].1;
                    if *recv < resp {
                        early += 1;
                    }
                    delivery.push(recv.saturating_duration_since(resp));
                }
                None => missing += 1,
            }
        }
        duplicates += o.duplicates;
        other_events += o.other_events;
        rewatches += o.rewatches;
        watch_errors.extend(o.error);
    }
    delivery.sort();

    eprintln!("xtask: listing {n} Services {} times (typed) and {} times (raw bytes)", args.lists, args.lists);
    let server_cpu1 = proc_cpu(&pid).unwrap_or_default();
    let mut typed = Vec::new();
    for _ in 0..args.lists {
        let t = Instant::now();
        let list = bounded("listing the Services", LIST_TIMEOUT, api.list(&ListParams::default())).await?;
        typed.push(t.elapsed());
        ensure!(list.items.len() == n, "the list returned {} Services, expected {n}", list.items.len());
    }
    let mut raw = Vec::new();
    let mut raw_bytes = 0;
    for _ in 0..args.lists {
        let req = kube::core::Request::new(format!("/api/v1/namespaces/{NAMESPACE}/services"))
            .list(&ListParams::default())
            .context("building the list request")?;
        let t = Instant::now();
        let text = bounded("listing the Services (raw)", LIST_TIMEOUT, client.request_text(req)).await?;
        raw.push(t.elapsed());
        raw_bytes = text.len();
    }
    let server_cpu_lists = proc_cpu(&pid).unwrap_or_default().saturating_sub(server_cpu1);
    Ok(Measured {
        n,
        c,
        w,
        create_wall,
        create_lat,
        delivery,
        early,
        missing,
        duplicates,
        other_events,
        rewatches,
        watch_errors,
        typed,
        raw,
        raw_bytes,
        rss_creates,
        hwm_creates,
        rss_lists: rss(server, "VmRSS")?,
        hwm_lists: rss(server, "VmHWM")?,
        server_cpu_creates,
        client_cpu_creates,
        server_cpu_lists,
        db: file_size(&server.data_dir.join("pier.db")),
        wal: file_size(&server.data_dir.join("pier.db-wal")),
    })
}

fn report(args: &ApiArgs, pier: &Path, m: &Machine, r: &Measured) {
    let Measured { n, c, w, .. } = *r;
    let creates_per_s = n as f64 / r.create_wall.as_secs_f64();
    let typed_median = median(&r.typed);
    let typed_max = r.typed.iter().copied().max().unwrap_or_default();
    let p99 = percentile(&r.delivery, 0.99);
    let rows: Vec<(String, String, String, &str)> = vec![
        (
            format!("creates/s ({n} Services, {c} in flight)"),
            format!(">= {GOAL_CREATES_PER_S:.0}/s"),
            format!("{creates_per_s:.0}/s ({:.2} s)", r.create_wall.as_secs_f64()),
            verdict(creates_per_s >= GOAL_CREATES_PER_S),
        ),
        (
            format!("full list of {n}, median of {}", r.typed.len()),
            format!("< {}", ms(GOAL_LIST)),
            format!("{} (max {})", ms(typed_median), ms(typed_max)),
            verdict(typed_median < GOAL_LIST),
        ),
        if w == 0 {
            ("watch delivery p99".into(), format!("< {}", ms(GOAL_WATCH_P99)), "no watchers".into(), "n/a")
        } else {
            (
                format!("watch delivery p99 ({w} watcher(s))"),
                format!("< {}", ms(GOAL_WATCH_P99)),
                if r.missing == 0 { ms(p99) } else { format!("{} ({} events missing)", ms(p99), r.missing) },
                verdict(p99 < GOAL_WATCH_P99 && r.missing == 0),
            )
        },
        (
            "server RSS after the creates".into(),
            format!("< {}", mb(GOAL_RSS_BYTES)),
            mb(r.rss_creates),
            verdict(r.rss_creates < GOAL_RSS_BYTES),
        ),
        (
            "server RSS after the lists".into(),
            format!("< {}", mb(GOAL_RSS_BYTES)),
            mb(r.rss_lists),
            verdict(r.rss_lists < GOAL_RSS_BYTES),
        ),
        (
            "server peak RSS (VmHWM)".into(),
            format!("< {}", mb(GOAL_RSS_BYTES)),
            mb(r.hwm_lists),
            verdict(r.hwm_lists < GOAL_RSS_BYTES),
        ),
    ];

    println!();
    println!("pier API server benchmark (issue 2)");
    println!(
        "machine: {} CPUs ({}), {}, {} RAM; pier {} ({})",
        m.cpus,
        m.model,
        m.kernel,
        m.memory,
        revision(),
        pier.display()
    );
    let env: String = args.common.server_env.iter().map(|(k, v)| format!(" --server-env {k}={v}")).collect();
    println!(
        "command: cargo xtask bench api --services {n} --concurrency {c} --watchers {w} --lists {}{env}",
        args.lists
    );
    println!();
    print_table(&rows);
    println!();
    println!("details:");
    println!(
        "  create latency:       p50 {}, p99 {}, max {}",
        ms(percentile(&r.create_lat, 0.5)),
        ms(percentile(&r.create_lat, 0.99)),
        ms(r.create_lat.last().copied().unwrap_or_default())
    );
    if w > 0 {
        println!(
            "  watch delivery:       p50 {}, p99 {}, max {} over {} events; {} arrived before the create response (counted as 0)",
            ms(percentile(&r.delivery, 0.5)),
            ms(p99),
            ms(r.delivery.last().copied().unwrap_or_default()),
            r.delivery.len(),
            r.early
        );
        println!(
            "  watch bookkeeping:    {} missing, {} duplicate, {} other events, {} re-watches",
            r.missing, r.duplicates, r.other_events, r.rewatches
        );
        for e in &r.watch_errors {
            println!("  watch error:          {e}");
        }
    }
    let list = |samples: &[Duration]| samples.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
    println!("  list, typed (kube):   {}", list(&r.typed));
    println!(
        "  list, raw bytes:      {} (median {}, max {}; {} per list)",
        list(&r.raw),
        ms(median(&r.raw)),
        ms(r.raw.iter().copied().max().unwrap_or_default()),
        mb(r.raw_bytes as u64)
    );
    println!("  server VmHWM:         {} after the creates, {} after the lists", mb(r.hwm_creates), mb(r.hwm_lists));
    println!(
        "  CPU during creates:   server {:.2} s, benchmark client {:.2} s (wall {:.2} s)",
        r.server_cpu_creates.as_secs_f64(),
        r.client_cpu_creates.as_secs_f64(),
        r.create_wall.as_secs_f64()
    );
    println!(
        "  server CPU in lists:  {:.2} s for {} lists",
        r.server_cpu_lists.as_secs_f64(),
        r.typed.len() + r.raw.len()
    );
    println!("  SQLite:               pier.db {}, pier.db-wal {}", mb(r.db), mb(r.wal));
}
