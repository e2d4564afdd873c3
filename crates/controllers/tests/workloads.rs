//! The ReplicaSet and Deployment controllers against a real API server: the seeds' `kubia`
//! ReplicaSet (pods named `kubia-xxxxx`, scaling, delete preference, adoption and release) and
//! `httpd` Deployment (first rollout, status and conditions as `kubectl rollout status` reads
//! them, a rolling update that keeps `replicas - maxUnavailable` pods ready, `kubectl scale`).
//! A simulated node agent makes pods Running and Ready.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Cluster, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

fn generated(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|s| s.len() == 5 && s.chars().all(|c| ALPHABET.contains(c)))
}

fn kubia_rs(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "kubia"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "kubia"}},
            "template": {
                "metadata": {"labels": {"app": "kubia"}},
                "spec": {
                    "nodeSelector": {"gpu": "true"},
                    "containers": [{"name": "kubia", "image": "luksa/kubia",
                        "ports": [{"name": "http", "containerPort": 8080}, {"name": "https", "containerPort": 8443}]}],
                },
            },
        },
    })
}

fn active(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

fn owned_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    active(pods)
        .into_iter()
        .filter(|p| p.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true)))
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubia_replica_set_creates_scales_adopts_and_releases() {
    let mut c = Cluster::start().await;
    c.run(|client, rx| {
        pier_controllers::run_replicaset_controller(client, Default::default(), async move {
            let _ = rx.await;
        })
    });
    let rs: ReplicaSet = c.create("default", kubia_rs(3)).await;
    let uid = rs.metadata.uid.clone().unwrap();
    let pods: Api<Pod> = c.api("default");
    let rss: Api<ReplicaSet> = c.api("default");

    let created = wait_for("3 kubia pods", || async {
        let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        if owned_by(&list, &uid).len() == 3 { Ok(list) } else { Err(format!("{} pods", list.len())) }
    })
    .await;
    for p in &created {
        let name = p.metadata.name.as_deref().unwrap();
        assert!(generated(name, "kubia-"), "{name}");
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "kubia");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.block_owner_deletion),
            ("ReplicaSet", "kubia", Some(true))
        );
        assert_eq!(p.spec.as_ref().unwrap().node_selector.as_ref().unwrap()["gpu"], "true");
    }
    let status = wait_for("status replicas=3", || async {
        let s = rss.get("kubia").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        if s.replicas == 3 && s.observed_generation == Some(1) { Ok(s) } else { Err(format!("{s:?}")) }
    })
    .await;
    assert_eq!(
        (status.fully_labeled_replicas, status.ready_replicas.unwrap_or(0), status.available_replicas.unwrap_or(0)),
        (Some(3), 0, 0)
    );
    let events: Api<Event> = c.api("default");
    let created_events = events.list(&ListParams::default()).await.unwrap().items;
    let messages: Vec<String> = created_events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages.iter().all(|m| m.starts_with("Created pod: kubia-")), "{messages:?}");

    // Two pods become Ready, one does not.
    let names: Vec<String> = created.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    c.agent_set("default", &names[0], "10.44.0.1", true).await;
    c.agent_set("default", &names[1], "10.44.0.2", true).await;
    c.agent_set("default", &names[2], "10.44.0.3", false).await;
    wait_for("readyReplicas=2", || async {
        let s = rss.get("kubia").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        if s.ready_replicas == Some(2) && s.available_replicas == Some(2) { Ok(()) } else { Err(format!("{s:?}")) }
    })
    .await;

    // `kubectl scale rs kubia --replicas=2`: the not-ready pod goes first.
    rss.patch("kubia", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 2}}))).await.unwrap();
    let left = wait_for("2 pods left", || async {
        let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let mut v: Vec<String> = owned_by(&list, &uid).iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        v.sort();
        if v.len() == 2 { Ok(v) } else { Err(format!("{v:?}")) }
    })
    .await;
    let mut expect = vec![names[0].clone(), names[1].clone()];
    expect.sort();
    assert_eq!(left, expect, "the not-ready pod is deleted first");
    c.agent_finish_deletion("default", &names[2]).await;

    // An orphan with the ReplicaSet's labels is adopted; one too many, the (pending) orphan goes.
    let _: Pod = c
        .create(
            "default",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "kubia-orphan", "labels": {"app": "kubia"}},
                "spec": {"containers": [{"name": "kubia", "image": "luksa/kubia"}]},
            }),
        )
        .await;
    wait_for("orphan adopted and removed", || async {
        let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let orphan_gone = !active(&list).iter().any(|p| p.metadata.name.as_deref() == Some("kubia-orphan"));
        if orphan_gone && owned_by(&list, &uid).len() == 2 { Ok(()) } else { Err(format!("{} pods", list.len())) }
    })
    .await;

    // A pod relabelled away is released, and replaced.
    pods.patch(&names[0], &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"labels": {"app": "debug"}}})))
        .await
        .unwrap();
    wait_for("released and replaced", || async {
        let list = pods.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let released =
            list.iter().find(|p| p.metadata.name.as_deref() == Some(names[0].as_str())).ok_or("released pod gone")?;
        let free = released.metadata.owner_references.as_ref().is_none_or(|o| o.is_empty());
        let owned = owned_by(&list, &uid);
        let replacement = owned.iter().any(|p| !names.contains(p.metadata.name.as_ref().unwrap()));
        if free && owned.len() == 2 && replacement { Ok(()) } else { Err(format!("free={free} owned={}", owned.len())) }
    })
    .await;
    // The status before the relabel already had 2 replicas (both Ready): wait for the one that
    // counts the replacement, which is not Ready.
    wait_for("status replicas=2, 1 ready", || async {
        let s = rss.get("kubia").await.map_err(|e| e.to_string())?.status.unwrap_or_default();
        if s.replicas == 2 && s.observed_generation == Some(2) && s.ready_replicas == Some(1) {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
}

fn httpd(replicas: i32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "httpd"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"run": "httpd"}},
            "template": {
                "metadata": {"labels": {"run": "httpd"}},
                "spec": {"containers": [{"name": "httpd", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    })
}

/// What `kubectl rollout status` waits for: observed, all updated, no old pods, all available.
fn rolled_out(d: &Deployment) -> Result<(), String> {
    let s = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ok = s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want);
    if ok { Ok(()) } else { Err(format!("{s:?}")) }
}

fn condition(d: &Deployment, type_: &str) -> (String, String, String) {
    let c = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .cloned()
        .unwrap_or_default();
    (c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn httpd_deployment_rolls_out_updates_and_scales() {
    let mut c = Cluster::start().await;
    c.run_all();
    c.run_agent("default", true);
    let _: Deployment = c.create("default", httpd(4, "httpd:2.4")).await;
    let deployments: Api<Deployment> = c.api("default");
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");

    let d = wait_for("first rollout", || async {
        let d = deployments.get("httpd").await.map_err(|e| e.to_string())?;
        rolled_out(&d).map(|_| d)
    })
    .await;
    assert_eq!(
        condition(&d, "Available"),
        ("True".into(), "MinimumReplicasAvailable".into(), "Deployment has minimum availability.".into())
    );
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(rs_list.len(), 1);
    let rs1 = &rs_list[0];
    let name1 = rs1.metadata.name.clone().unwrap();
    let hash1 = rs1.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(name1, format!("httpd-{hash1}"));
    assert!(hash1.chars().all(|ch| "456789bcdf".contains(ch)), "{hash1}");
    assert_eq!(rs1.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()["pod-template-hash"], hash1);
    let a = rs1.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        (
            a["deployment.kubernetes.io/revision"].as_str(),
            a["deployment.kubernetes.io/desired-replicas"].as_str(),
            a["deployment.kubernetes.io/max-replicas"].as_str()
        ),
        ("1", "4", "5")
    );
    assert_eq!(d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"], "1");
    assert_eq!(
        condition(&d, "Progressing"),
        (
            "True".into(),
            "NewReplicaSetAvailable".into(),
            format!("ReplicaSet \"{name1}\" has successfully progressed.")
        )
    );
    let first_pods = pods.list(&ListParams::default().labels("run=httpd")).await.unwrap().items;
    assert!(active(&first_pods).iter().all(|p| generated(p.metadata.name.as_deref().unwrap(), &format!("{name1}-"))));

    // A new image: a rolling update that never has fewer than 4 - 1 ready pods.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let pods = pods.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut lowest = i32::MAX;
            for _ in 0..800 {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if let Ok(list) = pods.list(&ListParams::default().labels("run=httpd")).await {
                    let n = active(&list.items).iter().filter(|p| ready(p)).count() as i32;
                    lowest = lowest.min(n);
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            lowest
        })
    };
    deployments
        .patch(
            "httpd",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"template": {"spec": {"containers": [{"name": "httpd", "image": "httpd:2.5"}]}}}}),
            ),
        )
        .await
        .unwrap();
    let d = wait_for("second rollout", || async {
        let d = deployments.get("httpd").await.map_err(|e| e.to_string())?;
        rolled_out(&d)?;
        if d.metadata.annotations.as_ref().and_then(|a| a.get("deployment.kubernetes.io/revision")).map(String::as_str)
            == Some("2")
        {
            Ok(d)
        } else {
            Err("revision".into())
        }
    })
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(d.status.as_ref().unwrap().observed_generation, Some(2));
    let rs_list = rss.list(&ListParams::default()).await.unwrap().items;
    let mut sizes: Vec<(String, i32)> = rs_list
        .iter()
        .map(|r| {
            (
                r.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"].clone(),
                r.spec.as_ref().unwrap().replicas.unwrap(),
            )
        })
        .collect();
    sizes.sort();
    assert_eq!(sizes, vec![("1".to_string(), 0), ("2".to_string(), 4)]);
    let lowest = watcher.await.unwrap();
    assert!(lowest >= 3, "ready pods dropped to {lowest} during the rollout");

    // `kubectl scale deploy httpd --replicas=6` (through the scale subresource).
    deployments
        .patch_scale("httpd", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 6}})))
        .await
        .unwrap();
    wait_for("scaled to 6", || async {
        let d = deployments.get("httpd").await.map_err(|e| e.to_string())?;
        rolled_out(&d)
    })
    .await;
    let events: Api<Event> = c.api("default");
    let scaling: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message)
        .collect();
    assert!(scaling.contains(&format!("Scaled up replica set {name1} to 4")), "{scaling:?}");
    assert!(scaling.iter().any(|m| m.ends_with("to 6 from 4")), "{scaling:?}");
}

