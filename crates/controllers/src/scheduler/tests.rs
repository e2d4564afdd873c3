//! Tests of the pure scheduler: the seeds' `nodeSelector: gpu: "true"` before and after the
//! node is labelled, upstream's `FailedScheduling` message shapes, taints, tolerations,
//! unschedulable and not-ready nodes, node affinity, least-loaded choice.

#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector};

use super::*;
use crate::fixtures::*;

fn gpu_pod(name: &str) -> Pod {
    let mut p = pod(name, "", false, "");
    p.spec.as_mut().unwrap().node_selector = Some(labels(&[("gpu", "true")]));
    p.status = None;
    p
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: Some(value.to_string()).filter(|v| !v.is_empty()),
        effect: effect.into(),
        time_added: None,
    }
}

const NO_GPU: &str = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

#[test]
fn a_gpu_pod_waits_for_a_gpu_node_with_upstreams_message() {
    let p = gpu_pod("kubia");
    let plain = node("server02", &[], true);
    let writes = schedule(&p, &[&plain], &[], now());
    assert_eq!(
        summaries(&writes),
        vec!["update Pod default/kubia/status", "create Event default/kubia.17a6101701650000"]
    );
    let cond = &object(&writes, 0)["status"]["conditions"][0];
    assert_eq!(
        (cond["type"].as_str(), cond["status"].as_str(), cond["reason"].as_str(), cond["message"].as_str()),
        (Some("PodScheduled"), Some("False"), Some("Unschedulable"), Some(NO_GPU))
    );
    let ev = object(&writes, 1);
    assert_eq!(
        (ev["type"].as_str(), ev["reason"].as_str(), ev["message"].as_str()),
        (Some("Warning"), Some("FailedScheduling"), Some(NO_GPU))
    );
    assert_eq!(ev["source"]["component"], "default-scheduler");
    assert_eq!(ev["involvedObject"]["kind"], "Pod");

    // Tried again with nothing changed: no new condition, no new event.
    let stored: Vec<Pod> = as_stored(&writes[..1], Kind::Pod);
    assert!(schedule(&stored[0], &[&plain], &[], at(60)).is_empty());

    // `kubectl label node server02 gpu=true`: bound.
    let gpu = node("server02", &[("gpu", "true")], true);
    let writes = schedule(&stored[0], &[&gpu], &[], at(60));
    assert_eq!(summaries(&writes)[0], "bind Pod default/kubia to server02");
    assert_eq!(object(&writes, 1)["message"], "Successfully assigned default/kubia to server02");
    assert_eq!(object(&writes, 1)["reason"], "Scheduled");
}

#[test]
fn the_least_loaded_fitting_node_wins() {
    let nodes = [node("a", &[("gpu", "true")], true), node("b", &[("gpu", "true")], true), node("c", &[], true)];
    let busy = [pod("x", "10.0.0.1", true, "a"), pod("y", "10.0.0.2", true, "a"), pod("z", "10.0.0.3", true, "b")];
    let n: Vec<&Node> = nodes.iter().collect();
    let b: Vec<&Pod> = busy.iter().collect();
    assert_eq!(choose_node(&gpu_pod("p"), &n, &b), Ok("b".to_string()));
    assert_eq!(choose_node(&gpu_pod("p"), &n, &[]), Ok("a".to_string()), "ties go by name");
}

#[test]
fn reasons_are_counted_per_node_in_upstreams_order_and_format() {
    let mut cordoned = node("cordoned", &[("gpu", "true")], true);
    cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    let mut tainted = node("tainted", &[("gpu", "true")], true);
    tainted.spec.as_mut().unwrap().taints =
        Some(vec![taint("node-role.kubernetes.io/control-plane", "", "NoSchedule")]);
    let not_ready = node("not-ready", &[("gpu", "true")], false);
    let plain = node("plain", &[], true);
    let nodes = [cordoned, tainted, not_ready, plain];
    let n: Vec<&Node> = nodes.iter().collect();
    assert_eq!(
        choose_node(&gpu_pod("p"), &n, &[]),
        Err("0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, \
             1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, \
             1 node(s) were unschedulable. \
             preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling."
            .to_string())
    );
    assert_eq!(choose_node(&gpu_pod("p"), &[], &[]), Err("no nodes available to schedule pods".to_string()));
}

#[test]
fn tolerations_and_prefer_no_schedule() {
    let mut tainted = node("n", &[], true);
    tainted.spec.as_mut().unwrap().taints =
        Some(vec![taint("dedicated", "gpu", "NoSchedule"), taint("soft", "x", "PreferNoSchedule")]);
    let mut p = pod("p", "", false, "");
    assert!(choose_node(&p, &[&tainted], &[]).is_err());
    p.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
        key: Some("dedicated".into()),
        operator: Some("Equal".into()),
        value: Some("gpu".into()),
        effect: Some("NoSchedule".into()),
        toleration_seconds: None,
    }]);
    assert_eq!(choose_node(&p, &[&tainted], &[]), Ok("n".into()));
    let mut everything = pod("q", "", false, "");
    everything.spec.as_mut().unwrap().tolerations =
        Some(vec![Toleration { operator: Some("Exists".into()), ..Toleration::default() }]);
    let mut cordoned = node("c", &[], false);
    cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
    assert_eq!(choose_node(&everything, &[&cordoned], &[]), Ok("c".into()));
}

#[test]
fn required_node_affinity_is_honoured() {
    let mut p = pod("p", "", false, "");
    p.spec.as_mut().unwrap().affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "disk".into(),
                        operator: "In".into(),
                        values: Some(vec!["ssd".into()]),
                    }]),
                    match_fields: None,
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    });
    let hdd = node("hdd", &[("disk", "hdd")], true);
    let ssd = node("ssd", &[("disk", "ssd")], true);
    assert_eq!(choose_node(&p, &[&hdd, &ssd], &[]), Ok("ssd".into()));
}

#[test]
fn bound_deleted_and_foreign_pods_are_left_alone() {
    let n = node("n", &[], true);
    assert!(schedule(&pod("bound", "", false, "n"), &[&n], &[], now()).is_empty());
    let mut other = pod("other", "", false, "");
    other.spec.as_mut().unwrap().scheduler_name = Some("my-scheduler".into());
    assert!(schedule(&other, &[&n], &[], now()).is_empty());
    let mut done = pod("done", "", false, "");
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(schedule(&done, &[&n], &[], now()).is_empty());
}
