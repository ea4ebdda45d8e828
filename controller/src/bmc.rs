//! The Redfish driver behind [`crate::reconciler::Bmc`]: parses `spec.bmc.address` with metal3's
//! rules (other drivers are a clear registration error), and keeps one connected client (and so
//! one Redfish session) per BMC and credentials, dropped on any error so the next call
//! reconnects. BMCs allow only a handful of sessions; a session per call would exhaust them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_redfish::{
    BmcAddress, BootMode as RfBootMode, BootTarget as RfBootTarget, ConnectOptions, Credentials,
    PowerState, Redfish, RedfishError, Transport,
};

use crate::model::{BootMode, Power};
use crate::reconciler::{Bmc, BmcTarget, BootTarget, BoxFut};

/// Redfish BMCs.
#[derive(Default)]
pub struct RedfishBmc {
    clients: Mutex<HashMap<BmcTarget, Arc<Redfish>>>,
    /// One TLS configuration and connection pool for all BMCs.
    transport: Transport,
    /// Per-request deadline (default: the client's).
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishBmc").finish_non_exhaustive()
    }
}

impl std::hash::Hash for BmcTarget {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.address.hash(h);
        self.username.hash(h);
        self.password.hash(h);
        self.disable_certificate_verification.hash(h);
    }
}

impl RedfishBmc {
    async fn client(&self, t: &BmcTarget) -> Result<Arc<Redfish>, String> {
        if let Some(c) = self.clients.lock().unwrap().get(t) {
            return Ok(c.clone());
        }
        let endpoint = match BmcAddress::parse(&t.address).map_err(|e| one_line(&e))? {
            BmcAddress::Redfish(ep) => ep,
            BmcAddress::Unsupported { driver } => {
                return Err(format!(
                    "BMC address {}: the {driver} driver is not supported; Ferrox drives BMCs over \
                     Redfish only (redfish://, redfish+http://, redfish+https://)",
                    t.address
                ))
            }
        };
        let mut opts = ConnectOptions {
            disable_cert_verification: t.disable_certificate_verification,
            ..ConnectOptions::default()
        };
        if let Some(d) = self.timeout {
            opts.timeout = d;
        }
        let creds = Credentials {
            username: t.username.clone(),
            password: t.password.clone(),
        };
        let c = Arc::new(
            Redfish::connect_via(&self.transport, &endpoint, creds, opts)
                .await
                .map_err(|e| e.one_line())?,
        );
        let mut m = self.clients.lock().unwrap();
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(t.clone(), c.clone());
        Ok(c)
    }

    /// Runs `f` on the cached client; on error forgets it so the next call reconnects.
    async fn with<T, F>(&self, t: &BmcTarget, f: F) -> Result<T, String>
    where
        F: for<'c> FnOnce(&'c Redfish) -> BoxFut<'c, Result<T, RedfishError>>,
    {
        let c = self.client(t).await?;
        match f(&c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.clients.lock().unwrap().remove(t);
                Err(e.one_line())
            }
        }
    }
}

fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error_chain(e)
}

fn rf_mode(m: BootMode) -> RfBootMode {
    match m {
        BootMode::Uefi | BootMode::UefiSecureBoot => RfBootMode::Uefi,
        BootMode::Legacy => RfBootMode::Legacy,
    }
}

impl Bmc for RedfishBmc {
    fn probe<'a>(&'a self, t: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>> {
        Box::pin(async move {
            // A fresh connection: registration checks address and credentials for real.
            self.clients.lock().unwrap().remove(t);
            self.power_state(t).await
        })
    }

    fn power_state<'a>(&'a self, t: &'a BmcTarget) -> BoxFut<'a, Result<Power, String>> {
        Box::pin(async move {
            let s = self.with(t, |c| Box::pin(c.power_state())).await?;
            Ok(match s {
                PowerState::On | PowerState::PoweringOn => Power::On,
                PowerState::Off | PowerState::PoweringOff => Power::Off,
                _ => Power::Unknown,
            })
        })
    }

    fn power<'a>(
        &'a self,
        t: &'a BmcTarget,
        on: bool,
        force: bool,
    ) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move {
            if on {
                self.with(t, |c| Box::pin(c.power_on())).await
            } else {
                self.with(t, move |c| Box::pin(c.power_off(force))).await
            }
        })
    }

    fn reset<'a>(&'a self, t: &'a BmcTarget) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move { self.with(t, |c| Box::pin(c.reset())).await })
    }

    fn boot_once<'a>(
        &'a self,
        t: &'a BmcTarget,
        target: BootTarget,
        mode: BootMode,
    ) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move {
            let rt = match target {
                BootTarget::Pxe => RfBootTarget::Pxe,
                BootTarget::Disk => RfBootTarget::Hdd,
            };
            let m = rf_mode(mode);
            self.with(t, move |c| Box::pin(c.set_boot_once(rt, Some(m))))
                .await
        })
    }
}
