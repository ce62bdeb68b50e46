//! [`TlsSettings`] to a rustls server config: certificates and keys from PEM, the
//! toolkit's five client-auth policies, `client_allowed_sans`, versions, cipher suites
//! and key-exchange groups, with the ring provider.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme, SupportedCipherSuite};

use super::{ClientAuth, Material, TlsSettings, TlsVersion};

/// A Go cipher-suite name: `Some` for a TLS 1.2 suite rustls implements, `None` for a
/// TLS 1.3 suite (accepted and always on, as in Go, where they are not configurable).
///
/// # Errors
/// A name rustls does not implement (CBC, RSA key exchange, 3DES) or an unknown one.
pub fn cipher_suite(name: &str) -> Result<Option<SupportedCipherSuite>, String> {
    use rustls::crypto::ring::cipher_suite as s;
    Ok(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => s::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => s::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            s::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => s::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => s::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            s::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => return Ok(None),
        _ if name.starts_with("TLS_") => {
            return Err(format!(
                "{name} is not implemented by rustls (only ECDHE with AES-GCM or ChaCha20-Poly1305); \
                 accepted: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, \
                 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, \
                 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            ))
        }
        _ => return Err(format!("unknown cipher suite {name:?}")),
    }))
}

/// A Go curve name as a key-exchange group.
///
/// # Errors
/// CurveP521 (not in ring) or an unknown name.
pub fn curve(name: &str) -> Result<&'static dyn SupportedKxGroup, String> {
    use rustls::crypto::ring::kx_group;
    match name {
        "X25519" => Ok(kx_group::X25519),
        "CurveP256" => Ok(kx_group::SECP256R1),
        "CurveP384" => Ok(kx_group::SECP384R1),
        "CurveP521" => {
            Err("CurveP521 is not implemented by rustls with ring; accepted: X25519, CurveP256, CurveP384".into())
        }
        _ => Err(format!("{name:?} is not one of X25519, CurveP256, CurveP384")),
    }
}

fn read(m: &Material, what: &str) -> Result<Vec<u8>, String> {
    match m {
        Material::File(p) => super::read_file(p).map_err(|e| format!("{what} {}: cannot read it: {e}", p.display())),
        Material::Inline(text) => Ok(text.clone().into_bytes()),
    }
}

fn name(m: &Material, what: &str) -> String {
    match m {
        Material::File(p) => format!("{what} {}", p.display()),
        Material::Inline(_) => format!("{what} (inline)"),
    }
}

fn certificates(m: &Material, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(m, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", name(m, what)))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM CERTIFICATE block in it", name(m, what)));
    }
    Ok(certs)
}

/// Builds the rustls config: reads the certificate, key and client CA now.
///
/// # Errors
/// A file cannot be read, holds no certificate or key, the key does not match the
/// certificate, or the settings leave no usable protocol version or suite.
pub fn server_config(t: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let certs = certificates(&t.cert, "tls_server_config.cert_file")?;
    let key_pem = read(&t.key, "tls_server_config.key_file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}",
            name(&t.key, "tls_server_config.key_file")
        )
    })?;

    let mut provider = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let tls13 = provider.cipher_suites.iter().copied().filter(|s| s.tls13().is_some());
        provider.cipher_suites = tls13.chain(t.cipher_suites.iter().copied()).collect();
    }
    if !t.curve_preferences.is_empty() {
        provider.kx_groups = t.curve_preferences.clone();
    }
    let provider = Arc::new(provider);

    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (t.min_version..=t.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();

    let mut verifier: Arc<dyn ClientCertVerifier> = match t.client_auth {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => Arc::new(AnyClientCert {
            mandatory: t.client_auth.mandatory(),
            provider: Arc::clone(&provider),
        }),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = t
                .client_ca
                .as_ref()
                .ok_or("tls_server_config.client_ca_file: missing")?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates(ca, "tls_server_config.client_ca_file")?);
            if added == 0 {
                return Err(format!(
                    "{}: no certificate in it is usable as a CA",
                    name(ca, "tls_server_config.client_ca_file")
                ));
            }
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let builder = if t.client_auth.mandatory() {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            builder
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
    };
    if let Some(allowed) = &t.client_allowed_sans {
        verifier = Arc::new(AllowedSans {
            inner: verifier,
            allowed: allowed.clone(),
        });
    }

    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| {
            format!("tls_server_config: min_version, max_version and cipher_suites leave nothing to offer: {e}")
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {}: {e}",
                name(&t.cert, "tls_server_config.cert_file"),
                name(&t.key, "key_file")
            )
        })?;
    // HTTP/1.1 only: the connection limits and eviction work per connection, and a
    // scrape is one request at a time.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.ignore_client_order = t.prefer_server_cipher_suites;
    Ok(Arc::new(cfg))
}

/// `RequestClientCert` and `RequireAnyClientCert`: a certificate is asked for (and
/// required by the second), and the client must prove it holds its key, but the
/// certificate is not checked against any CA: Go's semantics, insecure by design.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after the policy's own checks, the client certificate must
/// name one of the allowed values as a DNS, IP, e-mail or URI alternative name.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let names = subject_alt_names(end_entity).unwrap_or_default();
        if names.iter().any(|n| self.allowed.contains(n)) {
            return Ok(verified);
        }
        log::debug!(
            "refused a client certificate: its alternative names {names:?} include none of client_allowed_sans"
        );
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The DNS, e-mail, URI and IP subject alternative names of a DER certificate, as Go
/// renders them (`DNSNames`, `EmailAddresses`, `URIs`, `IPAddresses`); `None` when the
/// certificate does not parse or its extension is malformed.
pub fn subject_alt_names(cert: &[u8]) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let Some(san) = cert.subject_alternative_name().ok()? else {
        return Some(Vec::new());
    };
    let names = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some((*s).to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b).ok().map(|b| Ipv4Addr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*b).ok().map(|b| Ipv6Addr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_four_kinds_of_alternative_name_are_read_as_go_renders_them() {
        // Made by openssl; see tests/data/README.md.
        let der = include_bytes!("../../tests/data/x509-san-all-kinds.der");
        let names = subject_alt_names(der).unwrap();
        assert_eq!(
            names,
            [
                "prometheus.test",
                "10.0.0.1",
                "fd00::1",
                "prom@example.test",
                "spiffe://cluster.local/ns/monitoring/sa/prometheus"
            ]
        );
        // Every truncation of it is refused or read, never a panic.
        for cut in 0..der.len() {
            let _ = subject_alt_names(&der[..cut]);
        }
    }

    #[test]
    fn bad_der_is_no_name_and_no_panic() {
        // A SEQUENCE claiming 0x10 bytes with 2 present, long forms, a high tag number.
        for bad in [
            &[0x30, 0x10, 0x01, 0x02][..],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x1f, 0x01, 0x00],
            &[],
            &[0x30],
        ] {
            assert_eq!(subject_alt_names(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_cipher_names_map_to_rustls_or_say_why_not() {
        assert!(cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").unwrap().is_some());
        assert!(cipher_suite("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305").unwrap().is_some());
        assert!(cipher_suite("TLS_AES_256_GCM_SHA384").unwrap().is_none());
        assert!(cipher_suite("TLS_RSA_WITH_AES_128_GCM_SHA256")
            .unwrap_err()
            .contains("not implemented"));
        assert!(cipher_suite("AES").unwrap_err().contains("unknown"));
    }
}
