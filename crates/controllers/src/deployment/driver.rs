//! The async driver of the Deployment controller. Deployment changes enqueue themselves; a
//! ReplicaSet change enqueues its controlling Deployment (old and new) or, for an orphan, the
//! Deployments that could adopt it; a deleted pod enqueues the Deployment of its ReplicaSet
//! (Recreate waits for old pods to be gone). A worker applies [`super::reconcile_deployment`]
//! and waits until the ReplicaSet and Deployment caches show its writes.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use super::DeploymentInputs;
use crate::objects::{self, ObjectKey};
use crate::runtime::{
    CACHE_CATCH_UP, Change, Informer, Informers, ReconcileResult, Shutdown, WorkQueue, apply_all, forward, forward_own,
    run_workers,
};
use crate::write::Write;
use crate::{ControllerConfig, ControllerError};

struct Ctx {
    client: kube::Client,
    informers: Informers,
    deployments: Informer<Deployment>,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
}

fn all(deployments: &Informer<Deployment>) -> Vec<ObjectKey> {
    deployments.state().iter().map(|d| ObjectKey::of(&d.metadata)).collect()
}

pub(crate) async fn run(
    client: kube::Client,
    config: ControllerConfig,
    informers: Informers,
    stop: Shutdown,
) -> Result<(), ControllerError> {
    let ctx = Arc::new(Ctx {
        client,
        deployments: informers.deployments(),
        replica_sets: informers.replica_sets(),
        pods: informers.pods(),
        informers,
    });
    let queue = WorkQueue::new();

    let ds = ctx.deployments.clone();
    forward_own(&ctx.deployments, queue.clone(), stop.clone(), move || all(&ds));
    let ds = ctx.deployments.clone();
    forward(&ctx.replica_sets, queue.clone(), stop.clone(), move |c| {
        let state = ds.state();
        let iter = state.iter().map(|d| d.as_ref());
        match c {
            Change::Applied { old, new } => super::deployments_for_replica_set(iter, &[old.as_deref(), Some(new)]),
            Change::Deleted(rs) => super::deployments_for_replica_set(iter, &[Some(rs)]),
            Change::Resync => Vec::new(),
        }
    });
    let (ds, rss) = (ctx.deployments.clone(), ctx.replica_sets.clone());
    forward(&ctx.pods, queue.clone(), stop.clone(), move |c| match c {
        Change::Deleted(pod) => {
            let Some(owner) = objects::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") else {
                return Vec::new();
            };
            let state = rss.state();
            let Some(rs) = state.iter().find(|rs| objects::uid(&rs.metadata) == owner.uid) else { return Vec::new() };
            let deployments = ds.state();
            super::deployments_for_replica_set(deployments.iter().map(|d| d.as_ref()), &[Some(rs)])
        }
        _ => Vec::new(),
    });

    tokio::select! {
        _ = stop.wait() => return Ok(()),
        _ = async { tokio::join!(ctx.deployments.ready(), ctx.replica_sets.ready(), ctx.pods.ready()) } => {}
    }
    tracing::info!(controller = "deployment", "caches synced; starting workers");
    for key in all(&ctx.deployments) {
        queue.add(key);
    }
    let workers = config.deployment_workers;
    run_workers("deployment", queue, workers, stop, move |key| reconcile(ctx.clone(), key)).await;
    Ok(())
}

async fn reconcile(ctx: Arc<Ctx>, key: ObjectKey) -> ReconcileResult {
    let Some(d) = ctx.deployments.get(&key.namespace, &key.name) else { return Ok(None) };
    let rss = ctx.replica_sets.in_namespace(&key.namespace);
    let pods = ctx.pods.in_namespace(&key.namespace);
    let now = Timestamp::now();
    let inputs = DeploymentInputs {
        deployment: &d,
        replica_sets: rss.iter().map(|r| r.as_ref()).collect(),
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        now,
    };
    let writes = super::reconcile_deployment(&inputs);
    if writes.is_empty() {
        return Ok(super::requeue_after(&d, now));
    }
    let creates = writes.iter().any(|w| matches!(w, Write::Create { kind: crate::Kind::ReplicaSet, .. }));
    if creates
        && !crate::write::owner_exists(
            &ctx.client,
            crate::Kind::Deployment,
            &key.namespace,
            &key.name,
            objects::uid(&d.metadata),
        )
        .await?
    {
        return Ok(None);
    }
    // A failed ReplicaSet create is reported in the Progressing condition, as upstream.
    match apply_all(&ctx.client, &writes).await {
        Ok(seen) => {
            ctx.informers.wait_seen(&seen, CACHE_CATCH_UP).await;
            Ok(None)
        }
        Err(e) => {
            let failed_create =
                writes.iter().find(|w| matches!(w, Write::Create { kind: crate::Kind::ReplicaSet, .. }));
            if let (Some(Write::Create { object, .. }), false) = (failed_create, e.is_conflict()) {
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let msg = format!("Failed to create new replica set {name:?}: {}", e.message);
                report_create_failure(&ctx, &d, &msg, now).await;
            }
            Err(e.into())
        }
    }
}

/// `ReplicaSetCreateError`: a Warning event and, with a progress deadline, the Progressing
/// condition set to False.
async fn report_create_failure(ctx: &Ctx, d: &Deployment, msg: &str, now: Timestamp) {
    let reference = objects::object_reference("apps/v1", "Deployment", &d.metadata);
    let ev =
        objects::event(&reference, "Warning", super::util::REASON_RS_CREATE_ERROR, msg, "deployment-controller", now);
    let mut writes = vec![objects::event_write(&ev)];
    if super::util::progress_deadline(d).is_some() {
        let mut updated = d.clone();
        updated.metadata.managed_fields = None;
        let status = updated.status.get_or_insert_with(Default::default);
        let c = super::util::new_condition("Progressing", "False", super::util::REASON_RS_CREATE_ERROR, msg, now);
        super::util::set_condition(status, c);
        writes.push(Write::ReplaceStatus {
            kind: crate::Kind::Deployment,
            namespace: objects::namespace(&d.metadata).to_string(),
            name: objects::name(&d.metadata).to_string(),
            object: objects::to_value(&updated),
        });
    }
    for w in &writes {
        let _ = crate::write::apply(&ctx.client, w).await;
    }
}
