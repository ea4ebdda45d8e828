//! Unit tests (contents as baremetal-operator produces them, FAT read-back through fatfs) and
//! the real reader: cloud-init's own `read_config_drive` on the files mtools extracts.

use std::io::Read;
use std::path::Path;

use serde_json::json;

use super::*;

fn host() -> ConfigDriveInput {
    ConfigDriveInput {
        uuid: "3f9d4e2a-6c1b-4f0e-9a57-2b8c1d0e4f61".into(),
        name: "myhost".into(),
        namespace: "myns".into(),
        hostname: "myhost".into(),
        ..Default::default()
    }
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("test maps are objects"),
    }
}

/// baremetal-operator's own cases (`TestEmpty` in configdrive_test.go): the defaults, and a
/// metaData Secret merged over them.
#[test]
fn meta_data_matches_baremetal_operator() {
    let defaults = json!({
        "uuid": "3f9d4e2a-6c1b-4f0e-9a57-2b8c1d0e4f61",
        "metal3-namespace": "myns",
        "metal3-name": "myhost",
        "local-hostname": "myhost",
        "local_hostname": "myhost",
        "name": "myhost",
    });
    let with = |extra: Value| {
        let mut m = map(defaults.clone());
        m.extend(map(extra));
        Value::Object(m)
    };
    let cases: Vec<(&str, Option<&str>, Value)> = vec![
        ("default", None, defaults.clone()),
        ("empty secret", Some(""), defaults.clone()),
        (
            "extra key",
            Some("test: Meta"),
            with(json!({"test": "Meta"})),
        ),
        (
            "secret overrides a default",
            Some("local-hostname: other\nnested: {a: 1}"),
            with(json!({"local-hostname": "other", "nested": {"a": 1}})),
        ),
        (
            "json secret",
            Some(r#"{"k": [1, 2]}"#),
            with(json!({"k": [1, 2]})),
        ),
    ];
    for (name, secret, want) in cases {
        let mut input = host();
        input.meta_data = secret
            .map(|s| parse_secret_map("metaData", s.as_bytes()).unwrap())
            .unwrap_or_default();
        assert_eq!(Value::Object(meta_data(&input).unwrap()), want, "{name}");
    }
}

#[test]
fn secrets_that_are_not_mappings_are_refused() {
    for (text, want) in [
        ("- a\n- b", "a list"),
        ("just text", "a string"),
        ("42", "a number"),
    ] {
        let err = parse_secret_map("networkData", text.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, ConfigDriveError::NotAMap { found, .. } if found == want),
            "{text}: {err}"
        );
    }
    assert!(matches!(
        parse_secret_map("networkData", b"a: [unclosed"),
        Err(ConfigDriveError::Yaml { .. })
    ));
    let huge = vec![b'a'; MAX_SECRET + 1];
    assert!(matches!(
        parse_secret_map("metaData", &huge),
        Err(ConfigDriveError::TooLarge { .. })
    ));
}

#[test]
fn a_drive_without_uuid_is_refused() {
    let mut input = host();
    input.uuid.clear();
    assert!(matches!(
        build(&input),
        Err(ConfigDriveError::Missing("meta_data uuid"))
    ));
    // A metaData Secret cannot remove it either.
    let mut input = host();
    input.meta_data = Some(map(json!({"uuid": null})));
    assert!(matches!(
        meta_data(&input),
        Err(ConfigDriveError::Missing(_))
    ));
}

#[test]
fn user_data_over_the_limit_is_refused() {
    let mut input = host();
    input.user_data = Some(vec![b'#'; MAX_USER_DATA + 1]);
    let err = build(&input).unwrap_err();
    assert!(
        matches!(err, ConfigDriveError::TooLarge { what: "user data", size, limit }
            if size == MAX_USER_DATA + 1 && limit == MAX_USER_DATA),
        "{err}"
    );
    // Exactly at the limit is fine.
    input.user_data = Some(vec![b'#'; MAX_USER_DATA]);
    let img = build(&input).unwrap();
    assert!(img.len() <= MAX_IMAGE);
}

/// Which files exist for which inputs (Ironic writes user_data and network_data.json only
/// when given, meta_data.json always, in both versions).
#[test]
fn files_present_per_input() {
    let nd = map(json!({"links": [], "networks": [], "services": []}));
    type Case = (
        &'static str,
        Option<Vec<u8>>,
        Option<Map<String, Value>>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        ("nothing", None, None, vec!["meta_data.json"]),
        (
            "empty user data",
            Some(vec![]),
            None,
            vec!["meta_data.json"],
        ),
        (
            "user data",
            Some(b"#cloud-config\n".to_vec()),
            None,
            vec!["meta_data.json", "user_data"],
        ),
        (
            "network data",
            None,
            Some(nd.clone()),
            vec!["meta_data.json", "network_data.json"],
        ),
        (
            "everything",
            Some(b"x".to_vec()),
            Some(nd),
            vec!["meta_data.json", "network_data.json", "user_data"],
        ),
    ];
    for (name, ud, nd, want) in cases {
        let mut input = host();
        input.user_data = ud;
        input.network_data = nd;
        let got: Vec<String> = files(&input).unwrap().into_iter().map(|f| f.path).collect();
        let mut expect = Vec::new();
        for v in VERSIONS {
            for f in &want {
                expect.push(format!("openstack/{v}/{f}"));
            }
        }
        let (mut g, mut e) = (got.clone(), expect);
        g.sort();
        e.sort();
        assert_eq!(g, e, "{name}");
    }
}

