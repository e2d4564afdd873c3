//! The async driver of the EndpointSlice mirroring controller: Endpoints, Service and
//! EndpointSlice watches map to Endpoints keys; a worker calls
//! [`super::mirroring::reconcile_mirrored_slices`] and applies the writes.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::driver::slice_service;
use super::mirroring::{self, CONTROLLER_NAME, MirrorInputs};
use crate::objects::ObjectKey;
use crate::runtime::{
    CACHE_CATCH_UP, Change, Informer, Informers, ReconcileResult, Shutdown, WorkQueue, apply_all, forward, run_workers,
};
use crate::{ControllerConfig, ControllerError};

struct Ctx {
    client: kube::Client,
    informers: Informers,
    endpoints: Informer<Endpoints>,
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    max_endpoints_per_subset: usize,
}

fn selectorless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none()
}

/// Every Endpoints, and every Service that has mirrored slices (to clean up after missed
/// deletions).
fn everything(endpoints: &Informer<Endpoints>, slices: &Informer<EndpointSlice>) -> Vec<ObjectKey> {
    let mut keys: Vec<ObjectKey> = endpoints.state().iter().map(|e| ObjectKey::of(&e.metadata)).collect();
    keys.extend(slices.state().iter().filter_map(|s| slice_service(s, CONTROLLER_NAME)));
    keys.sort();
    keys.dedup();
    keys
}

pub(crate) async fn run(
    client: kube::Client,
    config: ControllerConfig,
    informers: Informers,
    stop: Shutdown,
) -> Result<(), ControllerError> {
    let ctx = Arc::new(Ctx {
        client,
        endpoints: informers.endpoints(),
        services: informers.services(),
        slices: informers.slices(),
        informers,
        max_endpoints_per_subset: config.mirroring_max_endpoints_per_subset,
    });
    let queue = WorkQueue::new();

    let (endpoints, slices) = (ctx.endpoints.clone(), ctx.slices.clone());
    forward(&ctx.endpoints, queue.clone(), stop.clone(), move |c| match c {
        Change::Applied { old, new } => {
            let mirrored = mirroring::should_mirror(new) || old.as_deref().is_some_and(mirroring::should_mirror);
            if mirrored { vec![ObjectKey::of(&new.metadata)] } else { Vec::new() }
        }
        Change::Deleted(ep) => vec![ObjectKey::of(&ep.metadata)],
        Change::Resync => everything(&endpoints, &slices),
    });
    forward(&ctx.services, queue.clone(), stop.clone(), move |c| match c {
        Change::Applied { old: None, new } if selectorless(new) => vec![ObjectKey::of(&new.metadata)],
        Change::Applied { old: Some(old), new } if selectorless(old) != selectorless(new) => {
            vec![ObjectKey::of(&new.metadata)]
        }
        Change::Deleted(svc) => vec![ObjectKey::of(&svc.metadata)],
        _ => Vec::new(),
    });
    forward(&ctx.slices, queue.clone(), stop.clone(), move |c| match c {
        Change::Applied { new, .. } => slice_service(new, CONTROLLER_NAME).into_iter().collect(),
        Change::Deleted(slice) => slice_service(slice, CONTROLLER_NAME).into_iter().collect(),
        Change::Resync => Vec::new(),
    });

    tokio::select! {
        _ = stop.wait() => return Ok(()),
        _ = async { tokio::join!(ctx.endpoints.ready(), ctx.services.ready(), ctx.slices.ready()) } => {}
    }
    tracing::info!(controller = "endpointslice-mirroring", "caches synced; starting workers");
    for key in everything(&ctx.endpoints, &ctx.slices) {
        queue.add(key);
    }
    let workers = config.mirroring_workers;
    run_workers("endpointslice-mirroring", queue, workers, stop, move |key| reconcile(ctx.clone(), key)).await;
    Ok(())
}

async fn reconcile(ctx: Arc<Ctx>, key: ObjectKey) -> ReconcileResult {
    let endpoints = ctx.endpoints.get(&key.namespace, &key.name);
    let service = ctx.services.get(&key.namespace, &key.name);
    let slices: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .in_namespace(&key.namespace)
        .into_iter()
        .filter(|s| slice_service(s, CONTROLLER_NAME).as_ref() == Some(&key))
        .collect();
    let inputs = MirrorInputs {
        endpoints: endpoints.as_deref(),
        service: service.as_deref(),
        slices: slices.iter().map(|s| s.as_ref()).collect(),
        max_endpoints_per_subset: ctx.max_endpoints_per_subset,
    };
    let writes = mirroring::reconcile_mirrored_slices(&inputs);
    let creates = writes.iter().any(|w| matches!(w, crate::Write::Create { .. }));
    if let (true, Some(ep)) = (creates, endpoints.as_deref()) {
        let uid = ep.metadata.uid.as_deref().unwrap_or_default();
        if !crate::write::owner_exists(&ctx.client, crate::Kind::Endpoints, &key.namespace, &key.name, uid).await? {
            return Ok(None);
        }
    }
    if !writes.is_empty() {
        let seen = apply_all(&ctx.client, &writes).await?;
        ctx.informers.wait_seen(&seen, CACHE_CATCH_UP).await;
    }
    Ok(None)
}
