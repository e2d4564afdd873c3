//! The async driver of the EndpointSlice controller: Service, Pod, EndpointSlice and Node
//! watches map to Service keys; a worker reads the caches, calls
//! [`super::reconcile_endpoint_slices`] and applies the writes.
//!
//! Which events enqueue a Service, as upstream: any change of the Service; a pod change that can
//! move an endpoint (for the Services selecting the old or the new labels); any change of a
//! slice this controller manages (so a deleted slice is recreated); a new Node (pods waiting
//! for their Node).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, SliceInputs};
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
    slices: Informer<EndpointSlice>,
    nodes: Informer<Node>,
    max_endpoints_per_slice: usize,
}

fn all_services(services: &Informer<Service>) -> Vec<ObjectKey> {
    services.state().iter().map(|s| ObjectKey::of(&s.metadata)).collect()
}

/// The Service a managed slice belongs to.
pub(crate) fn slice_service(slice: &EndpointSlice, manager: &str) -> Option<ObjectKey> {
    let labels = objects::labels(&slice.metadata);
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(manager) {
        return None;
    }
    let svc = labels.get(LABEL_SERVICE_NAME).filter(|s| !s.is_empty())?;
    Some(ObjectKey::new(objects::namespace(&slice.metadata), svc.clone()))
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
        slices: informers.slices(),
        nodes: informers.nodes(),
        informers,
        max_endpoints_per_slice: config.max_endpoints_per_slice,
    });
    let queue = WorkQueue::new();

    let services = ctx.services.clone();
    forward_own(&ctx.services, queue.clone(), stop.clone(), move || all_services(&services));
    let services = ctx.services.clone();
    forward(&ctx.pods, queue.clone(), stop.clone(), move |c| services_for_pod_change(&services, c));
    forward(&ctx.slices, queue.clone(), stop.clone(), move |c| match c {
        Change::Applied { new, .. } => slice_service(new, CONTROLLER_NAME).into_iter().collect(),
        Change::Deleted(slice) => slice_service(slice, CONTROLLER_NAME).into_iter().collect(),
        Change::Resync => Vec::new(),
    });
    let services = ctx.services.clone();
    forward(&ctx.nodes, queue.clone(), stop.clone(), move |c| match c {
        Change::Applied { old: None, .. } | Change::Resync => all_services(&services),
        _ => Vec::new(),
    });

    tokio::select! {
        _ = stop.wait() => return Ok(()),
        _ = async { tokio::join!(ctx.services.ready(), ctx.pods.ready(), ctx.slices.ready(), ctx.nodes.ready()) } => {}
    }
    tracing::info!(controller = "endpointslice", "caches synced; starting workers");
    for key in all_services(&ctx.services) {
        queue.add(key);
    }
    let workers = config.endpointslice_workers;
    run_workers("endpointslice", queue, workers, stop, move |key| reconcile(ctx.clone(), key)).await;
    Ok(())
}

/// The Services a pod event concerns, as both endpoint controllers map pod events (upstream's
/// `getPodServiceMemberships`). The cache is read only for a change that can move an endpoint:
/// status noise is dropped before touching every Service.
pub(crate) fn services_for_pod_change(services: &Informer<Service>, c: &Change<Pod>) -> Vec<ObjectKey> {
    if let Change::Applied { old: Some(old), new } = c
        && !super::pod_change_matters(old, new)
    {
        return Vec::new();
    }
    let state = services.state();
    let svcs = state.iter().map(|s| s.as_ref());
    match c {
        Change::Applied { old, new } => super::services_for_pod(svcs, &[old.as_deref(), Some(new)]),
        Change::Deleted(pod) => super::services_for_pod(svcs, &[Some(pod)]),
        Change::Resync => state.iter().map(|s| ObjectKey::of(&s.metadata)).collect(),
    }
}

async fn reconcile(ctx: Arc<Ctx>, key: ObjectKey) -> ReconcileResult {
    // A deleted Service's slices go with it: they are owned by it.
    let Some(svc) = ctx.services.get(&key.namespace, &key.name) else { return Ok(None) };
    let pods = ctx.pods.in_namespace(&key.namespace);
    let nodes = ctx.nodes.state();
    let slices: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .in_namespace(&key.namespace)
        .into_iter()
        .filter(|s| slice_service(s, CONTROLLER_NAME).as_ref() == Some(&key))
        .collect();
    let inputs = SliceInputs {
        service: &svc,
        pods: pods.iter().map(|p| p.as_ref()).collect(),
        nodes: nodes.iter().map(|n| n.as_ref()).collect(),
        slices: slices.iter().map(|s| s.as_ref()).collect(),
        max_endpoints_per_slice: ctx.max_endpoints_per_slice,
        now: Timestamp::now(),
    };
    let writes = super::reconcile_endpoint_slices(&inputs);
    let waiting = super::waiting_for_nodes(&inputs);
    let creates = writes.iter().any(|w| matches!(w, crate::Write::Create { .. }));
    if creates
        && !crate::write::owner_exists(
            &ctx.client,
            crate::Kind::Service,
            &key.namespace,
            &key.name,
            objects::uid(&svc.metadata),
        )
        .await?
    {
        tracing::debug!("the Service is gone; not creating slices for it");
        return Ok(None);
    }
    if !writes.is_empty() {
        tracing::debug!(writes = writes.len(), "updating EndpointSlices");
        match apply_all(&ctx.client, &writes).await {
            Ok(seen) => ctx.informers.wait_seen(&seen, CACHE_CATCH_UP).await,
            Err(e) => {
                let reference = objects::object_reference("v1", "Service", &svc.metadata);
                let message = format!("Error updating Endpoint Slices for Service {key}: {e}");
                let ev = objects::event(
                    &reference,
                    "Warning",
                    "FailedToUpdateEndpointSlices",
                    &message,
                    "endpoint-slice-controller",
                    Timestamp::now(),
                );
                let _ = crate::write::apply(&ctx.client, &objects::event_write(&ev)).await;
                return Err(e.into());
            }
        }
    }
    Ok(waiting.then_some(Duration::from_secs(5)))
}
