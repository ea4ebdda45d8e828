//! The client against sushy-tools, the Redfish emulator Ironic's and metal3's CI use, in its
//! fake-driver mode (systems kept in a SQLite file; power changes land 1-11 s after they are
//! asked for, like real hardware). Installed by `hack/sushy-tools.sh` into a venv under
//! /opt, hence root; `hack/test.sh` runs these.
//!
//! sushy-tools has no SessionService, so these exercise the basic-auth fallback; the
//! session path is tested in `tests/sessions.rs`.

use std::time::{Duration, Instant};

use tests::sushy::{Emulator, Setup, PASSWORD, SECOND, SYSTEM, USER};

use controller_redfish::{
    BmcAddress, BootMode, BootTarget, ConnectOptions, Credentials, ErrorKind, PowerState, Redfish,
    RedfishError,
};

fn creds(password: &str) -> Credentials {
    Credentials {
        username: USER.into(),
        password: password.into(),
    }
}

async fn connect(
    address: &str,
    password: &str,
    opts: ConnectOptions,
) -> Result<Redfish, RedfishError> {
    let endpoint = BmcAddress::parse(address).unwrap().into_redfish().unwrap();
    Redfish::connect(&endpoint, creds(password), opts).await
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        timeout: Duration::from_secs(10),
        ..ConnectOptions::default()
    }
}

