//! A booted ramdisk, simulated: the agent's own client and protocol over real mTLS, with the
//! work (inventory, wipe, image write) replaced by waits. Its loop is the real agent's
//! (`agent_ramdisk::heartbeat`): long-poll, run, report, retry transient failures with backoff;
//! a refusal ends the boot, as it does for the real agent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{
    Action, Cpu, Event, FullInventory, HardwareDetails, HardwareSystemVendor, Nic, Outcome,
    Progress, Storage,
};
use agent_ramdisk::client::{Client, ClientError, Identity};
use agent_ramdisk::heartbeat::backoff;
use tokio_util::sync::CancellationToken;

use crate::bmc::Sim;
use crate::feed::Boot;

/// The inventory a simulated host reports: two disks, two NICs, a CPU with a real flag list, so
/// the report has the size of a real one (about 4 KiB of JSON).
pub fn inventory(id: &str, mac: &str) -> FullInventory {
    let flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush \
                 mmx fxsr sse sse2 ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl \
                 xtopology cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 \
                 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor \
                 lahf_lm abm 3dnowprefetch cpuid_fault invpcid_single ssbd ibrs ibpb stibp \
                 ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f \
                 avx512dq rdseed adx smap clflushopt clwb avx512cd sha_ni avx512bw avx512vl \
                 xsaveopt xsavec xgetbv1 xsaves arat avx512vbmi umip pku ospke avx512_vbmi2 gfni \
                 vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid md_clear \
                 flush_l1d arch_capabilities";
    let disk = |name: &str, size: i64, serial: String| Storage {
        name: Some(format!("/dev/{name}")),
        alternate_names: vec![format!("/dev/disk/by-id/nvme-SIM_{serial}")],
        rotational: Some(false),
        disk_type: Some(agent_proto::DiskType::Nvme),
        size_bytes: Some(size),
        vendor: Some("Ferrox".into()),
        model: Some("SIM NVMe".into()),
        serial_number: Some(serial),
        ..Storage::default()
    };
    let nic = |name: &str, mac: String, pxe: bool| Nic {
        name: Some(name.into()),
        model: Some("0x8086 0x1572".into()),
        mac: Some(mac),
        ip: pxe.then(|| "127.0.0.1".into()),
        speed_gbps: Some(25),
        pxe: Some(pxe),
        ..Nic::default()
    };
    FullInventory {
        hardware: HardwareDetails {
            system_vendor: Some(HardwareSystemVendor {
                manufacturer: Some("Ferrox simulation".into()),
                product_name: Some("sim-1".into()),
                serial_number: Some(format!("SIM{id}")),
            }),
            ram_mebibytes: Some(262_144),
            nics: vec![
                nic("eno1", mac.to_string(), true),
                nic("eno2", format!("{}ff", &mac[..mac.len() - 2]), false),
            ],
            storage: vec![
                disk("nvme0n1", 960_197_124_096, format!("{id}-0")),
                disk("nvme1n1", 3_840_755_982_336, format!("{id}-1")),
            ],
            cpu: Some(Cpu {
                arch: Some("x86_64".into()),
                model: Some("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into()),
                clock_megahertz: Some(2000.0),
                flags: flags.split_whitespace().map(str::to_string).collect(),
                count: Some(64),
            }),
            hostname: Some(id.to_string()),
            ..HardwareDetails::default()
        },
        ..FullInventory::default()
    }
}

/// Repeats `call` while it fails transiently (as the real agent does), counting calls.
async fn call<T, F, Fut>(sim: &Sim, cancel: &CancellationToken, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let c = &sim.counters;
    let mut attempt = 0;
    loop {
        c.agent_calls.fetch_add(1, Ordering::Relaxed);
        let r = tokio::select! {
            r = f() => r,
            _ = cancel.cancelled() => return None,
        };
        match r {
            Ok(v) => return Some(v),
            Err(e) if e.is_transient() => {
                c.agent_call_errors.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(
                    attempt,
                    Duration::from_millis(250),
                    Duration::from_secs(10),
                    crate::bmc::random_u64(),
                );
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return None,
                }
            }
            Err(e) => {
                c.agent_refusals.fetch_add(1, Ordering::Relaxed);
                eprintln!("ferrox-scale: agent: refused: {e}");
                return None;
            }
        }
    }
}

