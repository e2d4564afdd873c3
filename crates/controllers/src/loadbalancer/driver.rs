//! The async driver of the LoadBalancer IP controller: any Service change enqueues the one
//! global key; the worker reconciles the whole pool and publishes each change through the
//! Service's `/status`.

use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::ControllerError;
use crate::objects::ObjectKey;
use crate::runtime::{Informers, ReconcileError, ReconcileResult, Shutdown, WorkQueue, forward, run_workers};

pub(crate) async fn run(
    client: kube::Client,
    pool: Vec<Ipv4Net>,
    informers: Informers,
    stop: Shutdown,
) -> Result<(), ControllerError> {
    let services = informers.services();
    let queue = WorkQueue::new();
    let all = ObjectKey::new("", "pool");
    {
        let all = all.clone();
        forward(&services, queue.clone(), stop.clone(), move |_| vec![all.clone()]);
    }
    tokio::select! {
        _ = stop.wait() => return Ok(()),
        _ = services.ready() => {}
    }
    queue.add(all);
    let pool = Arc::new(pool);
    run_workers("loadbalancer", queue, 1, stop, move |_| {
        let (client, services, pool) = (client.clone(), services.clone(), pool.clone());
        async move {
            let state = services.state();
            let refs: Vec<&Service> = state.iter().map(|s| s.as_ref()).collect();
            let changes = super::reconcile_pool(&pool, &refs);
            for (key, ip) in changes {
                let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
                let status = match ip {
                    Some(ip) => {
                        json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}})
                    }
                    None => json!({"status": {"loadBalancer": {"ingress": null}}}),
                };
                match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&status)).await {
                    Ok(_) => tracing::info!(service = %key, ip = ?ip, "load-balancer address"),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(ReconcileError(e.to_string())) as ReconcileResult,
                }
            }
            Ok(None)
        }
    })
    .await;
    Ok(())
}
