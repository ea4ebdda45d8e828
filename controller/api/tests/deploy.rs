//! `controller/deploy/` is a kustomization that applies: every resource it lists exists, every
//! document is a Kubernetes object, the CRDs are the generated ones, and the controller's
//! ClusterRole grants what the controller does.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn docs(rel: &str) -> Result<Vec<Value>> {
    let path = deploy_dir().join(rel);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc).with_context(|| format!("parsing {rel}"))?;
        if !v.is_null() {
            out.push(serde_json::to_value(v)?);
        }
    }
    Ok(out)
}

fn kustomization() -> Result<Value> {
    docs("kustomization.yaml")?
        .into_iter()
        .next()
        .context("empty kustomization.yaml")
}

fn resources() -> Result<Vec<String>> {
    let k = kustomization()?;
    Ok(k["resources"]
        .as_array()
        .context("kustomization has no resources")?
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect())
}

/// Every object the kustomization applies.
fn objects() -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for r in resources()? {
        for d in docs(&r)? {
            out.push((r.clone(), d));
        }
    }
    Ok(out)
}

#[test]
fn every_resource_exists_and_is_an_object() -> Result<()> {
    let k = kustomization()?;
    assert_eq!(k["kind"], "Kustomization");
    let listed = resources()?;
    ensure!(!listed.is_empty(), "no resources");
    for r in &listed {
        let docs = docs(r)?;
        ensure!(!docs.is_empty(), "{r} has no YAML document");
        for (i, d) in docs.iter().enumerate() {
            for field in ["apiVersion", "kind"] {
                ensure!(
                    d[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{r}#{i}: no {field}"
                );
            }
            ensure!(
                d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{r}#{i}: no metadata.name"
            );
        }
    }
    // And nothing in the tree is left out of the kustomization.
    let mut on_disk = BTreeSet::new();
    for sub in ["", "crds", "rbac", "controller", "netboot"] {
        for e in std::fs::read_dir(deploy_dir().join(sub))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let rel = p.strip_prefix(deploy_dir())?.to_string_lossy().into_owned();
                if rel != "kustomization.yaml" {
                    on_disk.insert(rel);
                }
            }
        }
    }
    let listed: BTreeSet<String> = listed.into_iter().collect();
    assert_eq!(on_disk, listed, "files on disk vs kustomization resources");
    Ok(())
}

#[test]
fn crds_listed_are_the_generated_ones() -> Result<()> {
    let listed = resources()?;
    for g in controller_api::crds() {
        let rel = format!("crds/{}", g.file_name);
        assert!(listed.contains(&rel), "{rel} not in kustomization");
    }
    Ok(())
}

fn rule_allows(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
    let has = |v: &Value, s: &str| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|x| x == s || x == "*"))
    };
    rules.iter().any(|r| {
        has(&r["apiGroups"], group) && has(&r["resources"], resource) && has(&r["verbs"], verb)
    })
}

#[test]
fn controller_role_grants_what_the_controller_does() -> Result<()> {
    let objs = objects()?;
    let role = objs
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "ferrox-controller")
        .context("ClusterRole ferrox-controller")?;
    let rules = role["rules"].as_array().context("rules")?;
    let needed: &[(&str, &str, &[&str])] = &[
        (
            "metal3.io",
            "baremetalhosts",
            &["get", "list", "watch", "update", "patch"],
        ),
        (
            "metal3.io",
            "baremetalhosts/status",
            &["get", "update", "patch"],
        ),
        ("metal3.io", "baremetalhosts/finalizers", &["update"]),
        (
            "metal3.io",
            "hardwaredata",
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        ("", "secrets", &["get", "list", "watch"]),
        ("", "events", &["create", "patch"]),
        (
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"],
        ),
    ];
    for (group, resource, verbs) in needed {
        for verb in *verbs {
            assert!(
                rule_allows(rules, group, resource, verb),
                "ClusterRole lacks {verb} on {group}/{resource}"
            );
        }
    }
    // Least privilege: the controller never writes Secrets.
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !rule_allows(rules, "", "secrets", verb),
            "{verb} secrets granted"
        );
    }

    let binding = objs
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == "ClusterRoleBinding")
        .context("ClusterRoleBinding")?;
    assert_eq!(binding["roleRef"]["name"], "ferrox-controller");
    assert_eq!(binding["subjects"][0]["name"], "ferrox-controller");
    assert_eq!(binding["subjects"][0]["namespace"], "ferrox-system");
    Ok(())
}

