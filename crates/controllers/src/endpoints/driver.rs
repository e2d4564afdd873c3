//! The async driver of the Endpoints controller: Service and Pod watches map to Service keys,
//! as upstream; Endpoints deletions enqueue their key (a deleted managed Endpoints is
//! recreated); at start every Service and every managed Endpoints is looked at
//! (`checkLeftoverEndpoints`). A worker calls [`super::reconcile_endpoints`].
//!
//! Adding or changing an Endpoints does not enqueue anything, so a hand-written Endpoints
//! created before its Service is never mistaken for a leftover.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};

use super::EndpointsInputs;
use crate::endpointslice;
use crate::objects::{self, ObjectKey};
use crate::runtime::{
    CACHE_CATCH_UP, Change, Informer, Informers, ReconcileResult, Shutdown, WorkQueue, apply_all, forward, forward_own,
    run_workers,
};
use crate::{ControllerConfig, ControllerError};

struct Ctx {
    client: kube::Client,
    informers: Informers,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
}

fn resync(services: &Informer<Service>, endpoints: &Informer<Endpoints>) -> Vec<ObjectKey> {
    let (svcs, eps) = (services.state(), endpoints.state());
    super::resync_keys(svcs.iter().map(|s| s.as_ref()), eps.iter().map(|e| e.as_ref()))
}

pub(crate) async fn run(
    client: kube::Client,
    config: ControllerConfig,
    informers: Informers,
    stop: Shutdown,
) -> Result<(), ControllerError> {
    let ctx = Arc::new(Ctx {
        client,
        services: informers.services(),
        pods: informers.pods(),
        endpoints: informers.endpoints(),
        informers,
    });
    let queue = WorkQueue::new();

    let (services, endpoints) = (ctx.services.clone(), ctx.endpoints.clone());
    forward_own(&ctx.services, queue.clone(), stop.clone(), move || resync(&services, &endpoints));
    let services = ctx.services.clone();
    forward(&ctx.pods, queue.clone(), stop.clone(), move |c| {
        endpointslice::driver::services_for_pod_change(&services, c)
    });
    forward(&ctx.endpoints, queue.clone(), stop.clone(), move |c| match c {
        Change::Deleted(ep) => vec![ObjectKey::of(&ep.metadata)],
        _ => Vec::new(),
    });

    tokio::select! {
        _ = stop.wait() => return Ok(()),
        _ = async { tokio::join!(ctx.services.ready(), ctx.pods.ready(), ctx.endpoints.ready()) } => {}
    }
    tracing::info!(controller = "endpoints", "caches synced; starting workers");
    for key in resync(&ctx.services, &ctx.endpoints) {
        queue.add(key);
    }
    let workers = config.endpoints_workers;
    run_workers("endpoints", queue, workers, stop, move |key| reconcile(ctx.clone(), key)).await;
    Ok(())
}

async fn reconcile(ctx: Arc<Ctx>, key: ObjectKey) -> ReconcileResult {
    let service = ctx.services.get(&key.namespace, &key.name);
    let existing = ctx.endpoints.get(&key.namespace, &key.name);
    let pods = ctx.pods.in_namespace(&key.namespace);
    let inputs = EndpointsInputs {
        key: key.clone(),
        service: service.as_deref(),
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        existing: existing.as_deref(),
        now: Timestamp::now(),
    };
    let writes = super::reconcile_endpoints(&inputs);
    if writes.is_empty() {
        return Ok(None);
    }
    if let (Some(crate::Write::Create { .. }), Some(svc)) = (writes.first(), service.as_deref()) {
        let uid = objects::uid(&svc.metadata);
        if !crate::write::owner_exists(&ctx.client, crate::Kind::Service, &key.namespace, &key.name, uid).await? {
            return Ok(None);
        }
    }
    match apply_all(&ctx.client, &writes).await {
        Ok(seen) => {
            ctx.informers.wait_seen(&seen, CACHE_CATCH_UP).await;
            Ok(None)
        }
        Err(e) => {
            if let Some(w) = writes.first().filter(|_| !e.is_conflict()) {
                let (reason, what) = match w {
                    crate::Write::Create { .. } => ("FailedToCreateEndpoint", "Failed to create endpoint for service"),
                    _ => ("FailedToUpdateEndpoint", "Failed to update endpoint"),
                };
                let meta = existing.as_ref().map(|e| e.metadata.clone()).unwrap_or_else(|| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(key.name.clone()),
                        namespace: Some(key.namespace.clone()),
                        ..Default::default()
                    }
                });
                let reference = objects::object_reference("v1", "Endpoints", &meta);
                let ev = objects::event(
                    &reference,
                    "Warning",
                    reason,
                    &format!("{what} {key}: {}", e.message),
                    "endpoint-controller",
                    Timestamp::now(),
                );
                let _ = crate::write::apply(&ctx.client, &objects::event_write(&ev)).await;
            }
            Err(e.into())
        }
    }
}