/// `kubectl rollout status` (when kubectl is installed) against the controllers' status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_rollout_status_prints_upstreams_lines() {
    let Ok(kubectl) = which_kubectl() else {
        eprintln!("kubectl not installed; skipping");
        return;
    };
    let mut c = Cluster::start().await;
    c.run_all();
    c.run_agent("default", true);
    let home = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let kubectl = kubectl.clone();
        let server = c.url.clone();
        let home = home.path().to_path_buf();
        async move {
            tokio::process::Command::new(kubectl)
                .env("HOME", &home)
                .env("KUBECONFIG", home.join("none"))
                .args(["--server", &server, "--request-timeout", "20s"])
                .args(args)
                .output()
                .await
                .unwrap()
        }
    };
    let _: Deployment = c.create("default", httpd(3, "httpd:2.4")).await;
    let out = run(vec!["rollout".into(), "status".into(), "deployment/httpd".into(), "--timeout=20s".into()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("kubectl rollout status:\n{stdout}");
    assert!(out.status.success(), "kubectl failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.trim_end().ends_with("deployment \"httpd\" successfully rolled out"), "{stdout}");
    for line in stdout.lines().filter(|l| l.starts_with("Waiting")) {
        assert!(line.starts_with("Waiting for deployment \"httpd\" rollout to finish: "), "{line}");
    }
}