/// One boot of the ramdisk on host `id`, until a power-off/reboot command, a refusal, or `cancel`
/// (the machine was powered off or reset).
pub async fn run(sim: Arc<Sim>, id: String, mac: String, boot: Boot, cancel: CancellationToken) {
    let client = match Client::new(&boot.controller_url, &boot.ca_fingerprint) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            sim.counters.agent_refusals.fetch_add(1, Ordering::Relaxed);
            eprintln!("ferrox-scale: {id}: the kernel command line is unusable: {e}");
            return;
        }
    };
    let identity = Identity {
        boot_mac: mac.clone(),
        address: "127.0.0.1".into(),
        macs: vec![mac.clone()],
        system_uuid: None,
        system_serial: Some(format!("SIM{id}")),
        ready_after_seconds: sim.timings.boot.as_secs_f64(),
    };
    if call(&sim, &cancel, || client.enroll(&boot.token, &identity))
        .await
        .is_none()
    {
        return;
    }
    sim.counters.enrollments.fetch_add(1, Ordering::Relaxed);
    let mut done: Vec<(String, Outcome)> = Vec::new();
    loop {
        if client.needs_renewal() {
            call(&sim, &cancel, || client.renew()).await;
        }
        let Some(reply) = call(&sim, &cancel, || client.heartbeat(None, 55)).await else {
            return;
        };
        let Some(cmd) = reply.command else {
            continue;
        };
        // Idempotent by id: a repeated delivery reports the first outcome again.
        let outcome = match done.iter().find(|(c, _)| *c == cmd.id) {
            Some((_, o)) => o.clone(),
            None => {
                sim.counters.commands.fetch_add(1, Ordering::Relaxed);
                let Some(o) = work(&sim, &client, &id, &mac, &cmd.id, &cmd.action, &cancel).await
                else {
                    return;
                };
                done.push((cmd.id.clone(), o.clone()));
                o
            }
        };
        let ev = Event::Done {
            command: cmd.id.clone(),
            outcome,
        };
        if call(&sim, &cancel, || client.events(vec![ev.clone()]))
            .await
            .is_none()
        {
            return;
        }
        match cmd.action {
            Action::PowerOff => return sim.power_off(&id),
            Action::Reboot => return sim.boot(&id),
            _ => {}
        }
    }
}

/// Does `action` (by waiting), reporting progress for a write. `None`: cancelled.
async fn work(
    sim: &Sim,
    client: &Client,
    id: &str,
    mac: &str,
    command: &str,
    action: &Action,
    cancel: &CancellationToken,
) -> Option<Outcome> {
    let t = &sim.timings;
    let sleep = |d: Duration| async move {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = cancel.cancelled() => false,
        }
    };
    let ok = |summary: String, device: Option<String>| Outcome::Ok { summary, device };
    Some(match action {
        Action::Inspect => {
            if !sleep(t.inspect).await {
                return None;
            }
            Outcome::Inventory {
                inventory: Box::new(inventory(id, mac)),
            }
        }
        Action::Wipe { mode, .. } => {
            if !sleep(t.wipe).await {
                return None;
            }
            ok(format!("wiped ({mode:?}), simulated"), None)
        }
        Action::WriteImage(w) => {
            const TOTAL: u64 = 1 << 30;
            let c = &sim.counters;
            let now = c.writing_now.fetch_add(1, Ordering::SeqCst) + 1;
            c.writing_max.fetch_max(now, Ordering::SeqCst);
            struct Writing<'a>(&'a std::sync::atomic::AtomicU64);
            impl Drop for Writing<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _writing = Writing(&c.writing_now);
            for q in 1..=4u64 {
                if !sleep(t.write / 4).await {
                    return None;
                }
                let progress = Progress {
                    operation: "write-image".into(),
                    device: "/dev/nvme0n1".into(),
                    bytes_done: TOTAL * q / 4,
                    bytes_total: Some(TOTAL),
                    rate_bytes_per_sec: (TOTAL as f64 / t.write.as_secs_f64().max(1e-3)) as u64,
                    phase: if q < 4 { "downloading" } else { "done" }.into(),
                };
                // Best effort, as the real agent: a lost progress event is replaced by the next.
                sim.counters.agent_calls.fetch_add(1, Ordering::Relaxed);
                if client
                    .events(vec![Event::Progress {
                        command: command.into(),
                        progress,
                    }])
                    .await
                    .is_err()
                {
                    sim.counters
                        .agent_call_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            sim.wrote_image(id);
            ok(
                format!("wrote 1.0 GiB from {} to /dev/nvme0n1 (simulated)", w.url),
                Some("/dev/nvme0n1".into()),
            )
        }
        Action::PowerOff | Action::Reboot => ok(String::new(), None),
    })
}
