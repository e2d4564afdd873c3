//! Snapshot tests of the pure ReplicaSet reconcile: the seeds' `kubia` ReplicaSet, adoption and
//! release, upstream's delete preference, status with `minReadySeconds`, `ReplicaFailure`.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::apps::v1::ReplicaSetSpec;
use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use super::*;
use crate::fixtures::*;

/// The seeds' ReplicaSet: `kubia`, 3 replicas, `app=kubia`, `nodeSelector gpu: "true"`.
fn kubia_rs(replicas: i32) -> ReplicaSet {
    let mut m = meta("default", "kubia");
    m.generation = Some(2);
    ReplicaSet {
        metadata: m,
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: None,
            selector: LabelSelector { match_labels: Some(labels(&[("app", "kubia")])), match_expressions: None },
            template: Some(PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&[("app", "kubia")])), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![kubia_container()],
                    node_selector: Some(labels(&[("gpu", "true")])),
                    ..PodSpec::default()
                }),
            }),
        }),
        status: None,
    }
}

fn owned(mut p: Pod, rs: &ReplicaSet) -> Pod {
    p.metadata.owner_references = Some(vec![objects::controller_ref("apps/v1", "ReplicaSet", &rs.metadata)]);
    p
}

fn inputs<'a>(rs: &'a ReplicaSet, pods: &'a [Pod]) -> ReplicaSetInputs<'a> {
    ReplicaSetInputs { replica_set: rs, pods: pods.iter().collect(), replica_sets: vec![rs], now: now() }
}

