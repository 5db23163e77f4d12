//! TLS on the public listener: versions and key exchange, certificate hot
//! reload, mutual TLS and certificate identities, the TLS handshake timeout.
//! Certificates are made per test (ECDSA P-256, rcgen).

use std::path::PathBuf;
use std::time::Duration;

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::NamedGroup;
use serde_json::json;
use tokio::io::AsyncReadExt as _;

use crate::support::tls::{served_label, write, ClientName, Dial, Pair, TestCa};
use crate::support::{token, unique_temp_dir, Client, Server};

/// A TLS server's files, in their own directory.
struct TlsDir {
    dir: PathBuf,
    ca: TestCa,
}

impl TlsDir {
    fn new() -> Self {
        Self {
            dir: unique_temp_dir(),
            ca: TestCa::new("herald test CA"),
        }
    }

    fn install(&self, pair: &Pair) {
        write(&self.dir, "server.pem", &pair.cert_pem);
        write(&self.dir, "server.key", &pair.key_pem);
    }

    /// The `[http_server.tls]` table serving `server.pem`/`server.key`.
    fn config(&self, extra: &str) -> String {
        format!(
            "[http_server.tls]\nenabled = true\ncert_pem_file = {:?}\nkey_pem_file = {:?}\n{extra}\n",
            self.dir.join("server.pem"),
            self.dir.join("server.key"),
        )
    }

    fn client_ca(&self, auth: &str) -> String {
        let path = write(&self.dir, "clients-ca.pem", &self.ca.pem);
        format!("client_ca_pem_file = {path:?}\nclient_auth = {auth:?}\n")
    }
}

impl Drop for TlsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn addr(server: &Server) -> String {
    let url = server.ws_url();
    assert!(
        url.starts_with("wss://"),
        "expected a wss:// url, got {url}"
    );
    url.trim_start_matches("wss://")
        .split('/')
        .next()
        .expect("authority")
        .to_owned()
}

/// Connects over `stream` with a token for `user` and checks the reply.
async fn connect_over(
    server: &Server,
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    token: &str,
) -> Client {
    let mut client = Client::over_tls(server.ws_url(), stream).await;
    let reply = client.connect(token).await;
    assert!(
        reply["connect"]["client"].is_string(),
        "connect over TLS failed: {reply}"
    );
    client
}

#[tokio::test]
async fn tls13_with_post_quantum_key_exchange_and_x25519_fallback() {
    let tls = TlsDir::new();
    tls.install(&tls.ca.server("first"));
    let server = Server::start(&tls.config("")).await;
    let addr = addr(&server);

    let stream = Dial::new(&tls.ca.pem)
        .connect(&addr)
        .await
        .expect("TLS 1.3 handshake");
    {
        let (_, connection) = stream.get_ref();
        assert_eq!(
            connection.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(
            connection.negotiated_key_exchange_group().map(|g| g.name()),
            Some(NamedGroup::X25519MLKEM768)
        );
        assert_eq!(
            connection.alpn_protocol(),
            None,
            "the client offered no ALPN"
        );
    }
    // The client protocol works end to end over it.
    let mut client = connect_over(&server, stream, &token("alice")).await;
    let reply = client
        .call(
            2,
            &json!({ "id": 2, "presence_stats": { "channel": "x" } }).to_string(),
        )
        .await;
    assert!(
        reply.get("error").is_some() || reply.get("presence_stats").is_some(),
        "{reply}"
    );

    // A client without the hybrid group still gets in, on X25519.
    let mut classic = Dial::new(&tls.ca.pem);
    classic.kx_groups = vec![kx_group::X25519];
    let stream = classic.connect(&addr).await.expect("X25519 handshake");
    assert_eq!(
        stream
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|g| g.name()),
        Some(NamedGroup::X25519)
    );
}

#[tokio::test]
async fn tls12_client_is_refused_by_default_and_allowed_when_configured() {
    let tls = TlsDir::new();
    tls.install(&tls.ca.server("first"));
    let server = Server::start(&tls.config("")).await;
    let mut old = Dial::new(&tls.ca.pem);
    old.versions = vec![&rustls::version::TLS12];
    old.kx_groups = vec![kx_group::X25519];
    let refused = old.connect(&addr(&server)).await;
    assert!(
        refused.is_err(),
        "a TLS 1.2-only client got in under min_version 1.3"
    );

    let relaxed = Server::start(&tls.config("min_version = \"1.2\"")).await;
    let stream = old
        .connect(&addr(&relaxed))
        .await
        .expect("TLS 1.2 with min_version 1.2");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    connect_over(&relaxed, stream, &token("bob")).await;
}

/// Dials until the served certificate's label is `want`, for at most 10 s.
async fn wait_for_label(dial: &Dial<'_>, addr: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while tokio::time::Instant::now() < deadline {
        let stream = dial.connect(addr).await.expect("handshake during reload");
        seen = served_label(&stream);
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the server still presents {seen:?}, not {want:?}");
}

