//! The lab: virtual bare metal on one machine, provisioned by Ferrox from BareMetalHost
//! manifests — the way metal3-dev-env emulates a rack.
//!
//! Inside a network namespace of its own the lab runs a bridge (the provisioning network,
//! 172.22.0.0/24 like metal3-dev-env's), libvirtd with one QEMU VM (TCG) per host — a virtio
//! NIC that network-boots, an empty virtio disk, the serial console in a file —, sushy-tools'
//! libvirt driver as their Redfish BMCs, a plain HTTP server for the OS image,
//! ferrox-controller (embedded store) and ferrox-netboot following the controller. It then
//! writes the hosts' BareMetalHost manifests and Secrets into the controller's manifest
//! directory, which is the `kubectl apply` of the embedded store.
//!
//! Everything the lab starts is recorded in `DIR/pids` and stopped by PID by [`down`]; the
//! namespace goes with it. libvirtd runs in a private mount namespace with its configuration,
//! state and sockets under DIR (bind-mounted over /etc/libvirt, /var/lib/libvirt and
//! /run/libvirt), so the machine's own libvirt, if any, is never touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};

/// The bridge's address: every service listens here.
pub const GATEWAY: &str = "172.22.0.1";
/// Redfish (sushy-tools) port.
pub const SUSHY_PORT: u16 = 8000;
/// OS image HTTP server port.
pub const IMAGE_PORT: u16 = 8082;
/// BMC user.
pub const BMC_USER: &str = "admin";
/// BMC password (the lab's, on a network of its own).
pub const BMC_PASSWORD: &str = "lab-Pa55word";
/// Firmware OVMF code and variables template (Debian's ovmf, 2 MiB variant).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
/// OVMF variable store template.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";
/// SeaBIOS (Debian's seabios): sushy-tools names a loader for legacy boot too, which libvirt 9
/// requires once the loader element is there.
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";

/// Firmware of a lab host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (BMH `bootMode: legacy`).
    Bios,
    /// OVMF (BMH `bootMode: UEFI`).
    Uefi,
}

impl Firmware {
    /// The BareMetalHost `bootMode`.
    pub fn boot_mode(self) -> &'static str {
        match self {
            Firmware::Bios => "legacy",
            Firmware::Uefi => "UEFI",
        }
    }
}

/// One virtual host.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// BareMetalHost and libvirt domain name.
    pub name: String,
    /// Its firmware.
    pub firmware: Firmware,
    /// The PXE NIC's MAC.
    pub mac: String,
    /// The domain UUID (the Redfish system id).
    pub uuid: String,
    /// The tap device in the lab namespace.
    pub tap: String,
    /// Disk size.
    pub disk_gib: u64,
    /// Memory.
    pub memory_mib: u64,
    /// Virtual CPUs. Two, as no server has one: with one, the image's checksum competes with
    /// the download and the write for the same emulated CPU (docs/bench-lab.md).
    pub vcpus: u32,
}

impl HostPlan {
    /// Host `i` of the lab: even ones UEFI, odd ones BIOS.
    pub fn nth(i: usize) -> HostPlan {
        HostPlan {
            name: format!("lab-{i}"),
            firmware: if i.is_multiple_of(2) {
                Firmware::Uefi
            } else {
                Firmware::Bios
            },
            mac: format!("52:54:00:fe:1a:{:02x}", i + 1),
            uuid: format!("f3a0c1de-1ab0-4000-8000-{:012x}", i + 1),
            tap: format!("labtap{i}"),
            disk_gib: 8,
            memory_mib: 1024,
            vcpus: 2,
        }
    }

    /// The userData the lab gives it (the provisioned OS prints its SHA-256).
    pub fn user_data(&self) -> String {
        format!(
            "#cloud-config\n# ferrox lab user data for {}\nruncmd:\n  - echo hello from {}\n",
            self.name, self.name
        )
    }
}

/// The OS image the hosts get.
#[derive(Debug, Clone)]
pub struct Image {
    /// The raw image file.
    pub path: PathBuf,
    /// Its SHA-256, hex.
    pub sha256: String,
}

impl Image {
    /// A raw image file and its SHA-256 (read whole: seconds for a GiB).
    pub fn of(path: &Path) -> Result<Image> {
        ensure!(path.exists(), "{} is missing", path.display());
        let sum = crate::run("sha256sum", &[&path.to_string_lossy()])?;
        let sha256 = String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(Image {
            path: path.to_path_buf(),
            sha256,
        })
    }
}

