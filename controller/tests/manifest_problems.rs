//! A manifest file that does not parse never deletes a host: not while the controller runs (the
//! host keeps its last good spec), and not when the controller starts with the file broken (the
//! stored host keeps its stored spec). Deleting powers off and cleans, so a typo must not.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferrox_controller::machine::Limits;
use ferrox_controller::manifests::{sync, DirCache};
use ferrox_controller::model::{BootMode, HostKey, Power};
use ferrox_controller::reconciler::{
    Bmc, BmcTarget, BootTarget, BoxFut, Config, ConfigDriveFn, Reconciler,
};
use ferrox_controller::store::{HostRecord, Store};

/// Never called: these tests do not run the reconcile loop.
struct NoBmc;

impl Bmc for NoBmc {
    fn probe<'a>(&'a self, _: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>> {
        Box::pin(async { Err("no BMC in this test".into()) })
    }
    fn power_state<'a>(&'a self, _: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>> {
        Box::pin(async { Err("no BMC in this test".into()) })
    }
    fn power<'a>(&'a self, _: &'a BmcTarget, _: bool, _: bool) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async { Err("no BMC in this test".into()) })
    }
    fn reset<'a>(&'a self, _: &'a BmcTarget) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async { Err("no BMC in this test".into()) })
    }
    fn boot_once<'a>(
        &'a self,
        _: &'a BmcTarget,
        _: BootTarget,
        _: BootMode,
    ) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async { Err("no BMC in this test".into()) })
    }
}

fn reconciler(state: &Path) -> Arc<Reconciler> {
    let store = Arc::new(Store::open(&state.join("state.redb")).unwrap());
    let drive: Box<ConfigDriveFn> = Box::new(|_, _, _| Ok(None));
    Reconciler::new(
        store,
        Arc::new(NoBmc),
        drive,
        Config {
            limits: Limits::default(),
            provisioning_limit: 10,
            workers: 1,
            agent_url: "https://127.0.0.1:9443".into(),
            ca_fingerprint: "sha256:00".into(),
            token_ttl: Duration::from_secs(900),
            ramdisk_cmdline: None,
        },
    )
}

fn host(name: &str) -> String {
    format!(
        "---\napiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  online: true\n  bootMACAddress: 52:54:00:00:00:{:02x}\n",
        name.len()
    )
}

fn keys(rec: &Reconciler) -> Vec<String> {
    let mut k: Vec<String> = rec.desired_keys().iter().map(|k| k.to_string()).collect();
    k.sort();
    k
}

#[test]
fn a_broken_file_keeps_its_hosts_while_running_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("a.yaml"), host("a")).unwrap();
    std::fs::write(
        manifests.join("b.yaml"),
        format!("{}{}", host("b1"), host("b2")),
    )
    .unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();

    {
        let rec = reconciler(&state);
        let mut cache = DirCache::default();
        assert!(sync(&rec, &cache.read(&manifests).unwrap()).is_empty());
        assert_eq!(keys(&rec), ["default/a", "default/b1", "default/b2"]);
        // What a reconcile would have stored for each.
        for k in ["b1", "b2"] {
            let key = HostKey::new("default", k);
            let text = host(k);
            let v: serde_json::Value =
                serde_yaml::from_str(text.trim_start_matches("---\n")).unwrap();
            let (_, spec) = ferrox_controller::manifests::host_spec(&v).unwrap();
            rec.store()
                .update(&key, |_| {
                    (
                        Some(HostRecord {
                            object: v.clone(),
                            spec,
                            status: Default::default(),
                            created_ms: 1,
                        }),
                        (),
                    )
                })
                .unwrap();
        }

        // YAML broken before both hosts of b.yaml: no name in it is readable.
        std::fs::write(
            manifests.join("b.yaml"),
            format!("kind: [\n{}{}", host("b1"), host("b2")),
        )
        .unwrap();
        let problems = sync(&rec, &cache.read(&manifests).unwrap());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            keys(&rec),
            ["default/a", "default/b1", "default/b2"],
            "nothing deleted"
        );

        // a.yaml removed while b.yaml is broken: not deleted yet either...
        std::fs::remove_file(manifests.join("a.yaml")).unwrap();
        sync(&rec, &cache.read(&manifests).unwrap());
        assert_eq!(keys(&rec), ["default/a", "default/b1", "default/b2"]);
        // ...but once every file parses, a host whose manifest is gone is deleted.
        std::fs::write(
            manifests.join("b.yaml"),
            format!("{}{}", host("b1"), host("b2")),
        )
        .unwrap();
        assert!(sync(&rec, &cache.read(&manifests).unwrap()).is_empty());
        assert_eq!(keys(&rec), ["default/b1", "default/b2"]);
    }

    // A restart with b.yaml broken: the stored b1 and b2 keep their stored spec.
    std::fs::write(manifests.join("b.yaml"), "kind: [\n").unwrap();
    let rec = reconciler(&state);
    let problems = sync(
        &rec,
        &ferrox_controller::manifests::read_dir(&manifests).unwrap(),
    );
    assert_eq!(problems.len(), 1);
    assert_eq!(keys(&rec), ["default/b1", "default/b2"]);
}
