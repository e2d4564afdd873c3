//! The controllers of pier: ordinary, level-triggered clients of the Kubernetes API that keep
//! EndpointSlices (and their mirrors of hand-written Endpoints), core/v1 Endpoints,
//! ReplicaSet pods and Deployment rollouts converged, plus a minimal scheduler that binds
//! pending pods to nodes.
//!
//! Every controller is split in two:
//!
//! - a **pure reconcile** (`reconcile_*` in [`endpointslice`], [`endpoints`], [`replicaset`],
//!   [`deployment`], [`scheduler`]) from the objects in the watch caches (and the current time,
//!   passed in) to a list of [`Write`]s — creates, updates, patches and deletes as data. It does
//!   no IO, so it is tested with snapshot tests and is correct when run twice or after a missed
//!   event;
//! - a thin **driver** (`run_*`) built on `kube::runtime` watchers and reflector stores: events
//!   become keys in a de-duplicating work queue, a worker reconciles one key at a time (one
//!   tracing span per reconcile) and applies the writes with a [`kube::Client`], then waits until
//!   its own writes are visible in the caches before that key is looked at again.
//!
//! This crate knows nothing about the store or the HTTP server; it only speaks the API.

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
#[cfg(test)]
mod fixtures;
pub mod loadbalancer;
pub mod objects;
pub mod replicaset;
mod runtime;
pub mod scheduler;
pub mod write;

use std::future::Future;

pub use write::{Kind, Write};

/// Tuning of the controllers; [`Default`] gives upstream's kube-controller-manager defaults.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Concurrent ReplicaSet reconciles (`--concurrent-replicaset-syncs`, 5).
    pub replicaset_workers: usize,
    /// Concurrent Deployment reconciles (`--concurrent-deployment-syncs`, 5).
    pub deployment_workers: usize,
    /// Concurrent Endpoints reconciles (`--concurrent-endpoint-syncs`, 5).
    pub endpoints_workers: usize,
    /// Concurrent EndpointSlice reconciles (`--concurrent-service-endpoint-syncs`, 5).
    pub endpointslice_workers: usize,
    /// Concurrent mirroring reconciles (`--mirroring-concurrent-service-endpoint-syncs`, 5).
    pub mirroring_workers: usize,
    /// Endpoints per EndpointSlice (`--max-endpoints-per-slice`, 100).
    pub max_endpoints_per_slice: usize,
    /// Addresses mirrored per Endpoints subset (`--mirroring-max-endpoints-per-subset`, 1000).
    pub mirroring_max_endpoints_per_subset: usize,
    /// Where LoadBalancer Services get their addresses (`--loadbalancer-ip-pool`); empty: they
    /// stay pending and the LoadBalancer IP controller does not run.
    pub loadbalancer_pool: Vec<ipnet::Ipv4Net>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            replicaset_workers: 5,
            deployment_workers: 5,
            endpoints_workers: 5,
            endpointslice_workers: 5,
            mirroring_workers: 5,
            max_endpoints_per_slice: endpointslice::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            mirroring_max_endpoints_per_subset: endpointslice::mirroring::DEFAULT_MAX_ENDPOINTS_PER_SUBSET,
            loadbalancer_pool: Vec::new(),
        }
    }
}

/// Why a controller could not run. Reconcile failures are not errors of the controller: they
/// are logged and the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("invalid controller configuration: {0}")]
    Config(String),
    #[error("a controller task failed: {0}")]
    Task(String),
}

impl ControllerConfig {
    fn validate(&self) -> Result<(), ControllerError> {
        if !(1..=1000).contains(&self.max_endpoints_per_slice) {
            return Err(ControllerError::Config(format!(
                "max_endpoints_per_slice must be between 1 and 1000, got {}",
                self.max_endpoints_per_slice
            )));
        }
        if self.mirroring_max_endpoints_per_subset == 0 {
            return Err(ControllerError::Config("mirroring_max_endpoints_per_subset must be positive".into()));
        }
        Ok(())
    }
}

/// Runs every controller (EndpointSlice, EndpointSlice mirroring, Endpoints, ReplicaSet,
/// Deployment, LoadBalancer IPs when there is a pool, scheduler) over one set of shared watch caches until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    config.validate()?;
    let stop = runtime::Shutdown::from_future(shutdown);
    let informers = runtime::Informers::new(client.clone(), stop.clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(endpointslice::driver::run(client.clone(), config.clone(), informers.clone(), stop.clone()));
    tasks.spawn(endpointslice::mirroring_driver::run(client.clone(), config.clone(), informers.clone(), stop.clone()));
    tasks.spawn(endpoints::driver::run(client.clone(), config.clone(), informers.clone(), stop.clone()));
    tasks.spawn(replicaset::driver::run(client.clone(), config.clone(), informers.clone(), stop.clone()));
    tasks.spawn(deployment::driver::run(client.clone(), config.clone(), informers.clone(), stop.clone()));
    if !config.loadbalancer_pool.is_empty() {
        let pool = config.loadbalancer_pool.clone();
        tasks.spawn(loadbalancer::driver::run(client.clone(), pool, informers.clone(), stop.clone()));
    }
    tasks.spawn(scheduler::driver::run(client, informers, stop.clone()));
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let err = match done {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(ControllerError::Task(e.to_string())),
        };
        if let Some(e) = err {
            tracing::error!(error = %e, "controller stopped");
            first_error.get_or_insert(e);
            stop.trigger();
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs only the EndpointSlice controller (Services with a selector → EndpointSlices).
pub async fn run_endpointslice_controller(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    config.validate()?;
    run_alone(client, shutdown, |client, informers, stop| endpointslice::driver::run(client, config, informers, stop))
        .await
}

/// Runs only the EndpointSlice mirroring controller (hand-written Endpoints of selector-less
/// Services → EndpointSlices).
pub async fn run_endpointslice_mirroring_controller(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    config.validate()?;
    run_alone(client, shutdown, |client, informers, stop| {
        endpointslice::mirroring_driver::run(client, config, informers, stop)
    })
    .await
}

/// Runs only the Endpoints controller (Services with a selector → core/v1 Endpoints).
pub async fn run_endpoints_controller(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    config.validate()?;
    run_alone(client, shutdown, |client, informers, stop| endpoints::driver::run(client, config, informers, stop)).await
}

/// Runs only the ReplicaSet controller.
pub async fn run_replicaset_controller(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    config.validate()?;
    run_alone(client, shutdown, |client, informers, stop| replicaset::driver::run(client, config, informers, stop))
        .await
}

/// Runs only the Deployment controller (it needs the ReplicaSet controller to make progress).
pub async fn run_deployment_controller(
    client: kube::Client,
    config: ControllerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    config.validate()?;
    run_alone(client, shutdown, |client, informers, stop| deployment::driver::run(client, config, informers, stop))
        .await
}

/// Runs only the scheduler.
pub async fn run_scheduler(
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    run_alone(client, shutdown, scheduler::driver::run).await
}

/// Runs one controller with caches of its own until `shutdown`.
async fn run_alone<F, Fut>(
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    driver: F,
) -> Result<(), ControllerError>
where
    F: FnOnce(kube::Client, runtime::Informers, runtime::Shutdown) -> Fut,
    Fut: Future<Output = Result<(), ControllerError>>,
{
    let stop = runtime::Shutdown::from_future(shutdown);
    let informers = runtime::Informers::new(client.clone(), stop.clone());
    driver(client, informers, stop).await
}