/// What to bring up.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Working directory (state, logs, disks, consoles); created.
    pub dir: PathBuf,
    /// Network namespace name.
    pub netns: String,
    /// The hosts.
    pub hosts: Vec<HostPlan>,
    /// More VMs of the same kind on the same bridge that are not BareMetalHosts (no BMC, no
    /// manifest): the benchmark's floor machines, driven with virsh.
    pub extra_vms: Vec<HostPlan>,
    /// A static hosts file for ferrox-netboot, consulted before the controller's feed.
    pub netboot_hosts: Option<PathBuf>,
    /// The OS image.
    pub image: Image,
    /// ferrox-controller binary.
    pub controller: PathBuf,
    /// ferrox-netboot binary.
    pub netboot: PathBuf,
    /// Ramdisk kernel.
    pub kernel: PathBuf,
    /// Ramdisk initramfs.
    pub initramfs: PathBuf,
    /// sushy-emulator (from a venv that has libvirt-python).
    pub sushy: PathBuf,
}

impl Plan {
    /// The standard lab: `hosts` hosts (even ones UEFI, odd ones BIOS), the image
    /// hack/build-lab-image.sh built, the ramdisk hack/build-initramfs.sh built, the controller
    /// and netboot binaries in `bin`, sushy-tools with libvirt-python (installed if needed).
    pub fn standard(dir: &Path, netns: &str, hosts: usize, bin: &Path) -> Result<Plan> {
        let image = crate::ramdisk::workspace().join("target/lab-image/disk.raw");
        let image = Image::of(&image).context(
            "the lab image: run hack/build-lab-image.sh (hack/lab.sh and hack/test.sh do)",
        )?;
        let (kernel, initramfs) = crate::ramdisk::artifacts();
        for b in ["ferrox-controller", "ferrox-netboot"] {
            ensure!(
                bin.join(b).exists(),
                "{} is missing: cargo build -p {b}",
                bin.join(b).display()
            );
        }
        Ok(Plan {
            dir: dir.to_path_buf(),
            netns: netns.into(),
            hosts: (0..hosts).map(HostPlan::nth).collect(),
            extra_vms: Vec::new(),
            netboot_hosts: None,
            image,
            controller: bin.join("ferrox-controller"),
            netboot: bin.join("ferrox-netboot"),
            kernel,
            initramfs,
            sushy: crate::sushy::sushy_emulator_with_libvirt(),
        })
    }
}

/// The paths of a lab directory.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The root.
    pub root: PathBuf,
}

