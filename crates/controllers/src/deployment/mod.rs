//! The Deployment controller, re-expressed from upstream's `pkg/controller/deployment`.
//!
//! A Deployment owns ReplicaSets named `<deployment>-<pod-template-hash>` ([`hash`]) whose
//! label and selector carry `pod-template-hash`. One reconcile ([`reconcile_deployment`]):
//!
//! - adopts matching orphan ReplicaSets and releases owned ones that stopped matching;
//! - finds the new ReplicaSet (the one whose template equals the Deployment's, ignoring the
//!   hash label) and keeps its `deployment.kubernetes.io/revision` the highest (old revision +
//!   1, with `revision-history` when an old template comes back), copying the Deployment's
//!   annotations and recording `desired-replicas` / `max-replicas`;
//! - for a paused Deployment or a scaling event (`kubectl scale deploy`: an active ReplicaSet
//!   recorded another desired size) scales proportionally across the active ReplicaSets;
//! - otherwise rolls out: **RollingUpdate** creates the new ReplicaSet, scales it up within
//!   `replicas + maxSurge` (surge rounds up) and old ones down without going below `replicas -
//!   maxUnavailable` available pods (unavailable rounds down; unavailable old pods go first);
//!   **Recreate** scales old ReplicaSets to zero, waits for their pods to go, then scales the
//!   new one up;
//! - deletes old ReplicaSets at zero beyond `revisionHistoryLimit` once complete;
//! - writes the status (replicas, updated, ready, available, unavailable, observedGeneration)
//!   with the `Available` (`MinimumReplicasAvailable` / `MinimumReplicasUnavailable`) and
//!   `Progressing` (`NewReplicaSetCreated`, `FoundNewReplicaSet`, `ReplicaSetUpdated`,
//!   `NewReplicaSetAvailable`, `ProgressDeadlineExceeded`, paused / resumed) conditions and the
//!   ReplicaSets' `ReplicaFailure`, which is what `kubectl rollout status` reads.
//!
//! Not done: the deprecated rollback annotation (`kubectl rollout undo` works client-side by
//! rewriting the template) and pod-template-hash relabelling of pre-hash ReplicaSets.

pub mod driver;
pub mod hash;
mod sync;
#[cfg(test)]
mod tests;
pub mod util;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use crate::objects::{self, ObjectKey};
use crate::write::{Kind, Write};

pub use hash::{LABEL_POD_TEMPLATE_HASH, pod_template_hash};

/// What one reconcile of a Deployment looks at.
#[derive(Clone, Debug)]
pub struct DeploymentInputs<'a> {
    pub deployment: &'a Deployment,
    /// ReplicaSets of the Deployment's namespace.
    pub replica_sets: Vec<&'a ReplicaSet>,
    /// Pods of the Deployment's namespace (for Recreate's "old pods still running").
    pub pods: Vec<&'a Pod>,
    pub now: Timestamp,
}

/// Reconciles one Deployment (`syncDeployment`).
pub fn reconcile_deployment(inputs: &DeploymentInputs<'_>) -> Vec<Write> {
    let d = inputs.deployment;
    let mut pass = sync::Pass::new(d, inputs.replica_sets.clone(), inputs.pods.clone(), inputs.now);

    let selector = d.spec.as_ref().map(|s| &s.selector);
    let selects_all = selector.is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    });
    if selects_all {
        let reference = objects::object_reference("apps/v1", "Deployment", &d.metadata);
        let message = "This deployment is selecting all pods. A non-empty selector is required.";
        let mut writes = vec![objects::event_write(&objects::event(
            &reference,
            "Warning",
            "SelectingAll",
            message,
            "deployment-controller",
            inputs.now,
        ))];
        let observed = d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
        if observed < d.metadata.generation.unwrap_or(0) {
            let mut updated = d.clone();
            updated.metadata.managed_fields = None;
            updated.status.get_or_insert_with(Default::default).observed_generation = d.metadata.generation;
            writes.push(Write::ReplaceStatus {
                kind: Kind::Deployment,
                namespace: objects::namespace(&d.metadata).to_string(),
                name: objects::name(&d.metadata).to_string(),
                object: objects::to_value(&updated),
            });
        }
        return writes;
    }

    if pass.claim_replica_sets() {
        // Adoptions change the ReplicaSets' resourceVersions: finish them, then look again.
        return pass.claims;
    }
    let _ = run(&mut pass);
    pass.finish()
}

fn run(pass: &mut sync::Pass<'_>) -> Result<(), sync::Stop> {
    if objects::is_deleting(&pass.d.metadata) {
        return pass.sync_status_only();
    }
    pass.check_paused_conditions();
    if util::paused(&pass.d) {
        return pass.sync();
    }
    let (new, old) = pass.all_replica_sets(false)?;
    // `all_replica_sets` may have refreshed the new ReplicaSet's annotations; the scaling
    // check looks at the ReplicaSets as they are now.
    if pass.is_scaling_event(new, &old) {
        return pass.sync();
    }
    match util::strategy_type(&pass.d) {
        "Recreate" => pass.rollout_recreate(),
        _ => pass.rollout_rolling(),
    }
}

/// When to look at the Deployment again to notice a missed progress deadline
/// (`requeueStuckDeployment`).
pub fn requeue_after(d: &Deployment, now: Timestamp) -> Option<Duration> {
    let deadline = util::progress_deadline(d)?;
    let status = d.status.clone().unwrap_or_default();
    let c = util::condition(&status, "Progressing")?;
    if matches!(c.reason.as_deref(), Some(util::REASON_NEW_RS_AVAILABLE) | Some(util::REASON_TIMED_OUT)) {
        return None;
    }
    if sync::deployment_complete(d, &status) {
        return None;
    }
    let last = c.last_update_time.as_ref()?.0.as_second();
    let due = last + i64::from(deadline) + 1 - now.as_second();
    Some(Duration::from_secs(u64::try_from(due).unwrap_or(0).max(1)))
}

/// The Deployment keys a ReplicaSet change concerns: its controller, or for an orphan every
/// Deployment of its namespace whose selector matches it.
pub fn deployments_for_replica_set<'a>(
    deployments: impl Iterator<Item = &'a Deployment>,
    rss: &[Option<&ReplicaSet>],
) -> Vec<ObjectKey> {
    let all: Vec<&Deployment> = deployments.collect();
    let mut out = Vec::new();
    for rs in rss.iter().flatten() {
        match objects::controller_of(&rs.metadata) {
            Some(r) if r.kind == "Deployment" => {
                out.extend(
                    all.iter().filter(|d| objects::uid(&d.metadata) == r.uid).map(|d| ObjectKey::of(&d.metadata)),
                );
            }
            Some(_) => {}
            None => out.extend(
                all.iter()
                    .filter(|d| objects::namespace(&d.metadata) == objects::namespace(&rs.metadata))
                    .filter(|d| {
                        pier_api::selector::LabelSelector::from_k8s_opt(d.spec.as_ref().map(|s| &s.selector))
                            .is_ok_and(|s| s.matches(objects::labels(&rs.metadata)))
                    })
                    .map(|d| ObjectKey::of(&d.metadata)),
            ),
        }
    }
    out.sort();
    out.dedup();
    out
}
