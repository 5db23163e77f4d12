//! A CA and a server certificate for 127.0.0.1, made at test time.

use std::fs;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::server::TempDir;

/// PEM texts: a CA certificate and a server certificate (SANs 127.0.0.1 and
/// localhost) with its key, signed by that CA.
pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl TlsMaterial {
    pub(crate) fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "herald test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca).expect("server certificate");
        Self {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The material as files redis-server reads.
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    _dir: TempDir,
}

impl TlsFiles {
    pub(crate) fn write(material: &TlsMaterial, dir: TempDir) -> Self {
        let path = |name: &str| dir.path().join(name);
        let (ca, cert, key) = (path("ca.pem"), path("server.pem"), path("server.key"));
        for (file, text) in [
            (&ca, &material.ca_pem),
            (&cert, &material.cert_pem),
            (&key, &material.key_pem),
        ] {
            fs::write(file, text).unwrap_or_else(|e| panic!("cannot write {file:?}: {e}"));
        }
        Self {
            ca,
            cert,
            key,
            _dir: dir,
        }
    }
}