impl Dirs {
    /// Controller manifests.
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }
    /// Controller state.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    /// Logs of the services.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// A host's serial console.
    pub fn console(&self, host: &str) -> PathBuf {
        self.root.join("vms").join(format!("{host}.console"))
    }
    /// A host's disk (raw, sparse).
    pub fn disk(&self, host: &str) -> PathBuf {
        self.root.join("vms").join(format!("{host}.raw"))
    }
    /// The PID file libvirt keeps for a running VM's QEMU (there while it runs).
    pub fn qemu_pid_file(&self, host: &str) -> PathBuf {
        self.libvirt().join("run/qemu").join(format!("{host}.pid"))
    }
    /// libvirt's directories.
    fn libvirt(&self) -> PathBuf {
        self.root.join("libvirt")
    }
    /// libvirtd's socket URI.
    pub fn libvirt_uri(&self) -> String {
        format!(
            "qemu:///system?socket={}",
            self.libvirt().join("sock/libvirt-sock").display()
        )
    }
    fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = crate::run(cmd, args)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -n NS ARGS...`.
fn ipn(ns: &str, line: &str) -> Result<()> {
    let mut args = vec!["-n", ns];
    args.extend(line.split(' '));
    crate::run("ip", &args).map(|_| ())
}

/// Starts `argv` inside the namespace, detached into its own process group so it outlives the
/// command that started the lab, with its output in `logs/NAME.log`; records its PID.
fn spawn(dirs: &Dirs, ns: &str, name: &str, argv: &[&str]) -> Result<u32> {
    let log = std::fs::File::create(dirs.logs().join(format!("{name}.log")))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let pid = child.id();
    // `ip netns exec` execs the program: this PID is the service's. Reaped by whoever outlives
    // whom; the lab never waits on it.
    std::mem::forget(child);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dirs.pids())?;
    use std::io::Write as _;
    writeln!(f, "{pid} {name}")?;
    Ok(pid)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !ok() {
        ensure!(t0.elapsed() < limit, "{what}: not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Brings the lab up: namespace, libvirtd and the VMs (powered off), sushy-tools, the image
/// server, the controller and netboot, then applies the hosts' manifests. Returns when all
/// services answer; the hosts then go through their lifecycle on their own.
pub fn up(plan: &Plan) -> Result<Dirs> {
    let dirs = start(plan)?;
    std::fs::write(dirs.manifests().join("hosts.yaml"), manifests(plan))?;
    Ok(dirs)
}

/// [`up`] without applying any manifest: the caller [`apply`]s what it wants, when it wants.
pub fn start(plan: &Plan) -> Result<Dirs> {
    let dirs = Dirs {
        root: plan.dir.clone(),
    };
    if dirs.pids().exists() {
        bail!(
            "a lab is already recorded in {} (run `down` first)",
            dirs.root.display()
        );
    }
    // A new lab starts from nothing: an earlier lab's store, disks and logs go.
    for d in ["manifests", "state", "logs", "vms", "images", "libvirt"] {
        let p = dirs.root.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
        }
    }
    for d in ["manifests", "state", "logs", "vms", "images"] {
        std::fs::create_dir_all(dirs.root.join(d))?;
    }
    // Stale namespace of an earlier crashed run with the same name.
    if Path::new("/run/netns").join(&plan.netns).exists() {
        bail!(
            "network namespace {} exists: another lab is running (or `down` was not run)",
            plan.netns
        );
    }
    std::fs::write(dirs.root.join("netns"), &plan.netns)?;
    crate::run("ip", &["netns", "add", &plan.netns])?;
    let ns = plan.netns.as_str();
    ipn(ns, "link set lo up")?;
    ipn(ns, "link add provisioning type bridge")?;
    ipn(ns, &format!("addr add {GATEWAY}/24 dev provisioning"))?;
    ipn(ns, "link set provisioning up")?;
    for h in plan.hosts.iter().chain(&plan.extra_vms) {
        ipn(ns, &format!("tuntap add dev {} mode tap", h.tap))?;
        ipn(ns, &format!("link set {} master provisioning", h.tap))?;
        ipn(ns, &format!("link set {} up", h.tap))?;
    }

    start_libvirtd(&dirs, ns)?;
    for h in plan.hosts.iter().chain(&plan.extra_vms) {
        define_vm(&dirs, h)?;
    }
    start_sushy(&dirs, ns, plan)?;

    // The OS image, served by a plain HTTP server as metal3's httpd serves Ironic's images.
    let served = dirs.root.join("images/disk.raw");
    let _ = std::fs::remove_file(&served);
    if std::fs::hard_link(&plan.image.path, &served).is_err() {
        std::fs::copy(&plan.image.path, &served)?;
    }
    spawn(
        &dirs,
        ns,
        "images",
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            GATEWAY,
            "--directory",
            &dirs.root.join("images").to_string_lossy(),
            &IMAGE_PORT.to_string(),
        ],
    )?;

    let state = dirs.state();
    let _ = std::fs::remove_file(state.join("api.address"));
    spawn(
        &dirs,
        ns,
        "controller",
        &[
            &plan.controller.to_string_lossy(),
            "run",
            "--manifests",
            &dirs.manifests().to_string_lossy(),
            "--state",
            &state.to_string_lossy(),
            "--agent-listen",
            &format!("{GATEWAY}:9443"),
            "--agent-url",
            &format!("https://{GATEWAY}:9443"),
            "--api-listen",
            &format!("{GATEWAY}:9445"),
            "--ramdisk-cmdline",
            "console=ttyS0",
            // The lab OS ignores ACPI shutdown requests (it has no acpid): show the escalation
            // to a hard power-off without waiting the default 180 s.
            "--soft-power-off-timeout",
            "20",
        ],
    )?;
    wait_for(
        "the controller's local API",
        Duration::from_secs(60),
        || state.join("api.address").exists() && state.join("api.token").exists(),
    )
    .with_context(|| tail(&dirs.logs().join("controller.log"), 20))?;

    let mut netboot: Vec<String> = [
        plan.netboot.to_string_lossy().as_ref(),
        "--interface",
        "provisioning",
        "--pool",
        &format!("172.22.0.0/24,172.22.0.100-172.22.0.199,router={GATEWAY}"),
        "--kernel",
        &plan.kernel.to_string_lossy(),
        "--initramfs",
        &plan.initramfs.to_string_lossy(),
        "--controller-hosts",
        &format!("http://{GATEWAY}:9445"),
        "--controller-token-file",
        &state.join("api.token").to_string_lossy(),
    ]
    .map(String::from)
    .into();
    if let Some(hosts) = &plan.netboot_hosts {
        netboot.extend(["--hosts".into(), hosts.to_string_lossy().into_owned()]);
    }
    let netboot: Vec<&str> = netboot.iter().map(String::as_str).collect();
    spawn(&dirs, ns, "netboot", &netboot)?;
    Ok(dirs)
}

fn start_libvirtd(dirs: &Dirs, ns: &str) -> Result<()> {
    let lv = dirs.libvirt();
    for d in ["etc", "lib", "run", "sock", "log"] {
        std::fs::create_dir_all(lv.join(d))?;
    }
    // The QEMU driver as root without the system's security, cgroup or logging daemons (there
    // is no systemd, dbus or virtlogd here); VMs are plain TCG guests.
    std::fs::write(
        lv.join("etc/qemu.conf"),
        "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n\
         security_driver = \"none\"\nnamespaces = []\ncgroup_controllers = []\n\
         stdio_handler = \"file\"\n",
    )?;
    std::fs::write(
        lv.join("etc/libvirtd.conf"),
        format!(
            "unix_sock_dir = \"{}\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\n\
             auth_unix_ro = \"none\"\nlog_outputs = \"3:file:{}\"\n",
            lv.join("sock").display(),
            lv.join("log/libvirtd.log").display()
        ),
    )?;
    // libvirtd parses its compiled-in default user before reading qemu.conf.
    if crate::run("id", &["libvirt-qemu"]).is_err() {
        crate::run(
            "useradd",
            &["-r", "-s", "/usr/sbin/nologin", "libvirt-qemu"],
        )?;
    }
    let script = format!(
        "set -e; mkdir -p /var/lib/libvirt /run/libvirt; \
         mount --bind {etc} /etc/libvirt; mount --bind {lib} /var/lib/libvirt; \
         mount --bind {run} /run/libvirt; \
         exec libvirtd --config {etc}/libvirtd.conf",
        etc = lv.join("etc").display(),
        lib = lv.join("lib").display(),
        run = lv.join("run").display(),
    );
    spawn(
        dirs,
        ns,
        "libvirtd",
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
    )?;
    let uri = dirs.libvirt_uri();
    wait_for("libvirtd", Duration::from_secs(30), || {
        crate::run("virsh", &["-c", &uri, "version"]).is_ok()
    })
    .with_context(|| tail(&dirs.logs().join("libvirtd.log"), 20))
}

/// The libvirt domain of a host: TCG, its NIC on the lab bridge through its tap (unmanaged),
/// an empty raw disk, the serial console in a file. Network boot first; sushy-tools rewrites
/// the boot order and firmware when the controller asks. The NIC is virtio-net: its link is
/// up when the driver loads, where an emulated e1000's comes up about 2 s later and loses the
/// first DHCP offers (the PXE and ramdisk tests keep covering the e1000). The CPU is QEMU's default model
/// plus RDRAND, which every x86 server of the last decade has: without it the guest kernel's
/// RNG is seeded only about a second after boot, and the agent's enrollment key waits for it.
pub fn domain_xml(dirs: &Dirs, h: &HostPlan) -> String {
    let os = match h.firmware {
        Firmware::Bios => String::new(),
        Firmware::Uefi => format!(
            "<loader readonly='yes' type='pflash'>{OVMF_CODE}</loader>\
             <nvram template='{OVMF_VARS}'>{}</nvram>",
            dirs.root
                .join("vms")
                .join(format!("{}_VARS.fd", h.name))
                .display()
        ),
    };
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    {os}
    <boot dev='network'/>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
    <feature policy='require' name='rdrand'/>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='unsafe'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <serial>FXLAB{serial}</serial>
    </disk>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{tap}' managed='no'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='{console}' append='on'/><target port='0'/></serial>
    <console type='file'><source path='{console}' append='on'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
",
        name = h.name,
        uuid = h.uuid,
        mem = h.memory_mib,
        vcpus = h.vcpus,
        disk = dirs.disk(&h.name).display(),
        serial = h.name.trim_start_matches("lab-"),
        mac = h.mac,
        tap = h.tap,
        console = dirs.console(&h.name).display(),
    )
}

fn define_vm(dirs: &Dirs, h: &HostPlan) -> Result<()> {
    let _ = std::fs::remove_file(dirs.console(&h.name));
    let disk = dirs.disk(&h.name);
    let f = std::fs::File::create(&disk)?;
    f.set_len(h.disk_gib << 30)?;
    let xml = dirs.root.join("vms").join(format!("{}.xml", h.name));
    std::fs::write(&xml, domain_xml(dirs, h))?;
    crate::run(
        "virsh",
        &["-c", &dirs.libvirt_uri(), "define", &xml.to_string_lossy()],
    )?;
    Ok(())
}

fn start_sushy(dirs: &Dirs, ns: &str, plan: &Plan) -> Result<()> {
    let python = plan.sushy.with_file_name("python");
    let out = crate::run(
        &python.to_string_lossy(),
        &[
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())",
            BMC_PASSWORD,
        ],
    )?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let htpasswd = dirs.root.join("htpasswd");
    std::fs::write(&htpasswd, format!("{BMC_USER}:{hash}\n"))?;
    let conf = dirs.root.join("sushy.conf");
    std::fs::write(
        &conf,
        format!(
            "SUSHY_EMULATOR_LISTEN_IP = '{GATEWAY}'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {SUSHY_PORT}\n\
             SUSHY_EMULATOR_LIBVIRT_URI = '{uri}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{htpasswd}'\n\
             SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False\n\
             SUSHY_EMULATOR_BOOT_LOADER_MAP = {{'UEFI': {{'x86_64': '{OVMF_CODE}'}}, 'Legacy': {{'x86_64': '{SEABIOS}'}}}}\n\
             SUSHY_EMULATOR_ALLOWED_INSTANCES = [{uuids}]\n",
            uri = dirs.libvirt_uri(),
            htpasswd = htpasswd.display(),
            uuids = plan
                .hosts
                .iter()
                .map(|h| format!("'{}'", h.uuid))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    )?;
    spawn(
        dirs,
        ns,
        "sushy",
        &[
            &plan.sushy.to_string_lossy(),
            "--config",
            &conf.to_string_lossy(),
        ],
    )?;
    let url = format!("http://{GATEWAY}:{SUSHY_PORT}/redfish/v1/");
    wait_for("sushy-tools", Duration::from_secs(60), || {
        crate::run(
            "ip",
            &["netns", "exec", ns, "curl", "-sf", "-o", "/dev/null", &url],
        )
        .is_ok()
    })
    .with_context(|| tail(&dirs.logs().join("sushy.log"), 20))
}

/// The hosts' manifests: per host a BMC credentials Secret, a userData Secret and the
/// BareMetalHost, exactly as a metal3 user writes them.
pub fn manifests(plan: &Plan) -> String {
    manifests_with(plan, true, true)
}

/// [`manifests`] with or without the image (without: deprovision) and with `spec.online`.
pub fn manifests_with(plan: &Plan, image: bool, online: bool) -> String {
    let mut y = String::new();
    for h in &plan.hosts {
        let ud = h.user_data().replace('\n', "\\n");
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {n}-bmc-secret\n  namespace: default\n\
             type: Opaque\nstringData:\n  username: {BMC_USER}\n  password: {BMC_PASSWORD}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {n}-user-data\n  namespace: default\n\
             type: Opaque\nstringData:\n  userData: \"{ud}\"\n\
             ---\napiVersion: metal3.io/v1alpha1\nkind: BareMetalHost\nmetadata:\n  name: {n}\n  namespace: default\n\
             spec:\n  online: {online}\n  bootMACAddress: \"{mac}\"\n  bootMode: {mode}\n  \
             automatedCleaningMode: metadata\n  \
             bmc:\n    address: redfish+http://{GATEWAY}:{SUSHY_PORT}/redfish/v1/Systems/{uuid}\n    \
             credentialsName: {n}-bmc-secret\n  \
             rootDeviceHints:\n    deviceName: /dev/vda\n  \
             {image}userData:\n    name: {n}-user-data\n    namespace: default\n",
            n = h.name,
            mac = h.mac,
            mode = h.firmware.boot_mode(),
            uuid = h.uuid,
            image = if image {
                format!(
                    "image:\n    url: http://{GATEWAY}:{IMAGE_PORT}/disk.raw\n    checksum: {}\n    \
                     checksumType: sha256\n    format: raw\n  ",
                    plan.image.sha256
                )
            } else {
                String::new()
            },
        );
    }
    y
}

/// A VM's state as libvirt sees it (`virsh domstate`: "running", "shut off", ...): the truth
/// behind the BMC's and the controller's power state.
pub fn domain_state(dirs: &Dirs, name: &str) -> Result<String> {
    Ok(sh("virsh", &["-c", &dirs.libvirt_uri(), "domstate", name])?
        .trim()
        .to_string())
}

/// Stops everything a lab in `dir` started (by the PIDs it recorded) and deletes its namespace.
/// Safe to run twice and on a half-started lab.
pub fn down(dir: &Path) -> Result<()> {
    let dirs = Dirs {
        root: dir.to_path_buf(),
    };
    let pids = std::fs::read_to_string(dirs.pids()).unwrap_or_default();
    // VMs first, while libvirtd still answers; then whatever QEMU it left (its PID files).
    let uri = dirs.libvirt_uri();
    if let Ok(list) = sh("virsh", &["-c", &uri, "list", "--name"]) {
        for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = crate::run("virsh", &["-c", &uri, "destroy", name]);
        }
    }
    let qemu_pids = dirs.libvirt().join("run/qemu");
    let mut all: Vec<(u32, String)> = pids
        .lines()
        .filter_map(|l| {
            let (p, n) = l.split_once(' ')?;
            Some((p.parse().ok()?, n.to_string()))
        })
        .collect();
    if let Ok(rd) = std::fs::read_dir(&qemu_pids) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Some(p) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    all.push((p, format!("qemu {}", e.path().display())));
                }
            }
        }
    }
    for (pid, _) in all.iter().rev() {
        if alive(*pid) {
            let _ = crate::run("kill", &["-TERM", &pid.to_string()]);
        }
    }
    let t0 = Instant::now();
    while all.iter().any(|(p, _)| alive(*p)) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (pid, _) in &all {
        if alive(*pid) {
            let _ = crate::run("kill", &["-KILL", &pid.to_string()]);
        }
    }
    if let Ok(ns) = std::fs::read_to_string(dirs.root.join("netns")) {
        let ns = ns.trim();
        if Path::new("/run/netns").join(ns).exists() {
            // Whatever still runs in the lab's namespace was started by the lab (a QEMU whose
            // libvirtd died before writing or after removing its PID file, say).
            let left = || -> Vec<u32> {
                sh("ip", &["netns", "pids", ns])
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .filter(|p| alive(*p))
                    .collect()
            };
            for (sig, wait) in [("-TERM", 5), ("-KILL", 2)] {
                let pids = left();
                if pids.is_empty() {
                    break;
                }
                for p in &pids {
                    let _ = crate::run("kill", &[sig, &p.to_string()]);
                }
                let t0 = Instant::now();
                while !left().is_empty() && t0.elapsed() < Duration::from_secs(wait) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            crate::run("ip", &["netns", "del", ns])?;
        }
    }
    let _ = std::fs::remove_file(dirs.pids());
    Ok(())
}

/// One host as `ferrox-controller get -o json` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// status.provisioning.state.
    pub state: String,
    /// status.operationalStatus.
    pub operational: String,
    /// status.errorMessage.
    pub error: String,
    /// status.poweredOn.
    pub powered_on: bool,
}

/// Runs `ferrox-controller ARGS --state DIR/state` inside the lab's namespace (where its local
/// API listens); returns its stdout.
pub fn ctl(dirs: &Dirs, ns: &str, controller: &Path, args: &[&str]) -> Result<String> {
    let c = controller.to_string_lossy();
    let state = dirs.state();
    let state = state.to_string_lossy();
    let mut v = vec!["netns", "exec", ns, &c];
    v.extend_from_slice(args);
    v.extend_from_slice(&["--state", &state]);
    sh("ip", &v)
}

/// Reads every host's status through the product's own CLI, inside the namespace.
pub fn observe(dirs: &Dirs, ns: &str, controller: &Path) -> Result<BTreeMap<String, Seen>> {
    let out = ctl(dirs, ns, controller, &["get", "bmh", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("get -o json")?;
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .cloned()
        .or_else(|| v.as_array().cloned())
        .unwrap_or_default();
    let mut m = BTreeMap::new();
    for it in items {
        let name = it["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let st = &it["status"];
        m.insert(
            name,
            Seen {
                state: st["provisioning"]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                operational: st["operationalStatus"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                error: st["errorMessage"].as_str().unwrap_or_default().to_string(),
                powered_on: st["poweredOn"].as_bool().unwrap_or(false),
            },
        );
    }
    Ok(m)
}

/// When each host first reached each state, in ms since the lab applied its manifests.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    t0: u64,
    /// host → [(state, ms)].
    pub reached: BTreeMap<String, Vec<(String, u64)>>,
    /// Last seen per host.
    pub last: BTreeMap<String, Seen>,
    /// When each host's console first showed the provisioned OS (ms since the epoch).
    pub os_seen: BTreeMap<String, u64>,
}

impl Timeline {
    /// Starting now.
    pub fn new() -> Timeline {
        Timeline {
            t0: now_ms(),
            ..Timeline::default()
        }
    }

    /// Records what was seen; returns lines describing changes (for a live display).
    pub fn record(&mut self, seen: &BTreeMap<String, Seen>) -> Vec<String> {
        let at = now_ms().saturating_sub(self.t0);
        let mut out = Vec::new();
        for (name, s) in seen {
            let prev = self.last.get(name);
            if prev.map(|p| &p.state) != Some(&s.state) {
                self.reached
                    .entry(name.clone())
                    .or_default()
                    .push((s.state.clone(), at));
                out.push(format!(
                    "{:>7.1}s  {name:<8} {:<14} {}",
                    at as f64 / 1000.0,
                    if s.state.is_empty() { "-" } else { &s.state },
                    s.operational
                ));
            }
            if !s.error.is_empty() && prev.map(|p| &p.error) != Some(&s.error) {
                out.push(format!(
                    "{:>7.1}s  {name:<8} error: {}",
                    at as f64 / 1000.0,
                    s.error
                ));
            }
            self.last.insert(name.clone(), s.clone());
        }
        out
    }

    /// Milliseconds from the first time `host` was in `from` to the first time in `to`.
    pub fn between(&self, host: &str, from: &str, to: &str) -> Option<u64> {
        let v = self.reached.get(host)?;
        let a = v.iter().find(|(s, _)| s == from)?.1;
        let b = v.iter().find(|(s, _)| s == to)?.1;
        b.checked_sub(a)
    }

    /// Per-host phase table: time spent in each state, in order.
    pub fn phases(&self) -> String {
        let mut s = String::new();
        for (host, v) in &self.reached {
            let _ = write!(s, "{host}:");
            for w in v.windows(2) {
                let _ = write!(s, "  {} {:.1}s", w[0].0, (w[1].1 - w[0].1) as f64 / 1000.0);
            }
            if let Some((last, at)) = v.last() {
                let _ = write!(s, "  → {last} at {:.1}s", *at as f64 / 1000.0);
            }
            s.push('\n');
        }
        s
    }
}

/// Watches until every host satisfies `done` (or one is in error, or `limit` passes), printing
/// changes through `show`.
pub fn watch(
    dirs: &Dirs,
    ns: &str,
    controller: &Path,
    timeline: &mut Timeline,
    limit: Duration,
    show: &mut dyn FnMut(&str),
    done: &dyn Fn(&str, &Seen, &Timeline) -> bool,
) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let seen = observe(dirs, ns, controller)?;
        for l in timeline.record(&seen) {
            show(&l);
        }
        for name in seen.keys() {
            if !timeline.os_seen.contains_key(name) && !os_report(dirs, name).is_empty() {
                timeline.os_seen.insert(name.clone(), now_ms());
                show(&format!(
                    "{:>7.1}s  {name:<8} the OS on its disk is up (console)",
                    now_ms().saturating_sub(timeline.t0) as f64 / 1000.0
                ));
            }
        }
        if !seen.is_empty() && seen.iter().all(|(n, s)| done(n, s, timeline)) {
            return Ok(());
        }
        if let Some((n, s)) = seen.iter().find(|(_, s)| s.operational == "error") {
            bail!("{n} is in error: {}", s.error);
        }
        ensure!(
            t0.elapsed() < limit,
            "hosts not done after {limit:?}: {:?}",
            seen
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The lines the provisioned OS printed (`FERROX-LAB: ...`) on a host's console.
pub fn os_report(dirs: &Dirs, host: &str) -> Vec<String> {
    std::fs::read_to_string(dirs.console(host))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.find("FERROX-LAB:").map(|i| l[i..].trim().to_string()))
        .collect()
}

/// Replaces the hosts' manifests (what `kubectl apply` of the edited file does).
pub fn apply(dirs: &Dirs, yaml: &str) -> Result<()> {
    let tmp = dirs.manifests().join(".hosts.yaml.tmp");
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, dirs.manifests().join("hosts.yaml"))?;
    Ok(())
}

/// An Event as `ferrox-controller get events -o json` shows it.
#[derive(Debug, Clone)]
pub struct LabEvent {
    /// The host's name.
    pub host: String,
    /// Event reason (StateChanged, AgentEnrolled, ...).
    pub reason: String,
    /// Its message (`registering -> inspecting`, ...).
    pub message: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// Every Event the controller recorded, oldest first.
pub fn events(dirs: &Dirs, ns: &str, controller: &Path) -> Result<Vec<LabEvent>> {
    let out = ctl(dirs, ns, controller, &["get", "events", "-o", "json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("get events -o json")?;
    let mut evs: Vec<LabEvent> = v["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            Some(LabEvent {
                host: e["involvedObject"]["name"].as_str()?.to_string(),
                reason: e["reason"].as_str()?.to_string(),
                message: e["message"].as_str().unwrap_or_default().to_string(),
                at_ms: rfc3339_ms(e["lastTimestamp"].as_str()?)?,
            })
        })
        .collect();
    evs.sort_by_key(|e| e.at_ms);
    Ok(evs)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` → ms since the epoch.
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms).ok()
}

