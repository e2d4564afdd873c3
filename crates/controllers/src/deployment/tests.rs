//! Tests of the pure Deployment reconcile: the first ReplicaSet of the seeds' `httpd`
//! Deployment, status and conditions, `kubectl scale`, Recreate, history cleanup, and a
//! simulated rolling update (Deployment controller + an idealised ReplicaSet controller whose
//! new pods become available one step later) that must never drop below `replicas -
//! maxUnavailable` available pods.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStatus, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::util::*;
use super::*;
use crate::fixtures::*;

/// The seeds' `httpd` Deployment: `run=httpd`, image `httpd`, port 80.
fn httpd(replicas: i32, image: &str) -> Deployment {
    let mut m = meta("default", "httpd");
    m.generation = Some(1);
    Deployment {
        metadata: m,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector { match_labels: Some(labels(&[("run", "httpd")])), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&[("run", "httpd")])), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "httpd".into(),
                        image: Some(image.into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn inputs<'a>(d: &'a Deployment, rss: &'a [ReplicaSet]) -> DeploymentInputs<'a> {
    DeploymentInputs { deployment: d, replica_sets: rss.iter().collect(), pods: Vec::new(), now: now() }
}

fn condition_of<'v>(status: &'v Value, type_: &str) -> &'v Value {
    status["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

#[test]
fn a_new_deployment_creates_its_replica_set() {
    let d = httpd(4, "httpd");
    let writes = reconcile_deployment(&inputs(&d, &[]));
    let hash = pod_template_hash(&d.spec.as_ref().unwrap().template, None);
    let rs_name = format!("httpd-{hash}");
    assert_eq!(
        summaries(&writes)[..3],
        [
            format!("create ReplicaSet default/{rs_name}"),
            "update Deployment default/httpd/status".to_string(),
            r#"patch Deployment default/httpd {"metadata":{"annotations":{"deployment.kubernetes.io/revision":"1"}}}"#
                .to_string(),
        ]
    );
    let rs = object(&writes, 0);
    assert_eq!(rs["spec"]["replicas"], 4);
    assert_eq!(rs["metadata"]["labels"]["pod-template-hash"], hash.as_str());
    assert_eq!(rs["spec"]["selector"]["matchLabels"]["pod-template-hash"], hash.as_str());
    assert_eq!(rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"], hash.as_str());
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"], "4");
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"], "5");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    let status = &object(&writes, 1)["status"];
    assert_eq!(condition_of(status, "Progressing")["reason"], "NewReplicaSetCreated");
    assert_eq!(condition_of(status, "Progressing")["message"], format!("Created new replica set \"{rs_name}\""));
    assert_eq!(condition_of(status, "Available")["reason"], "MinimumReplicasUnavailable");
    assert_eq!(status["observedGeneration"], 1);
    let event = object(&writes, 3);
    assert_eq!(event["reason"], "ScalingReplicaSet");
    assert_eq!(event["message"], format!("Scaled up replica set {rs_name} to 4"));
}

/// The ReplicaSets and Deployment after `writes`, with ReplicaSet statuses left as they were.
#[derive(Clone)]
struct World {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    /// Pods per ReplicaSet name: (available, not yet available).
    pods: BTreeMap<String, (i32, i32)>,
    clock: i64,
}

impl World {
    fn new(d: Deployment) -> World {
        World { d, rss: Vec::new(), pods: BTreeMap::new(), clock: 0 }
    }

    fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Create { kind: Kind::ReplicaSet, object, .. } => {
                    let mut rs: ReplicaSet = serde_json::from_value(object.clone()).unwrap();
                    self.clock += 1;
                    rs.metadata.uid = Some(format!("uid-{}", objects::name(&rs.metadata)));
                    rs.metadata.creation_timestamp = Some(Time(at(self.clock)));
                    rs.metadata.generation = Some(1);
                    self.rss.push(rs);
                }
                Write::Replace { kind: Kind::ReplicaSet, name, object, .. } => {
                    let new: ReplicaSet = serde_json::from_value(object.clone()).unwrap();
                    let rs = self.rss.iter_mut().find(|r| objects::name(&r.metadata) == name).unwrap();
                    rs.spec = new.spec;
                    rs.metadata.annotations = new.metadata.annotations;
                    rs.metadata.generation = Some(rs.metadata.generation.unwrap_or(1) + 1);
                }
                Write::Delete { kind: Kind::ReplicaSet, name, .. } => {
                    self.rss.retain(|r| objects::name(&r.metadata) != name)
                }
                Write::ReplaceStatus { kind: Kind::Deployment, object, .. } => {
                    let new: Deployment = serde_json::from_value(object.clone()).unwrap();
                    self.d.status = new.status;
                }
                Write::Patch { kind: Kind::Deployment, patch, .. } => {
                    let a = self.d.metadata.annotations.get_or_insert_with(Default::default);
                    for (k, v) in patch["metadata"]["annotations"].as_object().unwrap() {
                        match v.as_str() {
                            Some(v) => a.insert(k.clone(), v.to_string()),
                            None => a.remove(k),
                        };
                    }
                }
                Write::Create { kind: Kind::Event, .. } => {}
                other => panic!("unexpected write {}", other.summary()),
            }
        }
    }

    /// An idealised ReplicaSet controller: surplus pods go at once (not-yet-available first),
    /// missing pods appear not yet available; pods created earlier become available.
    fn step_replica_sets(&mut self) {
        for (available, pending) in self.pods.values_mut() {
            *available += *pending;
            *pending = 0;
        }
        for rs in &mut self.rss {
            let name = objects::name(&rs.metadata).to_string();
            let (available, pending) = self.pods.entry(name).or_default();
            let want = rs_replicas(rs);
            let mut extra = *available + *pending - want;
            while extra > 0 {
                if *pending > 0 {
                    *pending -= 1
                } else {
                    *available -= 1
                }
                extra -= 1;
            }
            if extra < 0 {
                *pending += -extra;
            }
            rs.status = Some(ReplicaSetStatus {
                replicas: *available + *pending,
                ready_replicas: Some(*available),
                available_replicas: Some(*available),
                observed_generation: rs.metadata.generation,
                ..ReplicaSetStatus::default()
            });
        }
    }

    fn available(&self) -> i32 {
        self.pods.values().map(|(a, _)| a).sum()
    }

    fn reconcile(&mut self) -> Vec<Write> {
        let d = self.d.clone();
        let rss = self.rss.clone();
        let writes = reconcile_deployment(&DeploymentInputs {
            deployment: &d,
            replica_sets: rss.iter().collect(),
            pods: Vec::new(),
            now: now(),
        });
        self.apply(&writes);
        writes
    }

    fn settle(&mut self) {
        for _ in 0..50 {
            let writes = self.reconcile();
            self.step_replica_sets();
            if writes.is_empty() && self.rss.iter().all(|rs| rs.status.as_ref().unwrap().replicas == rs_replicas(rs)) {
                let again = self.reconcile();
                if again.is_empty() {
                    return;
                }
            }
        }
        panic!("did not settle");
    }
}