#[test]
fn kubia_scales_up_from_nothing() {
    let rs = kubia_rs(3);
    let writes = reconcile_replica_set(&inputs(&rs, &[]));
    assert_eq!(
        summaries(&writes),
        vec![
            "create Pod default/kubia-",
            "create Pod default/kubia-",
            "create Pod default/kubia-",
            "update ReplicaSet default/kubia/status"
        ]
    );
    let p = object(&writes, 0);
    assert_eq!(p["metadata"]["generateName"], "kubia-");
    assert_eq!(p["metadata"]["labels"]["app"], "kubia");
    assert_eq!(p["spec"]["nodeSelector"]["gpu"], "true");
    assert_eq!(p["spec"]["containers"][0]["ports"][0]["name"], "http");
    let owner = &p["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["apiVersion"], "apps/v1");
    assert_eq!((owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()), (Some(true), Some(true)));
    let Write::Create { created_event: Some(ev), .. } = &writes[0] else { panic!("no event") };
    assert_eq!(ev["reason"], "SuccessfulCreate");
    assert_eq!(ev["message"], "Created pod: {name}");
    let status = &object(&writes, 3)["status"];
    assert_eq!(status["replicas"], 0);
    assert_eq!(status["observedGeneration"], 2);
}

#[test]
fn orphans_are_adopted_and_strays_released() {
    let rs = kubia_rs(2);
    let orphan = pod("kubia-orphan", "10.44.0.1", true, "n1");
    let mut stray = owned(pod("kubia-stray", "10.44.0.2", true, "n1"), &rs);
    stray.metadata.labels = Some(labels(&[("app", "other")]));
    let mut foreign = pod("other-owned", "10.44.0.3", true, "n1");
    foreign.metadata.owner_references =
        Some(vec![objects::controller_ref("apps/v1", "ReplicaSet", &meta("default", "x"))]);
    let pods = [orphan, stray, foreign];
    let writes = manage_replicas(&inputs(&rs, &pods));
    assert_eq!(
        summaries(&writes),
        vec![
            format!(
                "patch Pod default/kubia-orphan {}",
                r#"{"metadata":{"ownerReferences":[{"apiVersion":"apps/v1","blockOwnerDeletion":true,"controller":true,"kind":"ReplicaSet","name":"kubia","uid":"uid-kubia"}],"uid":"uid-kubia-orphan"}}"#
            ),
            r#"patch Pod default/kubia-stray {"metadata":{"ownerReferences":null,"uid":"uid-kubia-stray"}}"#
                .to_string(),
            "create Pod default/kubia-".to_string(),
        ]
    );
    // A ReplicaSet being deleted neither adopts nor creates.
    let mut going = rs.clone();
    going.metadata.deletion_timestamp = Some(Time(now()));
    assert!(manage_replicas(&inputs(&going, &pods)).is_empty());
}

#[test]
fn scale_down_prefers_unscheduled_pending_not_ready_then_newest() {
    let rs = kubia_rs(1);
    let mut unscheduled = owned(pod("a-unscheduled", "", false, ""), &rs);
    unscheduled.status.as_mut().unwrap().phase = Some("Pending".into());
    let mut pending = owned(pod("b-pending", "", false, "n1"), &rs);
    pending.status.as_mut().unwrap().phase = Some("Pending".into());
    let not_ready = owned(pod("c-not-ready", "10.0.0.3", false, "n1"), &rs);
    let mut ready_new = owned(pod("d-ready-recently", "10.0.0.4", true, "n2"), &rs);
    ready_new.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time = Some(Time(at(-10)));
    let ready_old = owned(pod("e-ready-long", "10.0.0.5", true, "n3"), &rs);
    let mut restarted = owned(pod("f-restarted", "10.0.0.6", true, "n4"), &rs);
    restarted.status.as_mut().unwrap().container_statuses =
        Some(vec![ContainerStatus { name: "kubia".into(), restart_count: 5, ..ContainerStatus::default() }]);
    let pods = [ready_old, restarted, ready_new, not_ready, pending, unscheduled];
    let writes = manage_replicas(&inputs(&rs, &pods));
    assert_eq!(
        summaries(&writes),
        vec![
            "delete Pod default/a-unscheduled",
            "delete Pod default/b-pending",
            "delete Pod default/c-not-ready",
            "delete Pod default/d-ready-recently",
            "delete Pod default/f-restarted",
        ]
    );
    let Write::Delete { uid, .. } = &writes[0] else { panic!() };
    assert_eq!(uid.as_deref(), Some("uid-a-unscheduled"), "deletes are preconditioned on the UID");
}

#[test]
fn colocated_pods_go_first_and_deletion_cost_overrides() {
    let rs = kubia_rs(2);
    let a = owned(pod("a", "10.0.0.1", true, "crowded"), &rs);
    let b = owned(pod("b", "10.0.0.2", true, "crowded"), &rs);
    let c = owned(pod("c", "10.0.0.3", true, "alone"), &rs);
    let pods = [a, b, c];
    let writes = manage_replicas(&inputs(&rs, &pods));
    let deleted = summaries(&writes);
    assert_eq!(deleted.len(), 1);
    assert!(deleted[0].contains("default/a") || deleted[0].contains("default/b"), "{deleted:?}");
    let mut pods = pods;
    pods[2].metadata.annotations = Some(labels(&[(ANNOTATION_DELETION_COST, "-10")]));
    assert_eq!(summaries(&manage_replicas(&inputs(&rs, &pods))), vec!["delete Pod default/c"]);
}

#[test]
fn status_counts_ready_and_available_after_min_ready_seconds() {
    let mut rs = kubia_rs(3);
    rs.spec.as_mut().unwrap().min_ready_seconds = Some(300);
    let mut fresh = owned(pod("fresh", "10.0.0.1", true, "n1"), &rs);
    fresh.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time = Some(Time(at(-60)));
    let old = owned(pod("old", "10.0.0.2", true, "n1"), &rs);
    let mut unlabelled = owned(pod("unlabelled", "10.0.0.3", false, "n1"), &rs);
    unlabelled.metadata.labels.as_mut().unwrap().insert("extra".into(), "x".into());
    let pods = [fresh, old, unlabelled];
    let i = inputs(&rs, &pods);
    let status = calculate_status(&i, None);
    assert_eq!(
        (status.replicas, status.fully_labeled_replicas, status.ready_replicas, status.available_replicas),
        (3, Some(3), Some(2), Some(1))
    );
    assert!(manage_replicas(&i).is_empty());
    // The fresh pod becomes available 300 s after it turned ready: look again then.
    assert_eq!(requeue_after(&i), Some(Duration::from_secs(241)));
    // Writing the status once makes it stable.
    let w = replica_set_status(&i, None).unwrap();
    let stored: Vec<ReplicaSet> = as_stored(std::slice::from_ref(&w), Kind::ReplicaSet);
    assert!(replica_set_status(&inputs(&stored[0], &pods), None).is_none());
}

#[test]
fn failed_creates_set_replica_failure_until_they_succeed() {
    let rs = kubia_rs(1);
    let err = ManageError { creating: true, message: "pods \"kubia-x\" is forbidden: quota".into() };
    let w = replica_set_status(&inputs(&rs, &[]), Some(&err)).unwrap();
    let c = &w.object().unwrap()["status"]["conditions"][0];
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str(), c["reason"].as_str()),
        (Some("ReplicaFailure"), Some("True"), Some("FailedCreate"))
    );
    assert_eq!(c["message"], "pods \"kubia-x\" is forbidden: quota");
    let failed: Vec<ReplicaSet> = as_stored(std::slice::from_ref(&w), Kind::ReplicaSet);
    // Still failing: unchanged. Then success clears it.
    assert!(replica_set_status(&inputs(&failed[0], &[]), Some(&err)).is_none());
    let cleared = replica_set_status(&inputs(&failed[0], &[]), None).unwrap();
    assert!(cleared.object().unwrap()["status"].get("conditions").is_none());
    let ev = failed_event(&rs, &err, now());
    assert_eq!(ev.object().unwrap()["message"], "Error creating: pods \"kubia-x\" is forbidden: quota");
}

#[test]
fn creates_are_capped_at_the_burst() {
    let rs = kubia_rs(700);
    let writes = manage_replicas(&inputs(&rs, &[]));
    assert_eq!(writes.len(), BURST_REPLICAS);
}

#[test]
fn pod_events_map_to_owner_or_candidate_adopters() {
    let rs = kubia_rs(1);
    let mut other = kubia_rs(1);
    other.metadata = meta("default", "other");
    other.spec.as_mut().unwrap().selector.match_labels = Some(labels(&[("app", "other")]));
    let orphan = pod("orphan", "", false, "");
    let mine = owned(pod("mine", "", false, ""), &rs);
    let rss = [rs.clone(), other];
    assert_eq!(replica_sets_for_pod(rss.iter(), &[Some(&orphan)]), vec![ObjectKey::new("default", "kubia")]);
    assert_eq!(replica_sets_for_pod(rss.iter(), &[Some(&mine)]), vec![ObjectKey::new("default", "kubia")]);
}