fn which_kubectl() -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|d| d.join("kubectl")).find(|p| p.is_file()).ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreate_never_runs_both_templates_and_history_is_trimmed() {
    let mut c = Cluster::start().await;
    c.run_all();
    c.run_agent("default", true);
    let mut d = httpd(2, "httpd:1");
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    d["spec"]["revisionHistoryLimit"] = json!(1);
    let _: Deployment = c.create("default", d).await;
    let deployments: Api<Deployment> = c.api("default");
    let rss: Api<ReplicaSet> = c.api("default");
    let pods: Api<Pod> = c.api("default");
    wait_for("first rollout", || async { rolled_out(&deployments.get("httpd").await.map_err(|e| e.to_string())?) })
        .await;

    for (n, image) in ["httpd:2", "httpd:3"].iter().enumerate() {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mixed = {
            let (pods, done) = (pods.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen_mixed = false;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Ok(list) = pods.list(&ListParams::default().labels("run=httpd")).await {
                        let mut hashes: Vec<String> = active(&list.items)
                            .iter()
                            .filter_map(|p| {
                                p.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash").cloned())
                            })
                            .collect();
                        hashes.sort();
                        hashes.dedup();
                        seen_mixed |= hashes.len() > 1;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                seen_mixed
            })
        };
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "httpd", "image": image}]}}}});
        deployments.patch("httpd", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let revision = (n + 2).to_string();
        wait_for("recreated", || async {
            let d = deployments.get("httpd").await.map_err(|e| e.to_string())?;
            rolled_out(&d)?;
            let r = d.metadata.annotations.as_ref().and_then(|a| a.get("deployment.kubernetes.io/revision")).cloned();
            if r.as_deref() == Some(revision.as_str()) { Ok(()) } else { Err(format!("revision {r:?}")) }
        })
        .await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(!mixed.await.unwrap(), "pods of two templates ran at once");
    }
    // revisionHistoryLimit 1: revision 1's ReplicaSet is gone, 2 is kept at zero, 3 runs.
    let mut revisions = wait_for("history trimmed", || async {
        let list = rss.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
        let v: Vec<(String, i32)> = list
            .iter()
            .map(|r| {
                (
                    r.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"].clone(),
                    r.spec.as_ref().unwrap().replicas.unwrap(),
                )
            })
            .collect();
        if v.len() == 2 { Ok(v) } else { Err(format!("{v:?}")) }
    })
    .await;
    revisions.sort();
    assert_eq!(revisions, vec![("2".to_string(), 0), ("3".to_string(), 2)]);
}
