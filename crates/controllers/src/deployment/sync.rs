//! One pass of the Deployment controller over working copies, following upstream's
//! `sync.go`, `rolling.go`, `recreate.go` and `progress.go` step by step. Where upstream writes a
//! ReplicaSet and continues with the answer, a pass changes its working copy and continues;
//! [`Pass::finish`] then turns the differences into writes (one per changed object).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::{Value, json};

use super::hash::{LABEL_POD_TEMPLATE_HASH, equal_ignore_hash, pod_template_hash};
use super::util::*;
use crate::objects;
use crate::write::{Kind, Write};

const COMPONENT: &str = "deployment-controller";

/// Why a pass stopped early.
pub(crate) struct Stop;

pub(crate) struct Pass<'a> {
    pub now: Timestamp,
    /// The Deployment as the pass changes it (status, revision annotation).
    pub d: Deployment,
    orig: &'a Deployment,
    /// Every ReplicaSet of the namespace, as cached (for name collisions).
    namespace_rss: Vec<&'a ReplicaSet>,
    /// The Deployment's ReplicaSets (working copies) and their cached originals (`None` for one
    /// created in this pass).
    pub rss: Vec<ReplicaSet>,
    originals: Vec<Option<&'a ReplicaSet>>,
    pods: Vec<&'a Pod>,
    pub claims: Vec<Write>,
    deletes: Vec<Write>,
    events: Vec<Event>,
}

