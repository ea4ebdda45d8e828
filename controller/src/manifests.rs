//! The embedded store's input: a directory of the very YAML a user would `kubectl apply` —
//! BareMetalHosts and their Secrets, any number of documents per file.
//!
//! The directory is read whole each time (it is small) and compared with what the reconciler
//! has: new and changed hosts are applied, hosts whose manifest is gone are deleted (the
//! equivalent of `kubectl delete`). A file that does not parse is reported with its path and
//! document number and changes nothing: its hosts keep their last good spec rather than being
//! deleted because of a typo.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::model::*;

/// What one read of the directory found.
#[derive(Debug, Default)]
pub struct Manifests {
    /// Hosts, by key.
    pub hosts: BTreeMap<HostKey, (HostSpec, Value)>,
    /// Secrets' data, by reference.
    pub secrets: HashMap<SecretRef, BTreeMap<String, Vec<u8>>>,
    /// Files that could not be used, with why; their hosts must not be treated as deleted.
    pub problems: Vec<(PathBuf, String)>,
    /// Keys of hosts in files with problems (best effort: the names that could be read). While
    /// there are problems, [`sync`] deletes no host at all.
    pub unsure: BTreeSet<HostKey>,
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file under `dir` (not recursing into dot-dirs).
pub fn read_dir(dir: &Path) -> std::io::Result<Manifests> {
    DirCache::default().read(dir)
}

/// What identifies a file's content without reading it: a rewrite or an edit changes one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// Repeated reads of one directory: a file is parsed again only when its stamp (inode, size,
/// mtime, ctime) changed. A thousand hosts' manifests re-parsed every second were a tenth of
/// the controller's CPU (docs/bench-scale.md).
#[derive(Debug, Default)]
pub struct DirCache {
    files: HashMap<PathBuf, (Stamp, Parsed)>,
}

impl DirCache {
    /// Reads `dir` as [`read_dir`] does, re-parsing only changed files.
    pub fn read(&mut self, dir: &Path) -> std::io::Result<Manifests> {
        let mut out = Manifests::default();
        let mut files = Vec::new();
        collect(dir, &mut files)?;
        files.sort();
        let mut seen = HashMap::with_capacity(files.len());
        for path in files {
            let before = stamp(&path);
            let parsed = match (self.files.remove(&path), &before) {
                (Some((st, parsed)), Some(now)) if st == *now => parsed,
                _ => match std::fs::read_to_string(&path) {
                    Ok(text) => parse(&text),
                    Err(e) => Parsed {
                        docs: Vec::new(),
                        named: Vec::new(),
                        problem: Some(format!("reading: {e}")),
                    },
                },
            };
            merge(&path, &parsed, &mut out);
            // Kept only when the file did not change while it was read.
            if let Some(st) = before.filter(|b| stamp(&path).as_ref() == Some(b)) {
                seen.insert(path, (st, parsed));
            }
        }
        self.files = seen;
        Ok(out)
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type()?.is_dir() {
            collect(&p, files)?;
        } else if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(p);
        }
    }
    Ok(())
}

/// Parses one file's documents into `out`.
pub fn read_text(path: &Path, text: &str, out: &mut Manifests) {
    merge(path, &parse(text), out);
}

/// One file's documents, or the first problem in it (with the documents before it).
#[derive(Debug, Clone)]
struct Parsed {
    docs: Vec<Doc>,
    /// BareMetalHosts named by a document that failed (its name was readable).
    named: Vec<HostKey>,
    problem: Option<String>,
}

impl Parsed {
    fn hosts(&self) -> Vec<HostKey> {
        let mut out: Vec<HostKey> = self
            .docs
            .iter()
            .filter_map(|d| match d {
                Doc::Host(k, _, _) => Some(k.clone()),
                _ => None,
            })
            .collect();
        out.extend(self.named.iter().cloned());
        out
    }
}

fn parse(text: &str) -> Parsed {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                return Parsed {
                    docs,
                    named: Vec::new(),
                    problem: Some(format!("document {}: not valid YAML: {e}", i + 1)),
                }
            }
        };
        if v.is_null() {
            continue;
        }
        match document(&v) {
            Ok(d) => docs.push(d),
            Err(e) => {
                // A host whose spec is wrong keeps its last good one: it is not deleted.
                let is_host = v.get("kind").and_then(Value::as_str) == Some("BareMetalHost");
                let named = match meta(&v) {
                    Ok((ns, name)) if is_host && valid_name(&name) => {
                        vec![HostKey::new(&ns, &name)]
                    }
                    _ => Vec::new(),
                };
                return Parsed {
                    docs,
                    named,
                    problem: Some(format!("document {}: {e}", i + 1)),
                };
            }
        }
    }
    Parsed {
        docs,
        named: Vec::new(),
        problem: None,
    }
}

