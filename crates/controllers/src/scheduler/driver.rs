//! The async driver of the scheduler: one worker (placements depend on each other through the
//! pod counts), keyed by pod. A pod that needs scheduling is enqueued on every change; every
//! pending pod is enqueued again when a node is added, changed or removed (`kubectl label node
//! n gpu=true` makes a waiting pod fit) and five minutes after it was found unschedulable, as
//! upstream flushes its unschedulable queue.
//!
//! After a bind the worker waits until the pod cache shows it, so the next pod counts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::ControllerError;
use crate::objects::{self, ObjectKey};
use crate::runtime::{
    CACHE_CATCH_UP, Change, Informer, Informers, ReconcileError, ReconcileResult, Shutdown, WorkQueue, apply_all,
    forward, run_workers,
};
use crate::write::{self, Kind, Write};

/// How long an unschedulable pod waits before it is tried again without a node change.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(300);

struct Ctx {
    client: kube::Client,
    informers: Informers,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    /// The last bind failure reported per pod, so retries do not repeat the event.
    bind_failures: Mutex<HashMap<ObjectKey, String>>,
}

fn pending(pods: &Informer<Pod>) -> Vec<ObjectKey> {
    pods.state().iter().filter(|p| super::needs_scheduling(p)).map(|p| ObjectKey::of(&p.metadata)).collect()
}

pub(crate) async fn run(client: kube::Client, informers: Informers, stop: Shutdown) -> Result<(), ControllerError> {
    let ctx = Arc::new(Ctx {
        client,
        pods: informers.pods(),
        nodes: informers.nodes(),
        informers,
        bind_failures: Mutex::new(HashMap::new()),
    });
    let queue = WorkQueue::new();

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
    let pod = ctx.pods.get(&key.namespace, &key.name);
    let Some(pod) = pod.filter(|p| super::needs_scheduling(p)) else {
        lock(&ctx).remove(&key);
        return Ok(None);
    };
    let nodes = ctx.nodes.state();
    let pods = ctx.pods.state();
    let now = Timestamp::now();
    let writes = super::schedule(
        &pod,
        &nodes.iter().map(|n| n.as_ref()).collect::<Vec<_>>(),
        &pods.iter().map(|p| p.as_ref()).collect::<Vec<_>>(),
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
    match write::apply(&ctx.client, &writes[0]).await {
        Ok(applied) => {
            tracing::info!(node = %node, "pod bound");
            lock(&ctx).remove(&key);
            let rv = applied.resource_version.unwrap_or(0);
            ctx.informers.wait_seen(&HashMap::from([(Kind::Pod, rv)]), CACHE_CATCH_UP).await;
            let mut rest: Vec<Write> = writes[1..].to_vec();
            if let Some(bound) = ctx.pods.get(&key.namespace, &key.name) {
                rest.extend(super::scheduled(&bound, now));
            }
            let seen = apply_all(&ctx.client, &rest).await?;
            ctx.informers.wait_seen(&seen, CACHE_CATCH_UP).await;
            Ok(None)
        }
        Err(e) => {
            let message = format!("binding rejected: running Bind plugin \"DefaultBinder\": {}", e.message);
            let repeated = lock(&ctx).insert(key.clone(), message.clone()).as_deref() == Some(message.as_str());
            if !repeated {
                let reference = objects::object_reference("v1", "Pod", &pod.metadata);
                let ev =
                    objects::event(&reference, "Warning", "FailedScheduling", &message, super::SCHEDULER_NAME, now);
                let _ = write::apply(&ctx.client, &objects::event_write(&ev)).await;
            }
            Err(ReconcileError(message))
        }
    }
}

fn lock(ctx: &Ctx) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, String>> {
    ctx.bind_failures.lock().unwrap_or_else(|p| p.into_inner())
}