/// Polls until the power state is `want` (the fake driver applies changes 1-11 s later).
async fn wait_power(bmc: &Redfish, want: PowerState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = bmc.power_state().await.unwrap();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "power state stuck at {now:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn discovery_power_and_boot_override_with_basic_auth() {
    let emu = Emulator::start(Setup {
        basic_auth: true,
        ..Setup::default()
    });
    // No system in the address: the only system is found.
    let bmc = connect(&emu.address("redfish+http", None), PASSWORD, quick())
        .await
        .unwrap();
    assert!(
        !bmc.uses_session(),
        "sushy-tools has no SessionService: basic auth"
    );
    assert_eq!(bmc.system_path(), format!("/redfish/v1/Systems/{SYSTEM}"));

    let info = bmc.system().await.unwrap();
    assert_eq!(info.id, SYSTEM);
    assert_eq!(info.uuid.as_deref(), Some(SYSTEM));
    assert_eq!(info.manufacturer.as_deref(), Some("Sushy Emulator"));
    assert_eq!(info.power_state, PowerState::Off);
    assert_eq!(info.boot_mode(), Some(BootMode::Uefi));
    for t in ["Pxe", "Hdd", "UefiHttp"] {
        assert!(
            info.allowed_boot_targets.iter().any(|a| a == t),
            "{t}: {:?}",
            info.allowed_boot_targets
        );
    }
    assert!(info.allowed_reset_types.iter().any(|a| a == "ForceRestart"));

    // Power on, observed through GET; a second power on is not an error.
    bmc.power_on().await.unwrap();
    wait_power(&bmc, PowerState::On).await;
    bmc.power_on().await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    // ForceRestart: the fake driver drops to Off at once, then comes back On. Its
    // return time is int(now) + 1..=11 s, so about one restart in twenty comes back
    // before the next GET: a reset that does nothing is On every time, a real one is
    // seen Off in at least one of three tries.
    let mut seen_off = false;
    for _ in 0..3 {
        bmc.reset().await.unwrap();
        seen_off = bmc.power_state().await.unwrap() == PowerState::Off;
        wait_power(&bmc, PowerState::On).await;
        if seen_off {
            break;
        }
    }
    assert!(seen_off, "ForceRestart never showed the system Off");

    // Graceful power off, then a forced one on an off system is a no-op.
    bmc.power_off(false).await.unwrap();
    wait_power(&bmc, PowerState::Off).await;
    bmc.power_off(true).await.unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);

    // Reset of a system that is off powers it on.
    bmc.reset().await.unwrap();
    wait_power(&bmc, PowerState::On).await;
    bmc.power_off(true).await.unwrap();
    wait_power(&bmc, PowerState::Off).await;

    // One-time boot override, read back. (sushy-tools keeps BootSourceOverrideEnabled
    // "Continuous" whatever is asked; target and mode are what it stores.)
    bmc.set_boot_once(BootTarget::Pxe, Some(BootMode::Legacy))
        .await
        .unwrap();
    let boot = bmc.system().await.unwrap().boot;
    assert_eq!(boot.target.as_deref(), Some("Pxe"));
    assert_eq!(boot.mode, Some(BootMode::Legacy));
    bmc.set_boot_once(BootTarget::Hdd, Some(BootMode::Uefi))
        .await
        .unwrap();
    let boot = bmc.system().await.unwrap().boot;
    assert_eq!(boot.target.as_deref(), Some("Hdd"));
    assert_eq!(boot.mode, Some(BootMode::Uefi));
    bmc.set_boot_once(BootTarget::Pxe, None).await.unwrap();
    let boot = bmc.system().await.unwrap().boot;
    assert_eq!(boot.target.as_deref(), Some("Pxe"));
    assert_eq!(
        boot.mode,
        Some(BootMode::Uefi),
        "mode untouched when not given"
    );
    bmc.close().await;

    // The system named in the address; a system that is not there.
    let bmc = connect(
        &emu.address("redfish+http", Some(SYSTEM)),
        PASSWORD,
        quick(),
    )
    .await
    .unwrap();
    assert_eq!(bmc.system().await.unwrap().id, SYSTEM);
    let err = connect(
        &emu.address("redfish+http", Some("no-such-node")),
        PASSWORD,
        quick(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(
        err.to_string()
            .contains("has no system /redfish/v1/Systems/no-such-node"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn wrong_credentials_are_a_credentials_error() {
    let emu = Emulator::start(Setup {
        basic_auth: true,
        ..Setup::default()
    });
    for (user, password) in [(USER, "wrong"), ("nobody", PASSWORD), (USER, "")] {
        let endpoint = BmcAddress::parse(&emu.address("redfish+http", None))
            .unwrap()
            .into_redfish()
            .unwrap();
        let creds = Credentials {
            username: user.into(),
            password: password.into(),
        };
        let err = Redfish::connect(&endpoint, creds, quick())
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Credentials,
            "{user}/{password}: {err:?}"
        );
        assert_eq!(
            err.one_line(),
            format!(
                "the BMC at http://127.0.0.1:{} refused the credentials (HTTP 401 Unauthorized for GET /redfish/v1/Systems)",
                emu.port
            )
        );
        assert!(!err.one_line().contains(PASSWORD));
    }
}

#[tokio::test]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn certificates_are_verified_unless_disabled() {
    let emu = Emulator::start(Setup {
        basic_auth: true,
        tls: true,
        ..Setup::default()
    });
    // redfish:// is HTTPS, verified against the webpki roots: a self-signed certificate fails.
    let err = connect(&emu.address("redfish", None), PASSWORD, quick())
        .await
        .unwrap_err();
    assert!(matches!(err, RedfishError::Certificate { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unreachable);
    let msg = err.one_line();
    assert!(
        msg.starts_with(&format!(
            "the BMC at https://127.0.0.1:{} presented a certificate that does not verify (disableCertificateVerification skips this check): invalid peer certificate",
            emu.port
        )),
        "{msg}"
    );

    // disableCertificateVerification: works, over TLS.
    let insecure = ConnectOptions {
        disable_cert_verification: true,
        ..quick()
    };
    let bmc = connect(
        &emu.address("redfish+https", None),
        PASSWORD,
        insecure.clone(),
    )
    .await
    .unwrap();
    assert_eq!(bmc.system().await.unwrap().id, SYSTEM);
    bmc.power_on().await.unwrap();
    wait_power(&bmc, PowerState::On).await;

    // Verification on, with the BMC's certificate as an extra trusted CA: works.
    let pinned = ConnectOptions {
        extra_ca_pem: emu.cert_pem.clone().map(String::into_bytes),
        ..quick()
    };
    let bmc = connect(
        &emu.address("redfish", Some(SYSTEM)),
        PASSWORD,
        pinned.clone(),
    )
    .await
    .unwrap();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    // Wrong password over TLS is still a credentials error, not a TLS one.
    let err = connect(&emu.address("redfish", None), "nope", insecure)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Credentials, "{err:?}");

    // An extra CA bundle that holds no certificate is our configuration's fault.
    let bad = ConnectOptions {
        extra_ca_pem: Some(b"not a pem".to_vec()),
        ..quick()
    };
    let err = connect(&emu.address("redfish", None), PASSWORD, bad)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err:?}");
}

#[tokio::test]
#[ignore = "needs root and sushy-tools (hack/sushy-tools.sh): run by hack/test.sh"]
async fn bmc_refusals_carry_the_bmc_message() {
    let emu = Emulator::start(Setup {
        two_systems: true,
        disable_power_off: true,
        ..Setup::default()
    });
    // Two systems and none named: the address must say which.
    let err = connect(&emu.address("redfish+http", None), "", quick())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert!(
        err.to_string()
            .contains("it has 2, so the address must name one"),
        "{err}"
    );

    // No auth file: any credentials pass. Power off is disabled by configuration: the BMC's
    // own message comes through.
    let bmc = connect(&emu.address("redfish+http", Some(SECOND)), "", quick())
        .await
        .unwrap();
    bmc.power_on().await.unwrap();
    wait_power(&bmc, PowerState::On).await;
    let err = bmc.power_off(true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    let msg = err.one_line();
    assert!(
        msg.starts_with(&format!(
            "the BMC at http://127.0.0.1:{} rejected POST /redfish/v1/Systems/{SECOND}/Actions/ComputerSystem.Reset: HTTP 400 Bad Request: Can not request power off transition.",
            emu.port
        )),
        "{msg}"
    );
    // The other system was not touched.
    let other = connect(&emu.address("redfish+http", Some(SYSTEM)), "", quick())
        .await
        .unwrap();
    assert_eq!(other.power_state().await.unwrap(), PowerState::Off);
}