#[tokio::test]
async fn certificate_files_reload_without_restart_and_a_mismatched_key_is_refused() {
    let tls = TlsDir::new();
    tls.install(&tls.ca.server("first"));
    let server = Server::start_with_internal_port(&tls.config("")).await;
    let addr = addr(&server);
    let dial = Dial::new(&tls.ca.pem);
    let stream = dial.connect(&addr).await.expect("handshake");
    assert_eq!(served_label(&stream), "first");
    let mut connected = connect_over(&server, stream, &token("carol")).await;

    // A renewed pair: new handshakes get it; the open connection stays.
    tls.install(&tls.ca.server("second"));
    wait_for_label(&dial, &addr, "second").await;
    assert!(
        server
            .metric("herald_tls_certificate_reloads_total{result=\"loaded\"}")
            .await
            >= 1.0
    );
    let reply = connected
        .call(
            5,
            &json!({ "id": 5, "presence_stats": { "channel": "x" } }).to_string(),
        )
        .await;
    assert_eq!(
        reply["id"], 5,
        "the connection made before the reload still answers: {reply}"
    );

    // A certificate whose key does not match: refused, "second" keeps serving.
    let third = tls.ca.server("third");
    let stranger = tls.ca.server("stranger");
    write(&tls.dir, "server.pem", &third.cert_pem);
    write(&tls.dir, "server.key", &stranger.key_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server
        .metric("herald_tls_certificate_reloads_total{result=\"refused\"}")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mismatched pair was never refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stream = dial
        .connect(&addr)
        .await
        .expect("handshake after a refused reload");
    assert_eq!(served_label(&stream), "second");
    let log = server.stderr_tail();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("does not match")),
        "no ERROR line about the mismatched key in:\n{log}"
    );
    assert!(
        !log.contains("PRIVATE KEY"),
        "key material in the log:\n{log}"
    );

    // SIGHUP reloads at once.
    tls.install(&tls.ca.server("fourth"));
    server.signal("HUP");
    wait_for_label(&dial, &addr, "fourth").await;
    assert!(
        server.stderr_tail().contains("SIGHUP"),
        "SIGHUP was not seen"
    );
}

#[tokio::test]
async fn mtls_required_refuses_anonymous_clients_and_names_users_by_certificate() {
    let tls = TlsDir::new();
    tls.install(&tls.ca.server("first"));
    let config = tls.config(&tls.client_ca("required"))
        + "[client]\ntls_identity_as_user = true\n\
           [channel.without_namespace]\npresence = true\nallow_subscribe_for_client = true\n\
           allow_presence_for_subscriber = true\n";
    let server = Server::start(&config).await;
    let addr = addr(&server);

    // No certificate: the handshake (or the first read after it) fails.
    let anonymous = Dial::new(&tls.ca.pem);
    match anonymous.connect(&addr).await {
        Err(_) => {}
        Ok(mut stream) => {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Err(_)) | Ok(Ok(0))),
                "a client without a certificate was served: {read:?}"
            );
        }
    }
    // A certificate from another CA: refused too.
    let foreign = TestCa::new("someone else").client(ClientName::Uri("spiffe://evil/x"));
    let mut dial = Dial::new(&tls.ca.pem);
    dial.client_cert = Some(&foreign);
    if let Ok(mut stream) = dial.connect(&addr).await {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Err(_)) | Ok(Ok(0))),
            "a foreign certificate was served"
        );
    }

    // Signed by the CA: in, and with no token the certificate names the user.
    for (name, want) in [
        (
            ClientName::Uri("spiffe://herald.test/svc/billing"),
            "spiffe://herald.test/svc/billing",
        ),
        (
            ClientName::Dns("worker-7.herald.test"),
            "worker-7.herald.test",
        ),
        (ClientName::CommonName("device-42"), "device-42"),
    ] {
        let pair = tls.ca.client(name);
        let mut dial = Dial::new(&tls.ca.pem);
        dial.client_cert = Some(&pair);
        let stream = dial.connect(&addr).await.expect("mTLS handshake");
        let mut client = connect_over(&server, stream, "").await;
        let channel = format!("room-{}", want.len());
        let reply = client
            .call(
                2,
                &json!({ "id": 2, "subscribe": { "channel": channel } }).to_string(),
            )
            .await;
        assert!(reply["subscribe"].is_object(), "{reply}");
        let reply = client
            .call(
                3,
                &json!({ "id": 3, "presence": { "channel": channel } }).to_string(),
            )
            .await;
        let users: Vec<&str> = reply["presence"]["presence"]
            .as_object()
            .unwrap_or_else(|| panic!("no presence in {reply}"))
            .values()
            .filter_map(|info| info["user"].as_str())
            .collect();
        assert_eq!(users, vec![want], "presence of {channel}: {reply}");
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped() {
    let tls = TlsDir::new();
    tls.install(&tls.ca.server("first"));
    let server = Server::start(&tls.config("")).await;
    let mut tcp = tokio::net::TcpStream::connect(addr(&server))
        .await
        .expect("TCP connect");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    // Nothing sent: the server gives up on the handshake after 3 s.
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server kept a silent TLS client for 10 s: {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "dropped too early: {waited:?}"
    );
}
