//! The controller's internal CA: created at first start, persisted by the caller (the store),
//! pinned by agents and netboot through its certificate's SHA-256 fingerprint. It signs the
//! agent API's server certificate and each agent's short-lived client certificate, which names
//! exactly one host in a SAN URI ([`HostId::uri`]). Also mints the one-time boot tokens.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::host::HostId;

/// How long a generated CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate from [`Ca::server_config`] is valid (it is re-made at start).
pub const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start this long before "now", for clocks a little behind ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Largest CSR accepted, PEM.
pub const MAX_CSR_PEM: usize = 16 * 1024;

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating a key or certificate")]
    Generate(#[source] rcgen::Error),
    #[error("the CA certificate PEM holds no certificate")]
    NoCaCert,
    #[error("the CA certificate cannot be read")]
    BadCaCert(#[source] rcgen::Error),
    #[error("the CA certificate is not a CA (no basicConstraints cA=true)")]
    NotACa,
    #[error("the CA key cannot be read")]
    BadKey(#[source] rcgen::Error),
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
    #[error("the certificate signing request is larger than {MAX_CSR_PEM} bytes")]
    CsrTooLarge,
    #[error(
        "the certificate signing request is not valid (bad PEM, bad signature, or unsupported key)"
    )]
    BadCsr(#[source] rcgen::Error),
    #[error("the certificate cannot be read")]
    BadPeerCert(#[source] rcgen::Error),
    #[error(
        "the certificate names no host (no {} SAN URI)",
        crate::host::HOST_URI_PREFIX
    )]
    NoHostIdentity,
    #[error("the certificate names more than one host")]
    SeveralHosts,
    #[error("the certificate's host")]
    BadHostIdentity(#[source] crate::host::HostIdError),
    #[error("{0:?} is not a DNS name or IP address for the server certificate")]
    BadServerName(String),
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("building the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the system's random number generator failed")]
    Random,
}

/// The controller's CA: certificate and private key.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
    /// The same CA as rcgen's signer (rcgen signs with a `Certificate`'s parameters; its own
    /// DER, re-signed on load, is never published).
    issuer: rcgen::Certificate,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A signed client certificate.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub pem: String,
    pub der: CertificateDer<'static>,
    /// Seconds since the Unix epoch.
    pub not_after_unix: u64,
}

/// A CSR whose signature verified; its subject and extensions are ignored (the CA decides what
/// the certificate says), only the public key is used.
pub struct Csr(CertificateSigningRequestParams);

impl std::fmt::Debug for Csr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csr")
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CaError> {
    let mut b = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| CaError::Random)?;
    Ok(b)
}

fn serial() -> Result<SerialNumber, CaError> {
    let mut b = random_bytes::<16>()?;
    b[0] &= 0x7f; // positive
    Ok(SerialNumber::from_slice(&b))
}

