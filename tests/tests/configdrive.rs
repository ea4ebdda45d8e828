//! A config drive from one end to the other, as metal3 provisions a host: the controller
//! builds it from a BareMetalHost's Secrets (controller-configdrive) and encodes it as
//! Ironic's `configdrive` field; the agent writes it into a new partition at the end of a
//! disk that just received a whole-disk GPT image (agent-image); then, as cloud-init on the
//! booted host would, `blkid` finds the device labelled config-2 and cloud-init's own
//! `read_config_drive` reads hostname, instance-id, user data and network data from it.
//! (Booting a VM from that disk is issue 6.) Needs root for the loop devices.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use serde_json::Value;
use tests::loopdev::Loop;
use tests::run;

use agent_image::configdrive::{write_config_drive, TableKind};
use controller_configdrive::{build, encode, parse_secret_map, ConfigDriveInput};

const MIB: u64 = 1 << 20;

const USER_DATA: &str =
    "#cloud-config\nruncmd:\n  - [sh, -c, 'echo provisioned by ferrox > /etc/motd']\n";
const NETWORK_DATA: &str = r#"
links:
  - id: enp1s0
    type: phy
    ethernet_mac_address: "52:54:00:aa:bb:01"
networks:
  - id: provisioning
    type: ipv4
    link: enp1s0
    ip_address: 192.0.2.31
    netmask: 255.255.255.0
    network_id: provisioning
services:
  - type: dns
    address: 192.0.2.53
"#;

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[test]
#[ignore = "needs root, sgdisk, blkid, mtools, python3 and apt-get download (cloud-init): run by hack/test.sh"]
fn cloud_init_reads_the_config_drive_the_agent_wrote() -> Result<()> {
    for t in [
        "sgdisk", "blkid", "mcopy", "python3", "apt-get", "dpkg", "dd",
    ] {
        ensure!(have(t), "{t} is missing (hack/deps.sh installs it)");
    }
    // The controller: Secrets (YAML text, as in the manifests) to an encoded drive.
    let input = ConfigDriveInput {
        uuid: "0c4b3f0e-2d7a-4e44-9d1b-7f2a6e5c9a10".into(),
        name: "worker-3".into(),
        namespace: "metal3".into(),
        hostname: "worker-3".into(),
        user_data: Some(USER_DATA.as_bytes().to_vec()),
        network_data: parse_secret_map("networkData", NETWORK_DATA.as_bytes())?,
        meta_data: parse_secret_map("metaData", b"role: worker\n")?,
    };
    let field = encode(&build(&input)?)?;

    // The disk: a 64 MiB whole-disk GPT image written to a 256 MiB disk.
    let dir = tempfile::Builder::new()
        .prefix("ferrox-configdrive-e2e")
        .tempdir_in("/var/tmp")?;
    let image = dir.path().join("image");
    std::fs::File::create(&image)?.set_len(64 * MIB)?;
    run(
        "sgdisk",
        &["-o", "-n", "1:2048:0", "-t", "1:8300", s(&image)],
    )?;
    let disk = dir.path().join("disk");
    std::fs::File::create(&disk)?.set_len(256 * MIB)?;
    run(
        "dd",
        &[
            &format!("if={}", s(&image)),
            &format!("of={}", s(&disk)),
            "bs=1M",
            "conv=notrunc",
            "status=none",
        ],
    )?;

    // The agent.
    let part = {
        let lo = Loop::whole(&disk)?;
        let part = write_config_drive(&lo.path, &field)?;
        let verify = String::from_utf8(run("sgdisk", &["-v", lo.dev()])?.stdout)?;
        ensure!(verify.contains("No problems found"), "sgdisk -v:\n{verify}");
        part
    };
    ensure!(part.table == TableKind::Gpt && part.number == 2, "{part:?}");

    // The booted host: the partition (an offset loop device here) is found by its label.
    let dev = Loop::region(&disk, part.start_bytes, part.size_bytes)?;
    let found = String::from_utf8(
        run(
            "blkid",
            &["-c", "/dev/null", "-t", "LABEL=config-2", "-o", "device"],
        )?
        .stdout,
    )?;
    ensure!(
        found.lines().any(|l| l == dev.dev()),
        "blkid did not find {} by LABEL=config-2: {found:?}",
        dev.dev()
    );
    let out = dir.path().join("drive");
    std::fs::create_dir(&out)?;
    run(
        "mcopy",
        &["-s", "-n", "-i", dev.dev(), "::openstack", s(&out)],
    )?;
    let script = tests::ramdisk::workspace().join("hack/cloud-init-read-config-drive.sh");
    let res = run(s(&script), &[s(&out)])?;
    let got: Value = serde_json::from_slice(&res.stdout).context("reader output")?;

    let md = &got["metadata"];
    assert_eq!(md["instance-id"], input.uuid.as_str());
    assert_eq!(md["local-hostname"], "worker-3");
    assert_eq!(md["metal3-namespace"], "metal3");
    assert_eq!(md["role"], "worker");
    let ud = got["userdata_b64"].as_str().context("no user data")?;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(ud)?,
        USER_DATA.as_bytes()
    );
    assert_eq!(
        got["networkdata"]["networks"][0]["ip_address"],
        "192.0.2.31"
    );
    let nc = got["network_config"].to_string();
    assert!(
        nc.contains("192.0.2.31") && nc.contains("52:54:00:aa:bb:01"),
        "{nc}"
    );
    Ok(())
}