fn merge(path: &Path, parsed: &Parsed, out: &mut Manifests) {
    if let Some(p) = &parsed.problem {
        out.unsure.extend(parsed.hosts());
        out.problems.push((path.to_path_buf(), p.clone()));
        return;
    }
    for d in &parsed.docs {
        match d {
            Doc::Host(k, spec, obj) => match out.hosts.entry(k.clone()) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    let k = e.key().clone();
                    out.problems.push((
                        path.to_path_buf(),
                        format!("BareMetalHost {k} is defined twice"),
                    ));
                    out.unsure.insert(k);
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(((**spec).clone(), obj.clone()));
                }
            },
            Doc::Secret(r, data) => {
                out.secrets.insert(r.clone(), data.clone());
            }
            Doc::Other => {}
        }
    }
}

#[derive(Debug, Clone)]
enum Doc {
    Host(HostKey, Box<HostSpec>, Value),
    Secret(SecretRef, BTreeMap<String, Vec<u8>>),
    Other,
}

fn document(v: &Value) -> Result<Doc, String> {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    match (api, kind) {
        ("metal3.io/v1alpha1", "BareMetalHost") => {
            let (key, spec) = host_spec(v)?;
            Ok(Doc::Host(key, Box::new(spec), v.clone()))
        }
        ("v1", "Secret") => {
            let (ns, name) = meta(v)?;
            Ok(Doc::Secret(
                SecretRef {
                    namespace: ns,
                    name,
                },
                secret_data(v)?,
            ))
        }
        ("", _) | (_, "") => {
            Err("not a Kubernetes object: apiVersion and kind are required".into())
        }
        _ => Ok(Doc::Other),
    }
}

fn meta(v: &Value) -> Result<(String, String), String> {
    let m = v.get("metadata").ok_or("metadata is missing")?;
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .ok_or("metadata.name is missing or not a valid Kubernetes name")?;
    let ns = match m.get("namespace") {
        None | Some(Value::Null) => "default",
        Some(Value::String(s)) if valid_name(s) => s,
        Some(_) => return Err("metadata.namespace is not a valid Kubernetes name".into()),
    };
    Ok((ns.to_string(), name.to_string()))
}

/// RFC 1123 subdomain, as Kubernetes requires of object names.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && n.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && n.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn secret_data(v: &Value) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    if let Some(d) = v.get("data").filter(|d| !d.is_null()) {
        let d = d.as_object().ok_or("Secret data must be a map")?;
        for (k, val) in d {
            let s = val
                .as_str()
                .ok_or_else(|| format!("Secret data.{k} must be a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| format!("Secret data.{k} is not valid base64: {e}"))?;
            out.insert(k.clone(), bytes);
        }
    }
    if let Some(d) = v.get("stringData").filter(|d| !d.is_null()) {
        let d = d.as_object().ok_or("Secret stringData must be a map")?;
        for (k, val) in d {
            let s = val
                .as_str()
                .ok_or_else(|| format!("Secret stringData.{k} must be a string"))?;
            out.insert(k.clone(), s.as_bytes().to_vec());
        }
    }
    Ok(out)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Result<Option<&'a str>, String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(Value::Null) | None => return Ok(None),
            Some(x) => cur = x,
        }
    }
    match cur {
        Value::String(s) => Ok(Some(s)),
        _ => Err(format!("{} must be a string", path.join("."))),
    }
}

fn bool_at(v: &Value, path: &[&str]) -> Result<bool, String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(Value::Null) | None => return Ok(false),
            Some(x) => cur = x,
        }
    }
    cur.as_bool()
        .ok_or_else(|| format!("{} must be true or false", path.join(".")))
}

fn secret_ref(v: &Value, field: &str, ns: &str) -> Result<Option<SecretRef>, String> {
    let Some(r) = v
        .get("spec")
        .and_then(|s| s.get(field))
        .filter(|r| !r.is_null())
    else {
        return Ok(None);
    };
    let name = r
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("spec.{field}.name is required"))?;
    let namespace = r
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(ns);
    Ok(Some(SecretRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }))
}

