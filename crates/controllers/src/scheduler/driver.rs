//! The async driver of the scheduler: one worker (placements depend on each other through the
//! pod counts), keyed by pod. A pod that needs scheduling is enqueued on every change; every
//! pending pod is enqueued again when a node is added, changed or removed (`kubectl label node
//! n gpu=true` makes a waiting pod fit) and five minutes after it was found unschedulable, as
//! upstream flushes its unschedulable queue.
//!
//! As upstream's scheduler does, the worker *assumes* a placement (the pod counts on its node
//! from then on) and binds in the background, so the next pod is placed without waiting for the
//! bind's round trip; the assumption ends once the pod cache shows the bind, or the bind fails
//! (the pod is tried again after a back-off of 1 s, doubling up to 10 s, upstream's pod
//! back-off).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::ControllerError;
use crate::objects::{self, ObjectKey};
use crate::runtime::{
    CACHE_CATCH_UP, Change, Informer, Informers, ReconcileResult, Shutdown, WorkQueue, apply_all, forward, run_workers,
};
use crate::write::{self, Kind, Write};

/// How long an unschedulable pod waits before it is tried again without a node change.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(300);
/// The first retry after a failed bind, doubling with each failure up to the maximum.
const BIND_BACKOFF: Duration = Duration::from_secs(1);
const BIND_BACKOFF_MAX: Duration = Duration::from_secs(10);

struct Ctx {
    client: kube::Client,
    informers: Informers,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    queue: Arc<WorkQueue<ObjectKey>>,
    /// Pods placed whose bind is in flight or not yet in the pod cache, with their node.
    assumed: Mutex<HashMap<ObjectKey, String>>,
    /// Per pod, the last bind failure reported (so retries do not repeat the event) and how
    /// many binds have failed in a row.
    bind_failures: Mutex<HashMap<ObjectKey, (String, u32)>>,
}

fn pending(pods: &Informer<Pod>) -> Vec<ObjectKey> {
    pods.state().iter().filter(|p| super::needs_scheduling(p)).map(|p| ObjectKey::of(&p.metadata)).collect()
}

pub(crate) async fn run(client: kube::Client, informers: Informers, stop: Shutdown) -> Result<(), ControllerError> {
    let queue = WorkQueue::new();
    let ctx = Arc::new(Ctx {
        client,
        pods: informers.pods(),
        nodes: informers.nodes(),
        informers,
        queue: queue.clone(),
        assumed: Mutex::new(HashMap::new()),
        bind_failures: Mutex::new(HashMap::new()),
    });

    let pods = ctx.pods.clone();
    forward(&ctx.pods, queue.clone(), stop.clone(), move |c| match c {
        Change::Applied { new, .. } if super::needs_scheduling(new) => vec![ObjectKey::of(&new.metadata)],
        Change::Resync => pending(&pods),
        _ => Vec::new(),
    });
    let pods = ctx.pods.clone();
    forward(&ctx.nodes, queue.clone(), stop.clone(), move |c| match c {
        Change::Applied { old: Some(old), new }
            if old.metadata.labels == new.metadata.labels && old.spec == new.spec && same_readiness(old, new) =>
        {
            Vec::new()
        }
        _ => pending(&pods),
    });

    tokio::select! {
        _ = stop.wait() => return Ok(()),
        _ = async { tokio::join!(ctx.pods.ready(), ctx.nodes.ready()) } => {}
    }
    tracing::info!(controller = "scheduler", "caches synced; starting");
    for key in pending(&ctx.pods) {
        queue.add(key);
    }
    run_workers("scheduler", queue, 1, stop, move |key| reconcile(ctx.clone(), key)).await;
    Ok(())
}

fn same_readiness(a: &Node, b: &Node) -> bool {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    ready(a) == ready(b)
}