fn everything() -> ConfigDriveInput {
    let mut input = host();
    input.user_data = Some(b"#cloud-config\nruncmd:\n  - [touch, /ferrox-was-here]\n".to_vec());
    input.network_data = Some(map(json!({
        "links": [{"id": "enp1s0", "type": "phy", "ethernet_mac_address": "52:54:00:12:34:56", "mtu": 1500}],
        "networks": [{
            "id": "provisioning", "type": "ipv4", "link": "enp1s0",
            "ip_address": "192.0.2.10", "netmask": "255.255.255.0",
            "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"}],
            "network_id": "provisioning"
        }],
        "services": [{"type": "dns", "address": "192.0.2.53"}]
    })));
    input.meta_data = Some(map(json!({"role": "worker"})));
    input
}

/// The image is a FAT filesystem labelled config-2 whose files read back (through fatfs)
/// exactly as [`files`] says, and nothing else.
#[test]
fn fat_image_reads_back() {
    let input = everything();
    let img = build(&input).unwrap();
    assert_eq!(img.len() % (1 << 20), 0);
    assert_eq!(&img[510..512], &[0x55, 0xAA], "boot sector signature");
    assert_eq!(volume_label(&img).unwrap(), LABEL);
    let mut want = files(&input).unwrap();
    want.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(read_back(&img).unwrap(), want);
    let md: Value = serde_json::from_slice(
        &want
            .iter()
            .find(|f| f.path == "openstack/latest/meta_data.json")
            .unwrap()
            .contents,
    )
    .unwrap();
    assert_eq!(md["role"], "worker");
    assert_eq!(md["local-hostname"], "myhost");
    // Reproducible: no clock in the image.
    assert_eq!(build(&input).unwrap(), img);
}

#[test]
fn encode_is_gzip_then_base64() {
    let img = build(&everything()).unwrap();
    let enc = encode(&img).unwrap();
    assert!(!enc.contains('\n'));
    let gz = base64::engine::general_purpose::STANDARD
        .decode(&enc)
        .unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, img);
    // A mostly empty filesystem compresses to almost nothing.
    assert!(enc.len() < img.len() / 50, "{} of {}", enc.len(), img.len());
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
}

/// The real reader: blkid identifies the image as vfat labelled config-2, mtools (an
/// independent FAT implementation) extracts it, and cloud-init's own `read_config_drive`
/// returns our uuid as instance-id, our hostname, user data and network data; cloud-init's
/// network converter accepts the network data.
#[test]
#[ignore = "needs blkid, mtools, python3 and apt-get download (cloud-init): run by hack/test.sh"]
fn cloud_init_reads_the_drive() -> anyhow::Result<()> {
    for t in ["blkid", "mcopy", "python3", "apt-get", "dpkg"] {
        anyhow::ensure!(have(t), "{t} is missing (hack/deps.sh installs it)");
    }
    let input = everything();
    let img = build(&input)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("config-2.img");
    std::fs::write(&path, &img)?;
    let p = path.to_str().unwrap();

    let (_, probe) = ::tests::status("blkid", &["-p", "-o", "export", p])?;
    assert!(probe.contains("LABEL=config-2\n"), "{probe}");
    assert!(probe.contains("TYPE=vfat\n"), "{probe}");

    let out = dir.path().join("mnt");
    std::fs::create_dir(&out)?;
    ::tests::run(
        "mcopy",
        &["-s", "-n", "-i", p, "::openstack", out.to_str().unwrap()],
    )?;
    let script = workspace_root().join("hack/cloud-init-read-config-drive.sh");
    let res = ::tests::run(script.to_str().unwrap(), &[out.to_str().unwrap()])?;
    let got: Value = serde_json::from_slice(&res.stdout)?;
    let md = &got["metadata"];
    assert_eq!(md["instance-id"], input.uuid.as_str());
    assert_eq!(md["uuid"], input.uuid.as_str());
    assert_eq!(md["local-hostname"], "myhost");
    assert_eq!(md["metal3-name"], "myhost");
    assert_eq!(md["metal3-namespace"], "myns");
    assert_eq!(md["role"], "worker");
    let ud = base64::engine::general_purpose::STANDARD.decode(
        got["userdata_b64"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no user data"))?,
    )?;
    assert_eq!(Some(ud), input.user_data);
    assert_eq!(
        got["networkdata"],
        Value::Object(input.network_data.clone().unwrap())
    );
    let nc = got["network_config"].to_string();
    assert!(nc.contains("192.0.2.10"), "{nc}");
    assert!(nc.contains("52:54:00:12:34:56"), "{nc}");
    Ok(())
}