/// Distills a BareMetalHost (as JSON) into the controller's [`HostSpec`].
pub fn host_spec(v: &Value) -> Result<(HostKey, HostSpec), String> {
    let (ns, name) = meta(v)?;
    let key = HostKey::new(&ns, &name);
    let m = &v["metadata"];
    let mut spec = HostSpec {
        uid: m
            .get("uid")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| key.to_string()),
        generation: m.get("generation").and_then(Value::as_i64).unwrap_or(1),
        online: bool_at(v, &["spec", "online"])?,
        externally_provisioned: bool_at(v, &["spec", "externallyProvisioned"])?,
        disable_power_off: bool_at(v, &["spec", "disablePowerOff"])?,
        deleting: m.get("deletionTimestamp").is_some_and(|d| !d.is_null()),
        ..HostSpec::default()
    };
    if let Some(address) = str_at(v, &["spec", "bmc", "address"])? {
        let credentials_name = str_at(v, &["spec", "bmc", "credentialsName"])?
            .ok_or("spec.bmc.credentialsName is required with spec.bmc.address")?;
        spec.bmc = Some(BmcSpec {
            address: address.to_string(),
            credentials_name: credentials_name.to_string(),
            disable_certificate_verification: bool_at(
                v,
                &["spec", "bmc", "disableCertificateVerification"],
            )?,
        });
    }
    if let Some(mac) = str_at(v, &["spec", "bootMACAddress"])? {
        let norm = mac.trim().to_ascii_lowercase().replace('-', ":");
        let ok = norm.split(':').count() == 6
            && norm
                .split(':')
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(format!("spec.bootMACAddress {mac:?} is not a MAC address"));
        }
        spec.boot_mac = Some(norm);
    }
    spec.boot_mode = match str_at(v, &["spec", "bootMode"])? {
        None | Some("UEFI") => BootMode::Uefi,
        Some("UEFISecureBoot") => BootMode::UefiSecureBoot,
        Some("legacy") => BootMode::Legacy,
        Some(o) => {
            return Err(format!(
                "spec.bootMode {o:?} is not one of UEFI, UEFISecureBoot, legacy"
            ))
        }
    };
    spec.cleaning = match str_at(v, &["spec", "automatedCleaningMode"])? {
        None | Some("metadata") => CleaningMode::Metadata,
        Some("disabled") => CleaningMode::Disabled,
        Some(o) => {
            return Err(format!(
                "spec.automatedCleaningMode {o:?} is not one of metadata, disabled"
            ))
        }
    };
    if let Some(url) = str_at(v, &["spec", "image", "url"])? {
        spec.image = Some(Image {
            url: url.to_string(),
            checksum: str_at(v, &["spec", "image", "checksum"])?
                .unwrap_or("")
                .to_string(),
            checksum_type: str_at(v, &["spec", "image", "checksumType"])?.map(str::to_string),
            format: str_at(v, &["spec", "image", "format"])?.map(str::to_string),
        });
    }
    spec.root_device_hints = v
        .get("spec")
        .and_then(|s| s.get("rootDeviceHints"))
        .filter(|h| !h.is_null())
        .cloned();
    spec.user_data = secret_ref(v, "userData", &ns)?;
    spec.network_data = secret_ref(v, "networkData", &ns)?;
    spec.meta_data = secret_ref(v, "metaData", &ns)?;
    if let Some(a) = m.get("annotations").and_then(Value::as_object) {
        for (k, val) in a {
            let val = val.as_str().unwrap_or("");
            match k.as_str() {
                "inspect.metal3.io" => {
                    spec.inspect = if val == "disabled" {
                        InspectRequest::Disabled
                    } else {
                        InspectRequest::Again
                    }
                }
                "reboot.metal3.io" => {
                    spec.reboot_requests.insert(String::new());
                }
                "baremetalhost.metal3.io/paused" => spec.paused = true,
                "baremetalhost.metal3.io/detached" => spec.detached = true,
                _ => {
                    if let Some(suffix) = k.strip_prefix("reboot.metal3.io/") {
                        spec.reboot_requests.insert(suffix.to_string());
                    }
                }
            }
        }
    }
    Ok((key, spec))
}

