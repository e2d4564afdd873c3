//! The async driver of the ReplicaSet controller. ReplicaSet changes enqueue themselves; a pod
//! change enqueues its controller (old and new) or, for an orphan, the ReplicaSets that could
//! adopt it.
//!
//! A worker applies [`super::manage_replicas`]: claims one by one, creates in upstream's
//! slow-start batches (1, 2, 4, … pods at once; the first failing batch stops the rest), deletes
//! all at once; then the status, with a failed create or delete reported as `ReplicaFailure`.
//! It waits for the pod cache to show its own creates and deletes before the ReplicaSet is
//! looked at again, so a slow watch never makes it create twice.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;

use super::{ManageError, ReplicaSetInputs};
use crate::objects::ObjectKey;
use crate::runtime::{
    CACHE_CATCH_UP, Change, Informer, Informers, ReconcileError, ReconcileResult, Shutdown, WorkQueue, apply_all,
    forward, forward_own, run_workers,
};
use crate::write::{self, Kind, Write};
use crate::{ControllerConfig, ControllerError};

struct Ctx {
    client: kube::Client,
    informers: Informers,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
}

fn all(replica_sets: &Informer<ReplicaSet>) -> Vec<ObjectKey> {
    replica_sets.state().iter().map(|r| ObjectKey::of(&r.metadata)).collect()
}

pub(crate) async fn run(
    client: kube::Client,
    config: ControllerConfig,
    informers: Informers,
    stop: Shutdown,
) -> Result<(), ControllerError> {
    let ctx = Arc::new(Ctx { client, replica_sets: informers.replica_sets(), pods: informers.pods(), informers });
    let queue = WorkQueue::new();

    let rss = ctx.replica_sets.clone();
    forward_own(&ctx.replica_sets, queue.clone(), stop.clone(), move || all(&rss));
    let rss = ctx.replica_sets.clone();
    forward(&ctx.pods, queue.clone(), stop.clone(), move |c| {
        let state = rss.state();
        let iter = state.iter().map(|r| r.as_ref());
        match c {
            Change::Applied { old, new } => super::replica_sets_for_pod(iter, &[old.as_deref(), Some(new)]),
            Change::Deleted(pod) => super::replica_sets_for_pod(iter, &[Some(pod)]),
            Change::Resync => state.iter().map(|r| ObjectKey::of(&r.metadata)).collect(),
        }
    });

    tokio::select! {
        _ = stop.wait() => return Ok(()),
        _ = async { tokio::join!(ctx.replica_sets.ready(), ctx.pods.ready()) } => {}
    }
    tracing::info!(controller = "replicaset", "caches synced; starting workers");
    for key in all(&ctx.replica_sets) {
        queue.add(key);
    }
    let workers = config.replicaset_workers;
    run_workers("replicaset", queue, workers, stop, move |key| reconcile(ctx.clone(), key)).await;
    Ok(())
}

fn merge_seen(into: &mut HashMap<Kind, u64>, kind: Kind, rv: Option<u64>) {
    if let Some(rv) = rv {
        let e = into.entry(kind).or_insert(0);
        *e = (*e).max(rv);
    }
}

async fn reconcile(ctx: Arc<Ctx>, key: ObjectKey) -> ReconcileResult {
    // A deleted ReplicaSet's pods are collected through their owner references.
    let Some(rs) = ctx.replica_sets.get(&key.namespace, &key.name) else { return Ok(None) };
    let pods = ctx.pods.in_namespace(&key.namespace);
    let rss = ctx.replica_sets.in_namespace(&key.namespace);
    let now = Timestamp::now();
    let inputs = ReplicaSetInputs {
        replica_set: &rs,
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        replica_sets: rss.iter().map(|r| r.as_ref()).collect(),
        now,
    };
    let mut plan = super::manage_replicas(&inputs);
    if plan.iter().any(|w| matches!(w, Write::Create { .. }))
        && !write::owner_exists(
            &ctx.client,
            Kind::ReplicaSet,
            &key.namespace,
            &key.name,
            crate::objects::uid(&rs.metadata),
        )
        .await?
    {
        // Deleted on the server already: pods created now would be orphans.
        plan.retain(|w| !matches!(w, Write::Create { .. }));
    }
    let mut seen: HashMap<Kind, u64> = HashMap::new();
    let mut failure: Option<ManageError> = None;

    // Claims first: a pod is adopted or released before anything is counted.
    for w in plan.iter().filter(|w| matches!(w, Write::Patch { .. })) {
        match write::apply(&ctx.client, w).await {
            Ok(a) => merge_seen(&mut seen, Kind::Pod, a.resource_version),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // Creates in slow-start batches.
    let creates: Vec<&Write> = plan.iter().filter(|w| matches!(w, Write::Create { .. })).collect();
    let mut next = 0;
    let mut batch = 1;
    while next < creates.len() {
        let end = (next + batch).min(creates.len());
        let results = join_all(creates[next..end].iter().map(|w| write::apply(&ctx.client, w))).await;
        for r in &results {
            match r {
                Ok(a) => merge_seen(&mut seen, Kind::Pod, a.resource_version),
                Err(e) => {
                    failure.get_or_insert(ManageError { creating: true, message: e.message.clone() });
                }
            }
        }
        if failure.is_some() {
            tracing::info!(skipped = creates.len() - end, "pod creation failed; skipping the rest of this sync");
            break;
        }
        next = end;
        batch *= 2;
    }

    // Deletes all at once.
    let deletes: Vec<&Write> = plan.iter().filter(|w| matches!(w, Write::Delete { .. })).collect();
    let results = join_all(deletes.iter().map(|w| write::apply(&ctx.client, w))).await;
    let mut events = Vec::new();
    for (w, r) in deletes.iter().zip(results) {
        match r {
            Ok(a) => {
                merge_seen(&mut seen, Kind::Pod, a.resource_version);
                if let Write::Delete { name, .. } = w {
                    events.push(super::deleted_event(&rs, name, now));
                }
            }
            Err(e) => {
                failure.get_or_insert(ManageError { creating: false, message: e.message.clone() });
            }
        }
    }
    if let Some(f) = &failure {
        events.push(super::failed_event(&rs, f, now));
    }
    for ev in &events {
        let _ = write::apply(&ctx.client, ev).await;
    }

    // Once the caches show our pod writes, the status is computed from them. (Upstream computes
    // it from the pods as they were before this sync, which leaves a Deployment looking at a
    // stale availableReplicas until the next sync.)
    ctx.informers.wait_seen(&seen, CACHE_CATCH_UP).await;
    let rs = ctx.replica_sets.get(&key.namespace, &key.name).unwrap_or(rs);
    let pods = ctx.pods.in_namespace(&key.namespace);
    let inputs = ReplicaSetInputs {
        replica_set: &rs,
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        replica_sets: rss.iter().map(|r| r.as_ref()).collect(),
        now: Timestamp::now(),
    };
    if let Some(status) = super::replica_set_status(&inputs, failure.as_ref()) {
        let written = apply_all(&ctx.client, std::slice::from_ref(&status)).await?;
        ctx.informers.wait_seen(&written, CACHE_CATCH_UP).await;
    }
    match failure {
        Some(f) => Err(ReconcileError(f.message)),
        None => Ok(super::requeue_after(&inputs)),
    }
}