#[test]
fn a_settled_deployment_reports_available_and_complete() {
    let mut w = World::new(httpd(4, "httpd"));
    w.settle();
    let status = objects::to_value(&w.d.status);
    assert_eq!(
        (
            status["replicas"].as_i64(),
            status["updatedReplicas"].as_i64(),
            status["readyReplicas"].as_i64(),
            status["availableReplicas"].as_i64()
        ),
        (Some(4), Some(4), Some(4), Some(4))
    );
    assert_eq!(condition_of(&status, "Available")["reason"], "MinimumReplicasAvailable");
    assert_eq!(condition_of(&status, "Available")["message"], "Deployment has minimum availability.");
    let progressing = condition_of(&status, "Progressing");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    let rs_name = objects::name(&w.rss[0].metadata).to_string();
    assert_eq!(progressing["message"], format!("ReplicaSet \"{rs_name}\" has successfully progressed."));
    assert_eq!(w.d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"], "1");
    assert_eq!(requeue_after(&w.d, now()), None);
}

fn rolling_update_keeps_availability(replicas: i32, surge: IntOrString, unavailable: IntOrString) {
    let mut d = httpd(replicas, "httpd:2.4");
    d.spec.as_mut().unwrap().strategy.as_mut().unwrap().rolling_update =
        Some(RollingUpdateDeployment { max_surge: Some(surge), max_unavailable: Some(unavailable) });
    let mut w = World::new(d);
    w.settle();
    let (max_surge, max_unavailable) = (max_surge(&w.d), max_unavailable(&w.d));
    // New template: a rollout.
    w.d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("httpd:2.5".into());
    w.d.metadata.generation = Some(2);
    let mut progressed = false;
    for _ in 0..100 {
        let writes = w.reconcile();
        let total: i32 = w.rss.iter().map(rs_replicas).sum();
        assert!(total <= replicas + max_surge, "surge exceeded: {total}");
        w.step_replica_sets();
        assert!(w.available() >= replicas - max_unavailable, "availability dropped to {} of {replicas}", w.available());
        let status = objects::to_value(&w.d.status);
        if condition_of(&status, "Progressing")["reason"] == "ReplicaSetUpdated" {
            progressed = true;
        }
        if writes.is_empty() && deployment_complete_now(&w) {
            break;
        }
    }
    assert!(progressed, "the Progressing condition never said ReplicaSetUpdated");
    assert!(deployment_complete_now(&w), "rollout did not complete");
    let sizes: Vec<(String, i32)> = w
        .rss
        .iter()
        .map(|r| (objects::annotations(&r.metadata)["deployment.kubernetes.io/revision"].clone(), rs_replicas(r)))
        .collect();
    assert_eq!(sizes, vec![("1".to_string(), 0), ("2".to_string(), replicas)]);
    assert_eq!(w.d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"], "2");
}

fn deployment_complete_now(w: &World) -> bool {
    let s = w.d.status.clone().unwrap_or_default();
    let r = replicas(&w.d);
    s.updated_replicas == Some(r)
        && s.replicas == Some(r)
        && s.available_replicas == Some(r)
        && s.observed_generation == w.d.metadata.generation
}

#[test]
fn rolling_update_with_default_percentages_never_drops_below_minimum() {
    rolling_update_keeps_availability(4, IntOrString::String("25%".into()), IntOrString::String("25%".into()));
    rolling_update_keeps_availability(10, IntOrString::String("25%".into()), IntOrString::String("25%".into()));
}

#[test]
fn rolling_update_with_zero_unavailable_surges_first() {
    rolling_update_keeps_availability(3, IntOrString::Int(1), IntOrString::Int(0));
}

#[test]
fn rolling_update_with_zero_surge_goes_down_first() {
    rolling_update_keeps_availability(5, IntOrString::Int(0), IntOrString::Int(2));
    rolling_update_keeps_availability(2, IntOrString::String("0%".into()), IntOrString::String("1%".into()));
}

#[test]
fn kubectl_scale_resizes_the_only_replica_set() {
    let mut w = World::new(httpd(3, "httpd"));
    w.settle();
    w.d.spec.as_mut().unwrap().replicas = Some(5);
    w.d.metadata.generation = Some(2);
    let writes = w.reconcile();
    let name = objects::name(&w.rss[0].metadata).to_string();
    assert_eq!(summaries(&writes)[0], format!("update ReplicaSet default/{name}"));
    assert_eq!(object(&writes, 0)["spec"]["replicas"], 5);
    assert_eq!(object(&writes, 0)["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"], "5");
    assert_eq!(object(&writes, 0)["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"], "7");
    let event = writes.iter().rev().find_map(|w| w.object().filter(|o| o["kind"] == "Event")).unwrap();
    assert_eq!(event["message"], format!("Scaled up replica set {name} to 5 from 3"));
    w.settle();
    assert_eq!(w.d.status.as_ref().unwrap().available_replicas, Some(5));
}

#[test]
fn recreate_scales_old_to_zero_before_creating_the_new() {
    let mut d = httpd(2, "httpd:1");
    d.spec.as_mut().unwrap().strategy =
        Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    let mut w = World::new(d);
    w.settle();
    w.d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("httpd:2".into());
    w.d.metadata.generation = Some(2);
    let writes = w.reconcile();
    assert_eq!(summaries(&writes)[0], format!("update ReplicaSet default/{}", objects::name(&w.rss[0].metadata)));
    assert_eq!(w.rss.len(), 1, "no new ReplicaSet while old pods run");
    assert_eq!(rs_replicas(&w.rss[0]), 0);
    // The old ReplicaSet still reports pods until its controller catches up: no new one yet.
    assert!(w.reconcile().iter().all(|x| !matches!(x, Write::Create { kind: Kind::ReplicaSet, .. })));
    w.step_replica_sets();
    let writes = w.reconcile();
    assert!(writes.iter().any(|x| matches!(x, Write::Create { kind: Kind::ReplicaSet, .. })));
    w.settle();
    assert_eq!(w.rss.iter().map(rs_replicas).collect::<Vec<_>>(), vec![0, 2]);
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let mut d = httpd(1, "v0");
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let mut w = World::new(d);
    w.settle();
    for (generation, image) in ["v1", "v2", "v3"].iter().enumerate() {
        w.d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some(image.to_string());
        w.d.metadata.generation = Some(generation as i64 + 2);
        w.settle();
    }
    let revisions: Vec<String> =
        w.rss.iter().map(|r| objects::annotations(&r.metadata)["deployment.kubernetes.io/revision"].clone()).collect();
    assert_eq!(revisions, vec!["3", "4"]);
}

#[test]
fn progress_deadline_requeue_and_timeout() {
    let mut d = httpd(1, "httpd");
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        conditions: Some(vec![new_condition("Progressing", "True", REASON_RS_UPDATED, "x", at(-100))]),
        ..DeploymentStatus::default()
    });
    assert_eq!(requeue_after(&d, now()), Some(std::time::Duration::from_secs(501)));

    // A rollout whose pod never becomes available.
    let d0 = httpd(1, "httpd");
    let mut w = World::new(d0.clone());
    w.apply(&reconcile_deployment(&inputs(&d0, &[])));
    for rs in &mut w.rss {
        rs.status = Some(ReplicaSetStatus { replicas: 1, observed_generation: Some(1), ..ReplicaSetStatus::default() });
    }
    let at_time = |w: &World, t| {
        let rss = w.rss.clone();
        let d = w.d.clone();
        reconcile_deployment(&DeploymentInputs {
            deployment: &d,
            replica_sets: rss.iter().collect(),
            pods: Vec::new(),
            now: t,
        })
    };
    // The pod appearing is progress...
    let writes = at_time(&w, at(1000));
    w.apply(&writes);
    let status = objects::to_value(&w.d.status);
    assert_eq!(condition_of(&status, "Progressing")["reason"], "ReplicaSetUpdated");
    let rs_name = objects::name(&w.rss[0].metadata).to_string();
    assert_eq!(condition_of(&status, "Progressing")["message"], format!("ReplicaSet \"{rs_name}\" is progressing."));
    // ...but nothing after it for longer than progressDeadlineSeconds times out.
    let writes = at_time(&w, at(1700));
    w.apply(&writes);
    let status = objects::to_value(&w.d.status);
    let p = condition_of(&status, "Progressing");
    assert_eq!((p["status"].as_str(), p["reason"].as_str()), (Some("False"), Some("ProgressDeadlineExceeded")));
    assert_eq!(p["message"], format!("ReplicaSet \"{rs_name}\" has timed out progressing."));
}