fn to_time(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `sha256:<64 lowercase hex>` of DER bytes: the pin format of `ferrox.ca=`.
pub fn fingerprint_of(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A one-time boot token: 32 random bytes, base64url without padding (43 characters that the
/// kernel command line and the agent's parser take as they are).
pub fn mint_token() -> Result<String, CaError> {
    let b = random_bytes::<32>()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// An enrollment session: 16 random bytes, lowercase hex ([`crate::HostId::with_session`]).
pub fn mint_session() -> Result<String, CaError> {
    let b = random_bytes::<16>()?;
    Ok(b.iter().map(|b| format!("{b:02x}")).collect())
}

/// The crypto provider everything here uses (ring, as the rest of the workspace).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Ca {
    /// A new CA: P-256 key, valid [`CA_LIFETIME`], may sign end-entity certificates only.
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let id = random_bytes::<4>()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ferrox");
        dn.push(
            DnType::CommonName,
            format!(
                "Ferrox agent CA {:02x}{:02x}{:02x}{:02x}",
                id[0], id[1], id[2], id[3]
            ),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = to_time(now - CLOCK_SKEW);
        params.not_after = to_time(now + CA_LIFETIME);
        params.serial_number = Some(serial()?);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
            issuer: cert,
        })
    }

    /// The CA as persisted by [`Ca::to_pem`]. The key must belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| CaError::NoCaCert)?;
        let key = KeyPair::from_pem(key_pem).map_err(CaError::BadKey)?;
        let params = CertificateParams::from_ca_cert_der(&cert_der).map_err(CaError::BadCaCert)?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(CaError::NotACa);
        }
        // The certificate's SubjectPublicKeyInfo must be the key's.
        let spki = key.public_key_der();
        if !cert_der.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(CaError::KeyMismatch);
        }
        let issuer = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(Self {
            cert_pem: pem_of(&cert_der),
            cert_der,
            key,
            issuer,
        })
    }

    /// `(certificate PEM, private key PEM)` for the store. The key is secret.
    pub fn to_pem(&self) -> (String, String) {
        (self.cert_pem.clone(), self.key.serialize_pem())
    }

    /// The CA certificate, PEM (public).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// `sha256:<64 lowercase hex>` of the CA certificate's DER: what `ferrox.ca=` carries.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.cert_der)
    }

    /// TLS for the agent API: a fresh server certificate for `names` (DNS names or IP
    /// addresses; agents usually reach the controller by IP) signed by this CA, chain
    /// `[server, CA]` (agents pin the last one), and client certificates verified against
    /// this CA only — optional at the TLS layer, because enrollment has none yet; every other
    /// route demands one.
    pub fn server_config(&self, names: &[String]) -> Result<ServerConfig, CaError> {
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ferrox");
        dn.push(DnType::CommonName, "ferrox agent API");
        params.distinguished_name = dn;
        for n in names {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    rustls::pki_types::DnsName::try_from(n.as_str())
                        .map_err(|_| CaError::BadServerName(n.clone()))?;
                    SanType::DnsName(
                        n.clone()
                            .try_into()
                            .map_err(|_| CaError::BadServerName(n.clone()))?,
                    )
                }
            };
            params.subject_alt_names.push(san);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = to_time(now - CLOCK_SKEW);
        params.not_after = to_time(now + SERVER_CERT_LIFETIME);
        params.serial_number = Some(serial()?);
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(CaError::Generate)?;

        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der.clone()).map_err(CaError::Tls)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(CaError::Verifier)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(CaError::Tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![cert.der().clone(), self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(CaError::Tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Reads and verifies a CSR (PEM). Only its public key will be used.
    pub fn parse_csr(csr_pem: &str) -> Result<Csr, CaError> {
        if csr_pem.len() > MAX_CSR_PEM {
            return Err(CaError::CsrTooLarge);
        }
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map(Csr)
            .map_err(CaError::BadCsr)
    }

    /// A client certificate for the CSR's key, bound to `host`, valid from a little before now
    /// for `lifetime`.
    pub fn sign_client(
        &self,
        csr_pem: &str,
        host: &HostId,
        lifetime: Duration,
    ) -> Result<ClientCert, CaError> {
        let now = SystemTime::now();
        self.sign_csr(
            Self::parse_csr(csr_pem)?,
            host,
            now - CLOCK_SKEW,
            now + lifetime,
        )
    }

    /// A client certificate for `csr`'s key bound to `host`, valid `not_before..not_after`
    /// (tests use it to make expired certificates). The subject is the host, the only SAN is
    /// [`HostId::uri`], the extended key usage is client authentication only.
    pub fn sign_csr(
        &self,
        csr: Csr,
        host: &HostId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<ClientCert, CaError> {
        let mut csr = csr.0;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ferrox agents");
        dn.push(DnType::CommonName, host.to_string());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            host.uri().try_into().map_err(CaError::Generate)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = to_time(not_before);
        params.not_after = to_time(not_after);
        params.serial_number = Some(serial()?);
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer, &self.key)
            .map_err(CaError::Generate)?;
        Ok(ClientCert {
            pem: cert.pem(),
            der: cert.der().clone(),
            not_after_unix: unix(not_after),
        })
    }
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// The host a client certificate is bound to. Only meaningful for a certificate the TLS layer
/// has verified against the CA (the peer's end-entity certificate).
pub fn host_from_cert(der: &CertificateDer<'_>) -> Result<HostId, CaError> {
    let params = CertificateParams::from_ca_cert_der(der).map_err(CaError::BadPeerCert)?;
    let mut hosts = params.subject_alt_names.iter().filter_map(|san| match san {
        SanType::URI(u) if u.as_str().starts_with(crate::host::HOST_URI_PREFIX) => Some(u.as_str()),
        _ => None,
    });
    let first = hosts.next().ok_or(CaError::NoHostIdentity)?;
    if hosts.next().is_some() {
        return Err(CaError::SeveralHosts);
    }
    HostId::from_uri(first).map_err(CaError::BadHostIdentity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        (key, csr.pem().unwrap())
    }

    fn verify_client(ca: &Ca, der: &CertificateDer<'static>) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        v.verify_client_cert(der, &[], rustls::pki_types::UnixTime::now())
            .map(drop)
    }

    #[test]
    fn fingerprint_is_the_pin_format_of_the_cert_der() {
        let ca = Ca::generate().unwrap();
        let fp = ca.fingerprint();
        let hex = fp.strip_prefix("sha256:").unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(fp, fingerprint_of(ca.cert_der()));
        // What the agent's command-line parser accepts.
        assert!(fp.len() == 71);
        assert_ne!(fp, Ca::generate().unwrap().fingerprint());
    }

    #[test]
    fn persisted_ca_signs_certificates_the_original_verifies() {
        let ca = Ca::generate().unwrap();
        let (cert_pem, key_pem) = ca.to_pem();
        let again = Ca::from_pem(&cert_pem, &key_pem).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert_eq!(again.cert_der(), ca.cert_der());
        let host = HostId::new("metal3", "worker-0").unwrap();
        let (_k, csr) = csr();
        let c = again
            .sign_client(&csr, &host, Duration::from_secs(3600))
            .unwrap();
        verify_client(&ca, &c.der).unwrap();
        assert_eq!(host_from_cert(&c.der).unwrap(), host);
    }

    #[test]
    fn from_pem_refuses_mismatched_or_broken_input() {
        let a = Ca::generate().unwrap();
        let b = Ca::generate().unwrap();
        let (a_cert, _) = a.to_pem();
        let (_, b_key) = b.to_pem();
        assert!(matches!(
            Ca::from_pem(&a_cert, &b_key),
            Err(CaError::KeyMismatch)
        ));
        assert!(matches!(
            Ca::from_pem("garbage", &b_key),
            Err(CaError::NoCaCert)
        ));
        assert!(matches!(
            Ca::from_pem(&a_cert, "garbage"),
            Err(CaError::BadKey(_))
        ));
        // A leaf is not a CA.
        let (_k, csr) = csr();
        let leaf = a
            .sign_client(
                &csr,
                &HostId::new("a", "b").unwrap(),
                Duration::from_secs(60),
            )
            .unwrap();
        let (_, a_key) = a.to_pem();
        assert!(matches!(
            Ca::from_pem(&leaf.pem, &a_key),
            Err(CaError::NotACa)
        ));
    }

    #[test]
    fn client_certs_from_another_ca_or_expired_do_not_verify() {
        let ca = Ca::generate().unwrap();
        let other = Ca::generate().unwrap();
        let host = HostId::new("ns", "h").unwrap();
        let (_k, csr) = csr();
        let foreign = other
            .sign_client(&csr, &host, Duration::from_secs(3600))
            .unwrap();
        assert!(verify_client(&ca, &foreign.der).is_err());
        let now = SystemTime::now();
        let expired = ca
            .sign_csr(
                Ca::parse_csr(&csr).unwrap(),
                &host,
                now - Duration::from_secs(7200),
                now - Duration::from_secs(3600),
            )
            .unwrap();
        let e = verify_client(&ca, &expired.der).unwrap_err();
        assert!(format!("{e:?}").contains("Expired"), "{e:?}");
    }

    #[test]
    fn csr_must_be_well_formed_and_bounded() {
        assert!(matches!(Ca::parse_csr("nope"), Err(CaError::BadCsr(_))));
        let (_k, csr) = csr();
        // A flipped byte inside the base64 body breaks the signature or the structure.
        let mut lines: Vec<String> = csr.lines().map(str::to_string).collect();
        let mid = &mut lines[2];
        let c = if mid.starts_with('A') { "B" } else { "A" };
        mid.replace_range(0..1, c);
        assert!(Ca::parse_csr(&lines.join("\n")).is_err());
        assert!(matches!(
            Ca::parse_csr(&"x".repeat(MAX_CSR_PEM + 1)),
            Err(CaError::CsrTooLarge)
        ));
    }

    #[test]
    fn tokens_are_command_line_safe_and_distinct() {
        let a = mint_token().unwrap();
        let b = mint_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn host_identity_comes_only_from_the_ferrox_uri() {
        let ca = Ca::generate().unwrap();
        // The server certificate has DNS/IP SANs, no host URI.
        let cfg = ca.server_config(&["127.0.0.1".into(), "ctl.example".into()]);
        assert!(cfg.is_ok());
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["host.example".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::URI("urn:other:ns/x".try_into().unwrap()));
        let c = p.signed_by(&key, &ca.issuer, &ca.key).unwrap();
        assert!(matches!(
            host_from_cert(c.der()),
            Err(CaError::NoHostIdentity)
        ));
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        for h in ["urn:ferrox:host:a/b", "urn:ferrox:host:c/d"] {
            p.subject_alt_names
                .push(SanType::URI(h.try_into().unwrap()));
        }
        let c = p.signed_by(&key, &ca.issuer, &ca.key).unwrap();
        assert!(matches!(
            host_from_cert(c.der()),
            Err(CaError::SeveralHosts)
        ));
        assert!(ca.server_config(&["bad name!".into()]).is_err());
    }
}