impl<'a> Pass<'a> {
    pub fn new(d: &'a Deployment, namespace_rss: Vec<&'a ReplicaSet>, pods: Vec<&'a Pod>, now: Timestamp) -> Pass<'a> {
        Pass {
            now: objects::whole_seconds(now),
            d: d.clone(),
            orig: d,
            namespace_rss,
            rss: Vec::new(),
            originals: Vec::new(),
            pods,
            claims: Vec::new(),
            deletes: Vec::new(),
            events: Vec::new(),
        }
    }

    fn event(&mut self, type_: &str, reason: &str, message: String) {
        let reference = objects::object_reference("apps/v1", "Deployment", &self.d.metadata);
        self.events.push(objects::event(&reference, type_, reason, &message, COMPONENT, self.now));
    }

    fn status(&mut self) -> &mut DeploymentStatus {
        self.d.status.get_or_insert_with(Default::default)
    }

    fn current_status(&self) -> DeploymentStatus {
        self.d.status.clone().unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------------
    // Claiming

    /// `getReplicaSetsForDeployment` (`ClaimReplicaSets`): adopt matching orphans, release owned
    /// ReplicaSets that stopped matching. Returns whether any claim write is needed.
    pub fn claim_replica_sets(&mut self) -> bool {
        let sel = pier_api::selector::LabelSelector::from_k8s_opt(self.d.spec.as_ref().map(|s| &s.selector))
            .unwrap_or_else(|_| pier_api::selector::LabelSelector::nothing());
        let deleting = objects::is_deleting(&self.d.metadata);
        let owner = objects::controller_ref("apps/v1", "Deployment", &self.d.metadata);
        let mut sorted = self.namespace_rss.clone();
        sorted.sort_by(|a, b| objects::name(&a.metadata).cmp(objects::name(&b.metadata)));
        for rs in sorted {
            let matches = sel.matches(objects::labels(&rs.metadata));
            match objects::controller_of(&rs.metadata) {
                Some(r) if r.uid == owner.uid => {
                    if matches {
                        self.rss.push(rs.clone());
                        self.originals.push(Some(rs));
                    } else if !deleting {
                        self.claims.push(owner_patch(Kind::ReplicaSet, &rs.metadata, &owner.uid, None));
                    }
                }
                Some(_) => {}
                None => {
                    if matches && !deleting && !objects::is_deleting(&rs.metadata) {
                        self.claims.push(owner_patch(Kind::ReplicaSet, &rs.metadata, &owner.uid, Some(owner.clone())));
                    }
                }
            }
        }
        !self.claims.is_empty()
    }

    /// `podMap` of `getPodMapForDeployment`: the pods each ReplicaSet controls.
    fn pods_of(&self, rs: &ReplicaSet) -> Vec<&'a Pod> {
        self.pods.iter().copied().filter(|p| objects::controlled_by(&p.metadata, &rs.metadata)).collect()
    }

    // -----------------------------------------------------------------------------------------
    // New and old ReplicaSets

    fn find_new(&self) -> Option<usize> {
        let template = self.d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let mut order: Vec<usize> = (0..self.rss.len()).collect();
        order.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        order.into_iter().find(|i| {
            let t = self.rss[*i].spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
            equal_ignore_hash(&t, &template)
        })
    }

    /// `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created when `create` and
    /// missing) and the old ones.
    pub fn all_replica_sets(&mut self, create: bool) -> Result<(Option<usize>, Vec<usize>), Stop> {
        let existing = self.find_new();
        let old: Vec<usize> = (0..self.rss.len()).filter(|i| Some(*i) != existing).collect();
        let new_revision = max_revision(old.iter().map(|i| &self.rss[*i])) + 1;
        if let Some(i) = existing {
            let mut rs = self.rss[i].clone();
            let annotations_updated = set_new_rs_annotations(&self.d, &mut rs, new_revision, true);
            let min_ready = min_ready_seconds(&self.d);
            let min_ready_needs_update = rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != min_ready;
            if annotations_updated || min_ready_needs_update {
                if let Some(spec) = rs.spec.as_mut() {
                    spec.min_ready_seconds = Some(min_ready);
                }
                self.rss[i] = rs;
                return Ok((Some(i), old));
            }
            let rev = objects::annotations(&rs.metadata).get(ANNOTATION_REVISION).cloned().unwrap_or_default();
            set_deployment_revision(&mut self.d, &rev);
            if progress_deadline(&self.d).is_some() && condition(&self.current_status(), "Progressing").is_none() {
                let msg = format!("Found new replica set {:?}", objects::name(&rs.metadata));
                let c = new_condition("Progressing", "True", REASON_FOUND_NEW_RS, &msg, self.now);
                set_condition(self.status(), c);
            }
            return Ok((Some(i), old));
        }
        if !create {
            return Ok((None, old));
        }

        // A new ReplicaSet named after the template's hash.
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = self.d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let hash = pod_template_hash(&template, collision_count);
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector: LabelSelector = self.d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        selector.match_labels.get_or_insert_with(Default::default).insert(LABEL_POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", objects::name(&self.d.metadata));

        // `AlreadyExists` for a ReplicaSet that is not this template's is a hash collision.
        let ns = objects::namespace(&self.d.metadata);
        if let Some(other) = self
            .namespace_rss
            .iter()
            .find(|rs| objects::name(&rs.metadata) == name && objects::namespace(&rs.metadata) == ns)
        {
            let ours = objects::controlled_by(&other.metadata, &self.d.metadata);
            let same = equal_ignore_hash(
                &self.d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default(),
                &other.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default(),
            );
            if !(ours && same) {
                let status = self.status();
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                return Err(Stop);
            }
        }

        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                owner_references: Some(vec![objects::controller_ref("apps/v1", "Deployment", &self.d.metadata)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(min_ready_seconds(&self.d)),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().map(|i| &self.rss[*i]).chain(std::iter::once(&rs)).collect();
        let count = new_rs_new_replicas(&self.d, &all, &rs);
        set_rs_replicas(&mut rs, count);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        if count > 0 {
            self.event("Normal", "ScalingReplicaSet", format!("Scaled up replica set {name} to {count}"));
        }
        set_deployment_revision(&mut self.d, &new_revision.to_string());
        if progress_deadline(&self.d).is_some() {
            let msg = format!("Created new replica set {name:?}");
            let c = new_condition("Progressing", "True", REASON_NEW_RS_CREATED, &msg, self.now);
            set_condition(self.status(), c);
        }
        self.rss.push(rs);
        self.originals.push(None);
        Ok((Some(self.rss.len() - 1), old))
    }

    // -----------------------------------------------------------------------------------------
    // Scaling

    /// `scaleReplicaSet`: size and replica annotations, with the `ScalingReplicaSet` event.
    fn scale_rs(&mut self, i: usize, new_scale: i32, operation: &str) -> bool {
        let desired = replicas(&self.d);
        let max = desired + max_surge(&self.d);
        let size_changed = rs_replicas(&self.rss[i]) != new_scale;
        let annotations_changed = replicas_annotations_need_update(&self.rss[i], desired, max);
        if !size_changed && !annotations_changed {
            return false;
        }
        let old_scale = rs_replicas(&self.rss[i]);
        set_rs_replicas(&mut self.rss[i], new_scale);
        set_replicas_annotations(&mut self.rss[i], desired, max);
        if size_changed {
            let name = objects::name(&self.rss[i].metadata).to_string();
            self.event(
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled {operation} replica set {name} to {new_scale} from {old_scale}"),
            );
        }
        size_changed
    }

    /// `scaleReplicaSetAndRecordEvent`.
    fn scale_and_record(&mut self, i: usize, new_scale: i32) -> bool {
        let current = rs_replicas(&self.rss[i]);
        if current == new_scale {
            return false;
        }
        let op = if current < new_scale { "up" } else { "down" };
        self.scale_rs(i, new_scale, op)
    }

    fn active(&self, ids: &[usize]) -> Vec<usize> {
        ids.iter().copied().filter(|i| rs_replicas(&self.rss[*i]) > 0).collect()
    }

    /// `FindActiveOrLatest`.
    fn active_or_latest(&self, new: Option<usize>, old: &[usize]) -> Option<usize> {
        if new.is_none() && old.is_empty() {
            return None;
        }
        let mut old_sorted = old.to_vec();
        old_sorted.sort_by(|a, b| by_creation(&self.rss[*b], &self.rss[*a]));
        let mut all = old_sorted.clone();
        all.extend(new);
        let active = self.active(&all);
        match active.len() {
            0 => new.or_else(|| old_sorted.first().copied()),
            1 => active.first().copied(),
            _ => None,
        }
    }

    /// `IsSaturated`.
    fn saturated(&self, new: Option<usize>) -> bool {
        let Some(i) = new else { return false };
        let rs = &self.rss[i];
        let want = replicas(&self.d);
        rs_replicas(rs) == want && desired_replicas_annotation(rs) == Some(want) && rs_available(rs) == want
    }

    /// `scale`: scaling events and paused Deployments, proportionally during a rollout.
    pub fn scale(&mut self, new: Option<usize>, old: &[usize]) {
        let want = replicas(&self.d);
        if let Some(i) = self.active_or_latest(new, old) {
            if rs_replicas(&self.rss[i]) != want {
                self.scale_and_record(i, want);
            }
            return;
        }
        if self.saturated(new) {
            for i in self.active(old) {
                self.scale_and_record(i, 0);
            }
            return;
        }
        if !is_rolling(&self.d) {
            return;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.extend(new);
        let mut all = self.active(&all);
        let current: i32 = all.iter().map(|i| rs_replicas(&self.rss[*i])).sum();
        let allowed = if want > 0 { want + max_surge(&self.d) } else { 0 };
        let to_add = allowed - current;
        let operation = if to_add > 0 {
            all.sort_by(|a, b| by_size_newer(&self.rss[*a], &self.rss[*b]));
            "up"
        } else {
            all.sort_by(|a, b| by_size_older(&self.rss[*a], &self.rss[*b]));
            "down"
        };
        let mut added = 0;
        let mut sizes: BTreeMap<usize, i32> = BTreeMap::new();
        for &i in &all {
            let rs = &self.rss[i];
            if to_add != 0 {
                let p = proportion(rs, &self.d, to_add, added);
                sizes.insert(i, rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.insert(i, rs_replicas(rs));
            }
        }
        for (n, &i) in all.iter().enumerate() {
            let mut size = sizes.get(&i).copied().unwrap_or(0);
            if n == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale_rs(i, size, operation);
        }
    }

    /// `isScalingEvent`: an active ReplicaSet records a different desired size.
    pub fn is_scaling_event(&self, new: Option<usize>, old: &[usize]) -> bool {
        let mut all = old.to_vec();
        all.extend(new);
        let want = replicas(&self.d);
        self.active(&all).into_iter().any(|i| desired_replicas_annotation(&self.rss[i]).is_some_and(|d| d != want))
    }

    // -----------------------------------------------------------------------------------------
    // Rolling update

    /// `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self, new: usize, old: &[usize]) -> bool {
        let want = replicas(&self.d);
        let current = rs_replicas(&self.rss[new]);
        if current == want {
            return false;
        }
        if current > want {
            return self.scale_and_record(new, want);
        }
        let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&new)).map(|i| &self.rss[*i]).collect();
        let count = new_rs_new_replicas(&self.d, &all, &self.rss[new]);
        self.scale_and_record(new, count)
    }

    /// `reconcileOldReplicaSets`.
    fn reconcile_old(&mut self, new: usize, old: &[usize]) -> bool {
        let old_active = self.active(old);
        let old_pods: i32 = old_active.iter().map(|i| rs_replicas(&self.rss[*i])).sum();
        if old_pods == 0 {
            return false;
        }
        let all_pods: i32 = old.iter().chain(std::iter::once(&new)).map(|i| rs_replicas(&self.rss[*i])).sum();
        let min_available = replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = rs_replicas(&self.rss[new]) - rs_available(&self.rss[new]);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(&old_active, max_scaled_down);
        let mut all = old_active.clone();
        all.push(new);
        let scaled = self.scale_down_old_for_rolling(&all, &old_active);
        cleaned + scaled > 0
    }

    /// `cleanupUnhealthyReplicas`: scale down old pods that are not available first.
    fn cleanup_unhealthy(&mut self, old: &[usize], max_cleanup: i32) -> i32 {
        let mut sorted = old.to_vec();
        sorted.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        let mut total = 0;
        for i in sorted {
            if total >= max_cleanup {
                break;
            }
            let (spec, available) = (rs_replicas(&self.rss[i]), rs_available(&self.rss[i]));
            if spec == 0 || spec == available {
                continue;
            }
            let down = (max_cleanup - total).min(spec - available);
            self.scale_and_record(i, spec - down);
            total += down;
        }
        total
    }

    /// `scaleDownOldReplicaSetsForRollingUpdate`: never below `replicas - maxUnavailable`
    /// available pods.
    fn scale_down_old_for_rolling(&mut self, all: &[usize], old: &[usize]) -> i32 {
        let min_available = replicas(&self.d) - max_unavailable(&self.d);
        let available: i32 = all.iter().map(|i| rs_available(&self.rss[*i])).sum();
        if available <= min_available {
            return 0;
        }
        let mut sorted = old.to_vec();
        sorted.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        let target = available - min_available;
        let mut total = 0;
        for i in sorted {
            if total >= target {
                break;
            }
            let spec = rs_replicas(&self.rss[i]);
            if spec == 0 {
                continue;
            }
            let down = spec.min(target - total);
            self.scale_and_record(i, spec - down);
            total += down;
        }
        total
    }

    /// `rolloutRolling`.
    pub fn rollout_rolling(&mut self) -> Result<(), Stop> {
        let (new, old) = self.all_replica_sets(true)?;
        let snapshot = self.snapshot(new, &old);
        let Some(new) = new else { return Ok(()) };
        if self.reconcile_new(new, &old) {
            self.sync_rollout_status(&snapshot);
            return Ok(());
        }
        if self.reconcile_old(new, &old) {
            self.sync_rollout_status(&snapshot);
            return Ok(());
        }
        if deployment_complete(&self.d, &self.current_status()) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(&snapshot);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Recreate

    /// `oldPodsRunning`.
    fn old_pods_running(&self, new: Option<usize>, old: &[usize]) -> bool {
        if old.iter().map(|i| rs_status_replicas(&self.rss[*i])).sum::<i32>() > 0 {
            return true;
        }
        (0..self.rss.len())
            .filter(|i| Some(*i) != new)
            .flat_map(|i| self.pods_of(&self.rss[i]))
            .any(|p| !matches!(objects::pod_phase(p), "Failed" | "Succeeded"))
    }

    /// `rolloutRecreate`.
    pub fn rollout_recreate(&mut self) -> Result<(), Stop> {
        let (mut new, mut old) = self.all_replica_sets(false)?;
        let mut snapshot = self.snapshot(new, &old);
        let mut scaled_down = false;
        for i in self.active(&old) {
            if rs_replicas(&self.rss[i]) != 0 {
                scaled_down |= self.scale_and_record(i, 0);
            }
        }
        if scaled_down || self.old_pods_running(new, &old) {
            self.sync_rollout_status(&snapshot);
            return Ok(());
        }
        if new.is_none() {
            (new, old) = self.all_replica_sets(true)?;
            snapshot = self.snapshot(new, &old);
        }
        if let Some(i) = new {
            self.scale_and_record(i, replicas(&self.d));
        }
        if deployment_complete(&self.d, &self.current_status()) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(&snapshot);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Sync (scaling, paused)

    /// `sync`.
    pub fn sync(&mut self) -> Result<(), Stop> {
        let (new, old) = self.all_replica_sets(false)?;
        let snapshot = self.snapshot(new, &old);
        self.scale(new, &old);
        if paused(&self.d) {
            self.cleanup(&old);
        }
        let status = calculate_status(&snapshot, &self.d, self.now);
        self.d.status = Some(status);
        Ok(())
    }

    /// `syncStatusOnly`.
    pub fn sync_status_only(&mut self) -> Result<(), Stop> {
        let (new, old) = self.all_replica_sets(false)?;
        let snapshot = self.snapshot(new, &old);
        let status = calculate_status(&snapshot, &self.d, self.now);
        self.d.status = Some(status);
        Ok(())
    }

    /// `checkPausedConditions`.
    pub fn check_paused_conditions(&mut self) {
        if progress_deadline(&self.d).is_none() {
            return;
        }
        let cond = condition(&self.current_status(), "Progressing").cloned();
        if cond.as_ref().is_some_and(|c| c.reason.as_deref() == Some(REASON_TIMED_OUT)) {
            return;
        }
        let paused_cond = cond.as_ref().is_some_and(|c| c.reason.as_deref() == Some(REASON_PAUSED));
        let is_paused = paused(&self.d);
        if is_paused && !paused_cond {
            let c = new_condition("Progressing", "Unknown", REASON_PAUSED, "Deployment is paused", self.now);
            set_condition(self.status(), c);
        } else if !is_paused && paused_cond {
            let c = new_condition("Progressing", "Unknown", REASON_RESUMED, "Deployment is resumed", self.now);
            set_condition(self.status(), c);
        }
    }

    /// `cleanupDeployment`: keep `revisionHistoryLimit` old ReplicaSets, deleting the oldest
    /// revisions that are fully scaled down.
    fn cleanup(&mut self, old: &[usize]) {
        let Some(limit) = revision_history_limit(&self.d) else { return };
        let mut cleanable: Vec<usize> =
            old.iter().copied().filter(|i| !objects::is_deleting(&self.rss[*i].metadata)).collect();
        let diff = i32::try_from(cleanable.len()).unwrap_or(i32::MAX) - limit;
        if diff <= 0 {
            return;
        }
        cleanable.sort_by(|a, b| by_revision(&self.rss[*a], &self.rss[*b]));
        for &i in cleanable.iter().take(usize::try_from(diff).unwrap_or(0)) {
            let rs = &self.rss[i];
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if rs_status_replicas(rs) != 0 || rs_replicas(rs) != 0 || rs.metadata.generation.unwrap_or(0) > observed {
                continue;
            }
            // Only cached ReplicaSets are deleted (never one created in this pass).
            if self.originals.get(i).copied().flatten().is_none() {
                continue;
            }
            self.deletes.push(Write::Delete {
                kind: Kind::ReplicaSet,
                namespace: objects::namespace(&rs.metadata).to_string(),
                name: objects::name(&rs.metadata).to_string(),
                uid: rs.metadata.uid.clone(),
            });
        }
    }

    // -----------------------------------------------------------------------------------------
    // Status

    /// The ReplicaSets as they were when the new one was determined (upstream computes the
    /// status from those objects, not from the ones it scaled afterwards).
    fn snapshot(&self, new: Option<usize>, old: &[usize]) -> Snapshot {
        Snapshot { new: new.map(|i| self.rss[i].clone()), old: old.iter().map(|i| self.rss[*i].clone()).collect() }
    }

    /// `syncRolloutStatus`.
    fn sync_rollout_status(&mut self, snap: &Snapshot) {
        let mut status = calculate_status(snap, &self.d, self.now);
        let deadline = progress_deadline(&self.d);
        if deadline.is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let current = self.current_status();
        let current_cond = condition(&current, "Progressing").cloned();
        let complete_before = status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
            && current_cond.as_ref().is_some_and(|c| c.reason.as_deref() == Some(REASON_NEW_RS_AVAILABLE));
        let d_name = objects::name(&self.d.metadata).to_string();
        let rs_name = snap.new.as_ref().map(|rs| objects::name(&rs.metadata).to_string());
        let subject = |what: &str| match &rs_name {
            Some(n) => format!("ReplicaSet {n:?} {what}"),
            None => format!("Deployment {d_name:?} {what}"),
        };
        if let Some(deadline) = deadline.filter(|_| !complete_before) {
            if deployment_complete(&self.d, &status) {
                let c = new_condition(
                    "Progressing",
                    "True",
                    REASON_NEW_RS_AVAILABLE,
                    &subject("has successfully progressed."),
                    self.now,
                );
                set_condition(&mut status, c);
            } else if deployment_progressing(&current, &status) {
                let mut c =
                    new_condition("Progressing", "True", REASON_RS_UPDATED, &subject("is progressing."), self.now);
                if let Some(cur) = &current_cond {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, c);
            } else if timed_out(&status, deadline, self.now) {
                let c = new_condition(
                    "Progressing",
                    "False",
                    REASON_TIMED_OUT,
                    &subject("has timed out progressing."),
                    self.now,
                );
                set_condition(&mut status, c);
            }
        }
        match replica_failure(snap) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        self.d.status = Some(status);
    }

    // -----------------------------------------------------------------------------------------
    // Writes

    /// The writes this pass amounts to.
    pub fn finish(self) -> Vec<Write> {
        let ns = objects::namespace(&self.d.metadata).to_string();
        let mut writes = self.claims;
        for (rs, orig) in self.rss.iter().zip(&self.originals) {
            match orig {
                None => writes.push(Write::Create {
                    kind: Kind::ReplicaSet,
                    namespace: ns.clone(),
                    object: objects::to_value(rs),
                    created_event: None,
                }),
                Some(orig) => {
                    let changed = !objects::semantic_eq(&rs.spec, &orig.spec)
                        || !objects::semantic_eq(&rs.metadata.annotations, &orig.metadata.annotations);
                    if changed {
                        let mut rs = rs.clone();
                        rs.metadata.managed_fields = None;
                        writes.push(Write::Replace {
                            kind: Kind::ReplicaSet,
                            namespace: ns.clone(),
                            name: objects::name(&rs.metadata).to_string(),
                            object: objects::to_value(&rs),
                        });
                    }
                }
            }
        }
        writes.extend(self.deletes);
        let status_changed = !objects::semantic_eq(&self.d.status, &self.orig.status);
        if status_changed {
            let mut d = self.d.clone();
            d.metadata.managed_fields = None;
            writes.push(Write::ReplaceStatus {
                kind: Kind::Deployment,
                namespace: ns.clone(),
                name: objects::name(&d.metadata).to_string(),
                object: objects::to_value(&d),
            });
        }
        // Upstream carries the revision annotation in its status update; a status update that
        // keeps metadata (pier's, the API conventions') needs a patch of the object for it.
        if let Some(patch) = annotation_patch(&self.orig.metadata, &self.d.metadata) {
            writes.push(Write::Patch {
                kind: Kind::Deployment,
                namespace: ns.clone(),
                name: objects::name(&self.d.metadata).to_string(),
                patch,
            });
        }
        writes.extend(self.events.iter().map(objects::event_write));
        writes
    }
}

/// The ReplicaSets a status is computed from.
pub(crate) struct Snapshot {
    new: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
}

impl Snapshot {
    fn all(&self) -> impl Iterator<Item = &ReplicaSet> {
        self.old.iter().chain(self.new.iter())
    }
}

/// The merge patch from `old` annotations to `new` ones, if they differ.
fn annotation_patch(old: &ObjectMeta, new: &ObjectMeta) -> Option<Value> {
    let (a, b) = (objects::annotations(old), objects::annotations(new));
    if a == b {
        return None;
    }
    let mut patch = serde_json::Map::new();
    for (k, v) in b {
        if a.get(k) != Some(v) {
            patch.insert(k.clone(), json!(v));
        }
    }
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    Some(json!({"metadata": {"annotations": patch}}))
}

/// A merge patch setting (or removing) one owner reference.
fn owner_patch(
    kind: Kind,
    meta: &ObjectMeta,
    owner_uid: &str,
    add: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Write {
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    refs.retain(|r| r.uid != owner_uid);
    refs.extend(add);
    let refs = if refs.is_empty() { Value::Null } else { objects::to_value(&refs) };
    Write::Patch {
        kind,
        namespace: objects::namespace(meta).to_string(),
        name: objects::name(meta).to_string(),
        patch: json!({"metadata": {"ownerReferences": refs, "uid": objects::uid(meta)}}),
    }
}

/// `NewRSNewReplicas`.
fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let want = replicas(d);
    if !is_rolling(d) {
        return want;
    }
    let surge = scaled_value(
        d.spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_surge.as_ref()),
        want,
        true,
    );
    let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let max_total = want + surge;
    if current >= max_total {
        return rs_replicas(new);
    }
    let up = (max_total - current).min(want - rs_replicas(new));
    rs_replicas(new) + up
}

/// `calculateStatus`.
fn calculate_status(snap: &Snapshot, d: &Deployment, now: Timestamp) -> DeploymentStatus {
    let available: i32 = snap.all().map(rs_available).sum();
    let total: i32 = snap.all().map(rs_replicas).sum();
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(snap.all().map(rs_status_replicas).sum()),
        updated_replicas: Some(snap.new.as_ref().map_or(0, rs_status_replicas)),
        ready_replicas: Some(snap.all().map(rs_ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: current.terminating_replicas,
    };
    if available >= replicas(d) - max_unavailable(d) {
        let c = new_condition("Available", "True", REASON_MIN_AVAILABLE, "Deployment has minimum availability.", now);
        set_condition(&mut status, c);
    } else {
        let c = new_condition(
            "Available",
            "False",
            REASON_MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        );
        set_condition(&mut status, c);
    }
    status
}

/// `DeploymentComplete`.
pub(crate) fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `DeploymentProgressing`: more updated, ready or available pods, or fewer old ones.
fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// `DeploymentTimedOut`.
fn timed_out(status: &DeploymentStatus, deadline: i32, now: Timestamp) -> bool {
    let Some(c) = condition(status, "Progressing") else { return false };
    match c.reason.as_deref() {
        Some(REASON_NEW_RS_AVAILABLE) => false,
        Some(REASON_TIMED_OUT) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

/// `getReplicaFailures`: the new ReplicaSet's `ReplicaFailure`, else the first old one's.
fn replica_failure(snap: &Snapshot) -> Option<k8s_openapi::api::apps::v1::DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status.as_ref()?.conditions.iter().flatten().find(|c| c.type_ == "ReplicaFailure").cloned()
    };
    let c = snap.new.as_ref().and_then(failure).or_else(|| snap.old.iter().find_map(failure))?;
    Some(k8s_openapi::api::apps::v1::DeploymentCondition {
        type_: c.type_,
        status: c.status,
        reason: c.reason,
        message: c.message,
        last_update_time: c.last_transition_time.clone(),
        last_transition_time: c.last_transition_time,
    })
}