#[test]
fn paused_deployments_say_so() {
    let mut d = httpd(1, "httpd");
    d.spec.as_mut().unwrap().paused = Some(true);
    let writes = reconcile_deployment(&inputs(&d, &[]));
    let status = &writes
        .iter()
        .find_map(|w| match w {
            Write::ReplaceStatus { object, .. } => Some(object.clone()),
            _ => None,
        })
        .unwrap()["status"];
    let p = condition_of(status, "Progressing");
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str(), p["message"].as_str()),
        (Some("Unknown"), Some("DeploymentPaused"), Some("Deployment is paused"))
    );
    assert!(writes.iter().all(|w| !matches!(w, Write::Create { kind: Kind::ReplicaSet, .. })), "paused: no rollout");
}

#[test]
fn orphan_replica_sets_are_adopted_first() {
    let d = httpd(1, "httpd");
    let mut orphan = ReplicaSet { metadata: meta("default", "httpd-orphan"), ..ReplicaSet::default() };
    orphan.metadata.labels = Some(labels(&[("run", "httpd")]));
    let rss = [orphan];
    let writes = reconcile_deployment(&inputs(&d, &rss));
    assert_eq!(summaries(&writes).len(), 1);
    assert!(summaries(&writes)[0].starts_with("patch ReplicaSet default/httpd-orphan"));
    assert!(summaries(&writes)[0].contains(r#""kind":"Deployment","name":"httpd""#));
}