#[test]
fn deployments_are_wired() -> Result<()> {
    let objs = objects()?;
    let deployment = |name: &str| -> Result<Value> {
        objs.iter()
            .map(|(_, o)| o)
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
            .cloned()
            .with_context(|| format!("Deployment {name}"))
    };
    let controller = deployment("ferrox-controller")?;
    let pod = &controller["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "ferrox-controller");
    assert_eq!(
        controller["spec"]["selector"]["matchLabels"],
        controller["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .map(|n| serde_json::json!({"app.kubernetes.io/name": n}))
            .unwrap_or_default()
    );

    // netboot runs beside the controller, in the same pod, on the host's network.
    assert_eq!(pod["hostNetwork"], true);
    let container = |name: &str| -> Result<Value> {
        pod["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .cloned()
            .with_context(|| format!("container {name}"))
    };
    let ctl = container("controller")?;
    let netboot = container("netboot")?;
    let caps = &netboot["securityContext"]["capabilities"]["add"];
    for cap in ["NET_ADMIN", "NET_BIND_SERVICE"] {
        assert!(
            caps.as_array().is_some_and(|a| a.iter().any(|c| c == cap)),
            "netboot lacks {cap}"
        );
    }
    let arg = |c: &Value, flag: &str| -> Option<String> {
        c["args"].as_array()?.iter().find_map(|a| {
            a.as_str()?
                .strip_prefix(&format!("--{flag}="))
                .map(str::to_string)
        })
    };
    let mount = |c: &Value, volume: &str| -> Option<(String, bool)> {
        c["volumeMounts"].as_array()?.iter().find_map(|m| {
            (m["name"] == volume).then(|| {
                (
                    m["mountPath"].as_str().unwrap_or_default().to_string(),
                    m["readOnly"] == true,
                )
            })
        })
    };
    let volume = |name: &str| -> Option<Value> {
        pod["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
    };

    // Ramdisk agents reach the agent API at PROVISIONING_IP, from a ConfigMap in the tree.
    let url = arg(&ctl, "agent-url").context("--agent-url")?;
    assert_eq!(url, "https://$(PROVISIONING_IP):8443");
    let env = ctl["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "PROVISIONING_IP"))
        .context("PROVISIONING_IP in the controller's env")?;
    let r = &env["valueFrom"]["configMapKeyRef"];
    let cm = objs
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == r["name"])
        .with_context(|| format!("ConfigMap {}", r["name"]))?;
    let ip = cm["data"][r["key"].as_str().context("key")?]
        .as_str()
        .context("the PROVISIONING_IP value")?;
    assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");

    // netboot's config is the ConfigMap it mounts, and it follows the controller's local API
    // on the pod's loopback with the token from the controller's state, which it mounts
    // read-only.
    let (config_dir, _) = mount(&netboot, "netboot-config").context("netboot's config mount")?;
    let path = netboot["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "FERROX_NETBOOT_CONFIG"))
        .and_then(|v| v["value"].as_str())
        .context("FERROX_NETBOOT_CONFIG")?;
    let file = path
        .strip_prefix(&format!("{config_dir}/"))
        .context("the config file is in the mounted ConfigMap")?;
    let cm_name =
        volume("netboot-config").context("volume netboot-config")?["configMap"]["name"].clone();
    let cm = objs
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == cm_name)
        .with_context(|| format!("ConfigMap {cm_name}"))?;
    let config: serde_yaml::Value =
        serde_yaml::from_str(cm["data"][file].as_str().context("netboot's config file")?)?;
    assert!(config.get("mode").is_some());
    let api = arg(&ctl, "api-listen").context("--api-listen")?;
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    assert_eq!(
        config["controller_hosts"].as_str(),
        Some(format!("http://{api}").as_str())
    );
    let state = arg(&ctl, "state").context("--state")?;
    assert_eq!(mount(&ctl, "state"), Some((state.clone(), false)));
    let (netboot_state, read_only) = mount(&netboot, "state").context("netboot's state mount")?;
    assert!(read_only, "netboot only reads the controller's state");
    assert_eq!(
        config["controller_token_file"].as_str(),
        Some(format!("{netboot_state}/api.token").as_str())
    );
    Ok(())
}

/// The real kustomize (built into kubectl) renders the tree: namespace applied to every
/// namespaced object, images rewritten.
#[test]
#[ignore = "needs kubectl (with built-in kustomize): run by hack/test.sh"]
fn kubectl_kustomize_renders_the_tree() -> Result<()> {
    let out = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("kubectl not installed: skipping");
            return Ok(());
        }
        Err(e) => return Err(e).context("running kubectl kustomize"),
    };
    ensure!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut rendered = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc)?;
        if !v.is_null() {
            rendered.push(serde_json::to_value(v)?);
        }
    }
    assert_eq!(rendered.len(), objects()?.len(), "object count");
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    for o in &rendered {
        let kind = o["kind"].as_str().unwrap_or_default();
        if !cluster_scoped.contains(&kind) {
            assert_eq!(
                o["metadata"]["namespace"], "ferrox-system",
                "{kind} {}",
                o["metadata"]["name"]
            );
        }
        if kind == "Deployment" {
            let image = o["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default();
            assert!(image.starts_with("ghcr.io/ferrox/"), "image {image}");
        }
    }
    Ok(())
}