async fn reconcile(ctx: Arc<Ctx>, key: ObjectKey) -> ReconcileResult {
    if assumed(&ctx).contains_key(&key) {
        // Its bind is in flight; a failed bind puts the pod back in the queue.
        return Ok(None);
    }
    let pod = ctx.pods.get(&key.namespace, &key.name);
    let Some(pod) = pod.filter(|p| super::needs_scheduling(p)) else {
        failures(&ctx).remove(&key);
        return Ok(None);
    };
    // Assumed pods count on their node until the cache shows them there. Read before the
    // cache: an assumption ends only once the cache has the bind.
    let assumed_now = assumed(&ctx).clone();
    let nodes = ctx.nodes.state();
    let pods = ctx.pods.state();
    let placed: Vec<Pod> = pods
        .iter()
        .filter(|p| objects::node_name(p).is_empty())
        .filter_map(|p| {
            let node = assumed_now.get(&ObjectKey::of(&p.metadata))?;
            let mut p = Pod::clone(p);
            p.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
            Some(p)
        })
        .collect();
    let now = Timestamp::now();
    let writes = super::schedule(
        &pod,
        &nodes.iter().map(|n| n.as_ref()).collect::<Vec<_>>(),
        &pods.iter().map(|p| p.as_ref()).chain(&placed).collect::<Vec<_>>(),
        now,
    );
    let Some(Write::Bind { node, .. }) = writes.first() else {
        // Unschedulable: the condition and event (unless unchanged), then wait.
        if !writes.is_empty() {
            let seen = apply_all(&ctx.client, &writes).await?;
            ctx.informers.wait_seen(&seen, CACHE_CATCH_UP).await;
        }
        return Ok(Some(UNSCHEDULABLE_RETRY));
    };
    assumed(&ctx).insert(key.clone(), node.clone());
    tokio::spawn(bind(ctx.clone(), key, pod, writes, now));
    Ok(None)
}

/// Binds an assumed pod, then writes what follows a bind (the `Scheduled` event).
async fn bind(ctx: Arc<Ctx>, key: ObjectKey, pod: Arc<Pod>, writes: Vec<Write>, now: Timestamp) {
    let Some(Write::Bind { node, .. }) = writes.first() else { return };
    match write::apply(&ctx.client, &writes[0]).await {
        Ok(applied) => {
            tracing::info!(pod = %key, node = %node, "pod bound");
            failures(&ctx).remove(&key);
            let rv = applied.resource_version.unwrap_or(0);
            ctx.informers.wait_seen(&HashMap::from([(Kind::Pod, rv)]), CACHE_CATCH_UP).await;
            assumed(&ctx).remove(&key);
            let mut rest: Vec<Write> = writes[1..].to_vec();
            if let Some(bound) = ctx.pods.get(&key.namespace, &key.name) {
                rest.extend(super::scheduled(&bound, now));
            }
            if let Err(e) = apply_all(&ctx.client, &rest).await {
                tracing::warn!(pod = %key, error = %e, "writing the Scheduled event failed");
            }
        }
        Err(e) => {
            assumed(&ctx).remove(&key);
            let message = format!("binding rejected: running Bind plugin \"DefaultBinder\": {}", e.message);
            let (repeated, attempts) = {
                let mut failures = failures(&ctx);
                let entry = failures.entry(key.clone()).or_insert_with(|| (String::new(), 0));
                let repeated = entry.0 == message;
                entry.0.clone_from(&message);
                entry.1 += 1;
                (repeated, entry.1)
            };
            if !repeated {
                let reference = objects::object_reference("v1", "Pod", &pod.metadata);
                let ev =
                    objects::event(&reference, "Warning", "FailedScheduling", &message, super::SCHEDULER_NAME, now);
                let _ = write::apply(&ctx.client, &objects::event_write(&ev)).await;
            }
            tracing::warn!(pod = %key, error = %message, "bind failed; will retry");
            let backoff = BIND_BACKOFF.saturating_mul(1 << attempts.saturating_sub(1).min(4)).min(BIND_BACKOFF_MAX);
            ctx.queue.add_after(key, backoff);
        }
    }
}

fn assumed(ctx: &Ctx) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, String>> {
    ctx.assumed.lock().unwrap_or_else(|p| p.into_inner())
}

fn failures(ctx: &Ctx) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, (String, u32)>> {
    ctx.bind_failures.lock().unwrap_or_else(|p| p.into_inner())
}
