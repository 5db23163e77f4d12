//! Certificates made at test time (rcgen, ECDSA P-256) and rustls clients
//! that dial herald's TLS listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A certificate authority made for one test.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub(crate) pem: String,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub(crate) struct Pair {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// What a client certificate names its holder by.
pub(crate) enum ClientName<'a> {
    Uri(&'a str),
    Dns(&'a str),
    CommonName(&'a str),
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    /// A server certificate for 127.0.0.1 and localhost; `label` goes in
    /// the subject's organisation so tests can tell two apart.
    pub(crate) fn server(&self, label: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params
            .distinguished_name
            .push(DnType::OrganizationName, label);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate naming its holder as `name` says.
    pub(crate) fn client(&self, name: ClientName<'_>) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        match name {
            ClientName::Uri(uri) => {
                params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
                params
                    .distinguished_name
                    .push(DnType::CommonName, "uri-holder");
            }
            ClientName::Dns(dns) => {
                params.subject_alt_names = vec![SanType::DnsName(dns.try_into().expect("dns"))];
                params
                    .distinguished_name
                    .push(DnType::CommonName, "dns-holder");
            }
            ClientName::CommonName(cn) => {
                params.distinguished_name.push(DnType::CommonName, cn);
            }
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Pair {
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    // Write-then-rename, as a certificate manager does.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("cannot write {tmp:?}: {e}"));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("cannot rename to {path:?}: {e}"));
    path
}

/// How a test client dials.
pub(crate) struct Dial<'a> {
    pub(crate) ca_pem: &'a str,
    pub(crate) versions: Vec<&'static SupportedProtocolVersion>,
    pub(crate) kx_groups: Vec<&'static dyn SupportedKxGroup>,
    pub(crate) client_cert: Option<&'a Pair>,
}

impl<'a> Dial<'a> {
    /// TLS 1.3, post-quantum hybrid first, no client certificate.
    pub(crate) fn new(ca_pem: &'a str) -> Self {
        Self {
            ca_pem,
            versions: vec![&rustls::version::TLS13],
            kx_groups: vec![
                aws_lc_rs::kx_group::X25519MLKEM768,
                aws_lc_rs::kx_group::X25519,
            ],
            client_cert: None,
        }
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        let provider = CryptoProvider {
            kx_groups: self.kx_groups.clone(),
            ..aws_lc_rs::default_provider()
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&self.versions)
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match self.client_cert {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let chain = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificate PEM");
                let key =
                    PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("client key PEM");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
        };
        Arc::new(config)
    }

    /// A TLS connection to `addr` (`127.0.0.1:PORT`), handshake done.
    pub(crate) async fn connect(&self, addr: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = TlsConnector::from(self.config());
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            connector.connect(name, tcp),
        )
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
    }
}

/// The organisation name of the certificate a TLS server presented.
pub(crate) fn served_label(stream: &TlsStream<TcpStream>) -> String {
    let (_, connection) = stream.get_ref();
    let cert = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate");
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).expect("X.509");
    let label = parsed
        .subject()
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    label
}