/// The first time `host` entered `state` (from its StateChanged Events).
pub fn entered(evs: &[LabEvent], host: &str, state: &str) -> Option<u64> {
    let suffix = format!("-> {state}");
    evs.iter()
        .find(|e| e.host == host && e.reason == "StateChanged" && e.message.ends_with(&suffix))
        .map(|e| e.at_ms)
}

/// The states `host` went through, in order (from its StateChanged Events).
pub fn path(evs: &[LabEvent], host: &str) -> Vec<String> {
    evs.iter()
        .filter(|e| e.host == host && e.reason == "StateChanged")
        .filter_map(|e| e.message.rsplit_once("-> ").map(|(_, s)| s.to_string()))
        .collect()
}

/// Per-phase timings of one host's provisioning, from its Events (and, for the boot from
/// disk, when the provisioned OS's first line was seen on its console).
#[derive(Debug, Clone, Default)]
pub struct Phases {
    /// inspecting entered → agent enrolled: power-on, firmware, iPXE, kernel, agent.
    pub boot_agent_ms: Option<u64>,
    /// Agent enrolled → available: inspection.
    pub inspect_ms: Option<u64>,
    /// provisioning → provisioned: image write, config drive, switch to disk.
    pub provision_ms: Option<u64>,
    /// provisioned → the OS on disk printed its first line.
    pub boot_disk_ms: Option<u64>,
    /// registering → provisioned.
    pub total_ms: Option<u64>,
}