/// Makes the reconciler want what the directory says: applies hosts and Secrets, deletes hosts
/// whose manifest is gone — but only when every file parsed: while one does not, no host is
/// deleted. Returns the problems, for the caller to log once per change.
pub fn sync(rec: &crate::reconciler::Reconciler, m: &Manifests) -> Vec<(PathBuf, String)> {
    for (r, data) in &m.secrets {
        rec.set_secret(r.clone(), data.clone());
    }
    for (key, (spec, obj)) in &m.hosts {
        rec.apply(
            key.clone(),
            crate::reconciler::Desired {
                spec: spec.clone(),
                object: obj.clone(),
            },
        );
    }
    if m.problems.is_empty() {
        for key in rec.desired_keys() {
            if !m.hosts.contains_key(&key) {
                rec.remove(&key);
            }
        }
    } else {
        // A host in a file that does not parse cannot be told from a deleted one, and deleting
        // powers off and cleans: while any file has a problem, nothing is deleted, and hosts the
        // store knows (at start, the desired set is still empty) keep their last applied spec.
        rec.keep_stored_hosts();
    }
    m.problems.clone()
}

/// Re-reads `dir` every `every` until `cancel` fires, logging each new set of problems once.
pub async fn watch(
    rec: std::sync::Arc<crate::reconciler::Reconciler>,
    dir: PathBuf,
    every: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut last: Vec<(PathBuf, String)> = Vec::new();
    let mut cache = DirCache::default();
    loop {
        match cache.read(&dir) {
            Ok(m) => {
                let problems = sync(&rec, &m);
                if problems != last {
                    for (p, why) in &problems {
                        tracing::error!(file = %p.display(), "manifest not applied: {why}");
                    }
                    last = problems;
                }
            }
            Err(e) => tracing::error!(dir = %dir.display(), "reading the manifest directory: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = r#"
---
apiVersion: v1
kind: Secret
metadata:
  name: worker-0-bmc
type: Opaque
data:
  username: YWRtaW4=
stringData:
  password: s3cret
---
apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: worker-0
  annotations:
    reboot.metal3.io/maint: ""
    inspect.metal3.io: disabled
spec:
  online: true
  bootMACAddress: 52-54-00-AB-CD-EF
  bootMode: legacy
  automatedCleaningMode: disabled
  bmc:
    address: redfish+http://127.0.0.1:8000/redfish/v1/Systems/abc
    credentialsName: worker-0-bmc
  image:
    url: http://images/x.qcow2
    checksum: http://images/x.qcow2.sha256sum
    checksumType: sha256
    format: qcow2
  rootDeviceHints:
    deviceName: /dev/vda
  userData:
    name: worker-0-user
"#;

    #[test]
    fn a_cached_read_sees_edits_new_files_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, HOST).unwrap();
        let mut cache = DirCache::default();
        let first = cache.read(dir.path()).unwrap();
        let key = HostKey::new("default", "worker-0");
        assert!(first.hosts[&key].0.online);
        assert!(first.problems.is_empty());
        // Unchanged: the same result from the cache.
        let again = cache.read(dir.path()).unwrap();
        assert_eq!(again.hosts[&key].0, first.hosts[&key].0);
        assert_eq!(again.secrets.len(), first.secrets.len());
        // Edited (same length, so only the stamp's times and inode tell).
        std::fs::write(&a, HOST.replace("online: true", "online: fals")).unwrap();
        let edited = cache.read(dir.path()).unwrap();
        assert_eq!(edited.problems.len(), 1, "{:?}", edited.problems);
        assert!(edited.hosts.is_empty());
        assert!(
            edited.unsure.contains(&key),
            "a typo must not delete the host"
        );
        // Broken YAML before the host: its name is unreadable (sync deletes nothing then).
        std::fs::write(&a, format!("kind: [\n---\n{HOST}")).unwrap();
        let broken = cache.read(dir.path()).unwrap();
        assert_eq!(broken.problems.len(), 1);
        assert!(broken.hosts.is_empty());
        std::fs::write(&a, HOST.replace("online: true", "online: false")).unwrap();
        let fixed = cache.read(dir.path()).unwrap();
        assert!(fixed.problems.is_empty());
        assert!(!fixed.hosts[&key].0.online);
        // A new file, then the first removed.
        std::fs::write(&b, HOST.replace("worker-0", "worker-1")).unwrap();
        assert_eq!(cache.read(dir.path()).unwrap().hosts.len(), 2);
        std::fs::remove_file(&a).unwrap();
        let left = cache.read(dir.path()).unwrap();
        assert_eq!(
            left.hosts.keys().cloned().collect::<Vec<_>>(),
            vec![HostKey::new("default", "worker-1")]
        );
    }

    #[test]
    fn a_host_and_its_secret_are_read() {
        let mut m = Manifests::default();
        read_text(Path::new("a.yaml"), HOST, &mut m);
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        let (spec, obj) = &m.hosts[&HostKey::new("default", "worker-0")];
        assert_eq!(obj["kind"], "BareMetalHost");
        assert!(spec.online);
        assert_eq!(spec.boot_mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(spec.boot_mode, BootMode::Legacy);
        assert_eq!(spec.cleaning, CleaningMode::Disabled);
        assert_eq!(spec.inspect, InspectRequest::Disabled);
        assert_eq!(spec.reboot_requests, BTreeSet::from(["maint".to_string()]));
        assert_eq!(
            spec.image.as_ref().unwrap().format.as_deref(),
            Some("qcow2")
        );
        assert_eq!(
            spec.root_device_hints,
            Some(serde_json::json!({"deviceName": "/dev/vda"}))
        );
        assert_eq!(
            spec.user_data,
            Some(SecretRef {
                namespace: "default".into(),
                name: "worker-0-user".into()
            })
        );
        let s = &m.secrets[&SecretRef {
            namespace: "default".into(),
            name: "worker-0-bmc".into(),
        }];
        assert_eq!(s["username"], b"admin");
        assert_eq!(s["password"], b"s3cret");
    }

    #[test]
    fn bad_documents_are_reported_with_their_number_and_change_nothing() {
        for (text, want) in [
            ("apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata: {name: Bad_Name}\n", "metadata.name"),
            ("apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata: {name: a}\nspec: {bootMACAddress: zz}\n", "not a MAC"),
            ("apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata: {name: a}\nspec: {online: yes please}\n", "true or false"),
            ("apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata: {name: a}\nspec: {bmc: {address: x}}\n", "credentialsName"),
            ("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {password: '!!!'}\n", "base64"),
            ("kind: [\n", "not valid YAML"),
            ("just: text\n", "apiVersion and kind"),
        ] {
            let mut m = Manifests::default();
            let doc = format!("apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata: {{name: good}}\n---\n{text}");
            read_text(Path::new("f.yaml"), &doc, &mut m);
            assert!(m.hosts.is_empty(), "{text}");
            assert_eq!(m.problems.len(), 1, "{text}");
            let p = &m.problems[0].1;
            assert!(p.starts_with("document 2"), "{p}");
            assert!(p.contains(want), "{text} -> {p}");
            assert!(m.unsure.contains(&HostKey::new("default", "good")), "the good host is not deleted");
            if text.contains("{name: a}") {
                assert!(m.unsure.contains(&HostKey::new("default", "a")), "a host with a bad spec is not deleted: {text}");
            }
        }
    }

    #[test]
    fn annotations_map_to_metal3_meanings() {
        let v: Value = serde_yaml::from_str(
            "apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata:\n  name: h\n  namespace: lab\n  annotations:\n    reboot.metal3.io: '{\"mode\":\"hard\"}'\n    inspect.metal3.io: ''\n    baremetalhost.metal3.io/paused: capm3\n    baremetalhost.metal3.io/detached: ''\n  deletionTimestamp: '2026-01-01T00:00:00Z'\n",
        )
        .unwrap();
        let (k, s) = host_spec(&v).unwrap();
        assert_eq!(k, HostKey::new("lab", "h"));
        assert_eq!(s.inspect, InspectRequest::Again);
        assert!(s.reboot_requests.contains(""));
        assert!(s.paused && s.detached && s.deleting);
        assert_eq!(s.boot_mode, BootMode::Uefi, "metal3's default");
        assert_eq!(s.cleaning, CleaningMode::Metadata, "metal3's default");
        assert!(!s.disable_power_off, "metal3's default");
    }

    #[test]
    fn disable_power_off_is_read_and_must_be_a_boolean() {
        let doc = |v: &str| -> Value {
            serde_yaml::from_str(&format!(
                "apiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata:\n  name: h\nspec:\n  disablePowerOff: {v}\n"
            ))
            .unwrap()
        };
        assert!(host_spec(&doc("true")).unwrap().1.disable_power_off);
        assert!(!host_spec(&doc("false")).unwrap().1.disable_power_off);
        let e = host_spec(&doc("'yes'")).unwrap_err();
        assert!(e.contains("disablePowerOff"), "{e}");
    }

    #[test]
    fn each_metal3_example_is_read_without_problems() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/metal3/examples");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("skipping: {} not present", dir.display());
            return;
        };
        let mut hosts = 0;
        for e in entries {
            let path = e.unwrap().path();
            let mut m = Manifests::default();
            read_text(&path, &std::fs::read_to_string(&path).unwrap(), &mut m);
            assert!(m.problems.is_empty(), "{:?}", m.problems);
            hosts += m.hosts.len();
        }
        assert!(hosts >= 4, "{hosts}");
    }
}