impl Phases {
    /// From the Events of `host`; `os_seen_ms` is when its console first showed the OS.
    pub fn of(evs: &[LabEvent], host: &str, os_seen_ms: Option<u64>) -> Phases {
        let insp = entered(evs, host, "inspecting");
        let enrolled = evs
            .iter()
            .find(|e| e.host == host && e.reason == "AgentEnrolled")
            .map(|e| e.at_ms);
        let avail = entered(evs, host, "available");
        let prov = entered(evs, host, "provisioning");
        let done = entered(evs, host, "provisioned");
        let reg = entered(evs, host, "registering");
        let d = |a: Option<u64>, b: Option<u64>| b?.checked_sub(a?);
        Phases {
            boot_agent_ms: d(insp, enrolled),
            inspect_ms: d(enrolled, avail),
            provision_ms: d(prov, done),
            boot_disk_ms: d(done, os_seen_ms),
            total_ms: d(reg, done),
        }
    }

    /// One table row.
    pub fn row(&self, host: &str, firmware: Firmware) -> String {
        let f =
            |v: Option<u64>| v.map_or("-".to_string(), |ms| format!("{:.1}", ms as f64 / 1000.0));
        format!(
            "{host:<8} {:<6} {:>14} {:>10} {:>12} {:>14} {:>10}",
            firmware.boot_mode(),
            f(self.boot_agent_ms),
            f(self.inspect_ms),
            f(self.provision_ms),
            f(self.boot_disk_ms),
            f(self.total_ms)
        )
    }

    /// The table's header.
    pub fn header() -> String {
        format!(
            "{:<8} {:<6} {:>14} {:>10} {:>12} {:>14} {:>10}",
            "HOST", "MODE", "POWERON→AGENT", "INSPECT", "PROVISION", "DISK→OS UP", "TOTAL"
        )
    }
}

/// Whether the provisioned OS on `host` has printed its last report line (`FERROX-LAB: ready
/// ...`, after the config drive's lines, whatever they said).
pub fn os_ready(dirs: &Dirs, host: &str) -> bool {
    report_complete(&os_report(dirs, host))
}

fn report_complete(lines: &[String]) -> bool {
    lines.iter().any(|l| l.starts_with("FERROX-LAB: ready"))
}

/// Waits (bounded) until the provisioned OS on `host` printed its whole report ([`os_ready`]);
/// returns when its first line was seen (ms since the epoch) and the lines.
pub fn wait_os(dirs: &Dirs, host: &str, limit: Duration) -> (Option<u64>, Vec<String>) {
    let t0 = Instant::now();
    let mut first = None;
    loop {
        let r = os_report(dirs, host);
        if !r.is_empty() && first.is_none() {
            first = Some(now_ms());
        }
        if report_complete(&r) || t0.elapsed() > limit {
            return (first, r);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_as_kubectl_prints_them() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-11-22T03:11:04.529Z"),
            Some(1_795_317_064_529)
        );
        assert_eq!(rfc3339_ms("2000-02-29T23:59:59.05Z"), Some(951_868_799_050));
        assert_eq!(rfc3339_ms("2026-11-22T03:11:04"), None);
        assert_eq!(rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn phases_come_from_state_changes_and_enrollment() {
        let ev = |reason: &str, message: &str, at_ms| LabEvent {
            host: "h".into(),
            reason: reason.into(),
            message: message.into(),
            at_ms,
        };
        let evs = vec![
            ev("StateChanged", "(new) -> registering", 1_000),
            ev("StateChanged", "registering -> inspecting", 3_000),
            ev("AgentEnrolled", "the agent enrolled", 40_000),
            ev("StateChanged", "inspecting -> available", 41_500),
            ev("StateChanged", "available -> provisioning", 41_600),
            ev("StateChanged", "provisioning -> provisioned", 60_000),
        ];
        let p = Phases::of(&evs, "h", Some(75_000));
        assert_eq!(p.boot_agent_ms, Some(37_000));
        assert_eq!(p.inspect_ms, Some(1_500));
        assert_eq!(p.provision_ms, Some(18_400));
        assert_eq!(p.boot_disk_ms, Some(15_000));
        assert_eq!(p.total_ms, Some(59_000));
        assert_eq!(
            path(&evs, "h"),
            [
                "registering",
                "inspecting",
                "available",
                "provisioning",
                "provisioned"
            ]
        );
        assert_eq!(Phases::of(&evs, "other", None).total_ms, None);
    }
}
