//! The `herald` binary as an operator and a test harness use it: exit codes,
//! what it prints, and a node started from a generated config accepting a
//! token minted by `gentoken`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// `herald` with no `HERALD_*` variable inherited from the test's environment.
fn herald() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

fn run(args: &[&str]) -> Output {
    herald().args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("herald-cli-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn genconfig(dir: &TempDir) -> PathBuf {
    let path = dir.file("herald.toml");
    let output = run(&["genconfig", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    path
}

#[test]
fn genconfig_production_profile_and_the_git_warning() {
    let dir = TempDir::new();
    let path = dir.file("prod.toml");
    let output = run(&[
        "genconfig",
        "--profile",
        "production",
        path.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Not in a git work tree: nothing to warn about.
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("connection_limit_per_ip = 1000"), "{text}");
    assert!(text.contains("command_rate_limit = 200"), "{text}");
    let check = run(&["checkconfig", "--config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));

    // In a work tree that does not ignore the file: warned (the file is
    // still written; it is the developer's to move or ignore).
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(&dir.0)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("git is installed");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "--quiet"]);
    let exposed = dir.file("herald.toml");
    let output = run(&["genconfig", exposed.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("does not ignore it") && stderr(&output).contains(".gitignore"),
        "{}",
        stderr(&output)
    );
    std::fs::write(dir.file(".gitignore"), "*.toml\n").unwrap();
    let ignored = dir.file("dev.toml");
    let output = run(&["genconfig", ignored.to_str().unwrap()]);
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    // The repository's own .gitignore ignores the README tour's herald.toml.
    let ours = include_str!("../../../.gitignore");
    assert!(ours.lines().any(|l| l.trim() == "herald.toml"), "{ours}");
}

#[test]
fn config_and_token_commands_round_trip() {
    let dir = TempDir::new();
    let config = genconfig(&dir);
    let config = config.to_str().unwrap();

    let again = run(&["genconfig", config]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let check = run(&["checkconfig", "--config", config]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert_eq!(stdout(&check).trim(), "config ok");

    let minted = run(&[
        "gentoken", "--config", config, "--user", "alice", "--ttl", "10m",
    ]);
    assert!(minted.status.success(), "{}", stderr(&minted));
    let token = stdout(&minted).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let checked = run(&["checktoken", "--config", config, &token]);
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    let claims: serde_json::Value = serde_json::from_str(&stdout(&checked)).unwrap();
    assert_eq!(claims["user"], "alice");

    let minted = run(&[
        "gentoken",
        "--config",
        config,
        "--user",
        "bob",
        "--channel",
        "$room",
    ]);
    let sub_token = stdout(&minted).trim().to_owned();
    let checked = run(&["checktoken", "--config", config, &sub_token]);
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    let claims: serde_json::Value = serde_json::from_str(&stdout(&checked)).unwrap();
    assert_eq!(claims["channel"], "$room");
    assert_eq!(claims["user"], "bob");

    // Tampered signature: invalid, exit 1, the reason on stdout.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let checked = run(&["checktoken", "--config", config, &forged]);
    assert_eq!(checked.status.code(), Some(1));
    assert!(
        stdout(&checked).contains("invalid token"),
        "{}",
        stdout(&checked)
    );

    // A token minted with another config's secret does not verify here.
    let other_dir = TempDir::new();
    let other = genconfig(&other_dir);
    let foreign = run(&[
        "gentoken",
        "--config",
        other.to_str().unwrap(),
        "--user",
        "eve",
    ]);
    let checked = run(&["checktoken", "--config", config, stdout(&foreign).trim()]);
    assert_eq!(checked.status.code(), Some(1));
}

#[test]
fn config_errors_exit_2_naming_the_key() {
    let dir = TempDir::new();
    let bad = dir.file("bad.toml");
    std::fs::write(&bad, "[client]\npong_timout = \"8s\"\n").unwrap();
    let output = run(&["checkconfig", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("client.pong_timout: unknown key"),
        "{}",
        stderr(&output)
    );

    // The config path and overrides may come from the environment.
    let config = genconfig(&dir);
    let output = herald()
        .arg("checkconfig")
        .env("HERALD_CONFIG", &config)
        .env("HERALD_HTTP_SERVER__PORT", "eighty")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("http_server.port: "),
        "{}",
        stderr(&output)
    );

    let output = run(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));

    let output = run(&["checkconfig"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "missing --config is a usage error"
    );
}

#[test]
fn genkey_prints_base64_of_32_bytes() {
    use base64::Engine as _;
    for kind in ["bus", "history"] {
        let output = run(&["genkey", "--kind", kind]);
        assert!(output.status.success());
        let key = base64::engine::general_purpose::STANDARD
            .decode(stdout(&output).trim())
            .unwrap();
        assert_eq!(key.len(), 32);
    }
    assert_eq!(run(&["genkey", "--kind", "disk"]).status.code(), Some(2));
}

/// `herald genconfig | head -1`: a reader that closes its end early gets
/// what it read, and herald exits as usual instead of panicking (101) on
/// the broken pipe.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let mut child = herald()
        .args(["genconfig"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before herald writes (it starts in milliseconds;
    // the whole config is one write, so it meets a closed pipe either way
    // or fits the pipe: both must end with status 0).
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

/// A running `herald serve`, killed on drop.
struct Node {
    child: Child,
    ws_url: String,
    api_addr: String,
}

impl Node {
    fn start(config: &Path) -> Self {
        Self::start_with_internal_port(config, 0)
    }

    fn start_with_internal_port(config: &Path, internal_port: u16) -> Self {
        let mut child = herald()
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("HERALD_HTTP_SERVER__PORT", "0")
            .env(
                "HERALD_HTTP_SERVER__INTERNAL_PORT",
                internal_port.to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Node {
            child,
            ws_url: String::new(),
            api_addr: String::new(),
        };
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("no listening line within 30s")
            .unwrap();
        let rest = line
            .strip_prefix("herald listening ws=")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let (ws, api) = rest.split_once(" api=").unwrap();
        node.ws_url = ws.to_owned();
        node.api_addr = api.strip_prefix("http://").unwrap().to_owned();
        node
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn internal_routes_stay_off_a_separate_public_port() {
    let dir = TempDir::new();
    let config = genconfig(&dir);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let internal_port = free.local_addr().unwrap().port();
    drop(free);
    let node = Node::start_with_internal_port(&config, internal_port);
    assert_eq!(node.api_addr, format!("127.0.0.1:{internal_port}"));
    let public_addr = node
        .ws_url
        .strip_prefix("ws://")
        .and_then(|rest| rest.strip_suffix("/connection/websocket"))
        .unwrap()
        .to_owned();
    assert_ne!(public_addr, node.api_addr);

    let internal = http_get(&node.api_addr, "/health");
    assert!(internal.starts_with("HTTP/1.1 200"), "{internal}");
    let public = http_get(&public_addr, "/health");
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    let ws_on_internal = http_get(&node.api_addr, "/connection/websocket");
    assert!(
        ws_on_internal.starts_with("HTTP/1.1 404"),
        "{ws_on_internal}"
    );
}

#[tokio::test]
async fn serve_prints_the_listening_line_and_accepts_a_minted_token() {
    let dir = TempDir::new();
    let config = genconfig(&dir);
    let node = Node::start(&config);
    assert!(
        node.ws_url.starts_with("ws://127.0.0.1:"),
        "{}",
        node.ws_url
    );
    assert!(
        node.ws_url.ends_with("/connection/websocket"),
        "{}",
        node.ws_url
    );

    let health = http_get(&node.api_addr, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let minted = run(&[
        "gentoken",
        "--config",
        config.to_str().unwrap(),
        "--user",
        "alice",
    ]);
    let token = stdout(&minted).trim().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url.as_str())
        .await
        .unwrap();
    let connect = serde_json::json!({"id": 1, "connect": {"token": token}});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no connect reply within 10s")
        .unwrap()
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(reply["id"], 1, "{reply}");
    assert!(reply["connect"]["client"].is_string(), "{reply}");
}

// The files of config/: each loads with `checkconfig`, and the TLS example
// serves real certificates. The key and certificate files they name are made
// here, in a temporary directory herald runs in (their paths are relative).

#[allow(dead_code)] // cli.rs uses the certificate authority and the dialer only.
#[path = "support/tls.rs"]
mod tls;

/// The repository's config/ folder.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The examples the README and docs/configuration.md promise.
const EXAMPLES: &[&str] = &[
    "cluster-redis.toml",
    "development.toml",
    "proxies.toml",
    "sentinel.toml",
    "tls-mtls.toml",
];

/// Every `.toml` file of config/ and config/examples/, sorted.
fn config_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [config_dir(), config_dir().join("examples")] {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every non-empty string value of a key ending in `_file`, with its key.
fn file_references(value: &toml::Value, key: &str, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                file_references(v, k, out);
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                file_references(item, key, out);
            }
        }
        toml::Value::String(path) if key.ends_with("_file") && !path.is_empty() => {
            out.push((key.to_owned(), path.clone()));
        }
        _ => {}
    }
}

/// The certificates an example's TLS files hold: one CA issues the server
/// certificate and the client certificates.
struct Fixture {
    dir: TempDir,
    ca: tls::TestCa,
}

/// Writes every file `config` names, under `dir` at its relative path: a
/// CA for `*ca_pem_file`, the server certificate and its key for
/// `cert_pem_file` and `key_pem_file`, base64 of 32 random bytes (what
/// `herald genkey` prints) for every secret.
fn fixture_for(config: &Path) -> Fixture {
    let text = std::fs::read_to_string(config).unwrap();
    let value: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    let mut references = Vec::new();
    file_references(&value, "", &mut references);
    let fixture = Fixture {
        dir: TempDir::new(),
        ca: tls::TestCa::new("herald example CA"),
    };
    let server = fixture.ca.server("example");
    for (key, relative) in references {
        assert!(
            Path::new(&relative).is_relative(),
            "{}: {key} = {relative:?}: example paths are relative, so a test can provide the file",
            config.display()
        );
        let contents = if key.ends_with("ca_pem_file") {
            fixture.ca.pem.clone()
        } else if key == "cert_pem_file" {
            server.cert_pem.clone()
        } else if key == "key_pem_file" {
            server.key_pem.clone()
        } else {
            let output = run(&["genkey", "--kind", "bus"]);
            assert!(output.status.success(), "{}", stderr(&output));
            stdout(&output)
        };
        let path = fixture.dir.file(&relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
    }
    fixture
}

fn checkconfig_in(dir: &Path, config: &Path) -> Output {
    herald()
        .args(["checkconfig", "--config"])
        .arg(config)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn every_file_of_config_passes_checkconfig() {
    let files = config_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let examples = f.parent().unwrap().ends_with("examples");
            if examples {
                format!("examples/{name}")
            } else {
                name
            }
        })
        .collect();
    assert!(names.contains(&"herald.toml".to_owned()), "{names:?}");
    for example in EXAMPLES {
        assert!(
            names.contains(&format!("examples/{example}")),
            "config/examples/{example} is missing: {names:?}"
        );
    }
    for file in &files {
        let fixture = fixture_for(file);
        let output = checkconfig_in(&fixture.dir.0, file);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            file.display(),
            stderr(&output)
        );
        assert_eq!(stdout(&output).trim(), "config ok", "{}", file.display());
        // None of them warns today; a file that starts to must say why in
        // its comments, and this test must then expect that warning.
        assert!(
            !stderr(&output).contains("warning"),
            "{}: {}",
            file.display(),
            stderr(&output)
        );
    }

    // A missing secret file stops the check, naming its key: the examples
    // cannot run on a secret everyone knows.
    let development = config_dir().join("examples/development.toml");
    let empty = TempDir::new();
    let output = checkconfig_in(&empty.0, &development);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("client.token.hmac_secret_key"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn the_mtls_example_serves_its_certificates() {
    use tokio_tungstenite::client_async;

    let example = config_dir().join("examples/tls-mtls.toml");
    let fixture = fixture_for(&example);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let internal_port = free.local_addr().unwrap().port();
    drop(free);
    let mut child = herald()
        .args(["serve", "--config"])
        .arg(&example)
        .current_dir(&fixture.dir.0)
        .env("HERALD_HTTP_SERVER__ADDRESS", "127.0.0.1")
        .env("HERALD_HTTP_SERVER__PORT", "0")
        .env(
            "HERALD_HTTP_SERVER__INTERNAL_PORT",
            internal_port.to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = {
        let stdout = child.stdout.take().unwrap();
        let (sender, received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        received.recv_timeout(Duration::from_secs(30))
    };
    let node = Node {
        child,
        ws_url: String::new(),
        api_addr: String::new(),
    };
    let line = line.expect("no listening line within 30s");
    let ws_url = line
        .trim()
        .strip_prefix("herald listening ws=")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let addr = ws_url
        .strip_prefix("wss://")
        .and_then(|rest| rest.strip_suffix("/connection/websocket"))
        .unwrap_or_else(|| panic!("not a wss URL: {ws_url}"))
        .to_owned();

    let alice = fixture.ca.client(tls::ClientName::CommonName("alice"));
    let mut dial = tls::Dial::new(&fixture.ca.pem);
    dial.client_cert = Some(&alice);
    let stream = dial.connect(&addr).await.expect("mTLS handshake");
    let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), client_async(&ws_url, stream))
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake");
    // No token, and anonymous connects are off: only the certificate can
    // name the user (`tls_identity_as_user`).
    let connect = serde_json::json!({"id": 1, "connect": {}});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no connect reply within 10s")
        .unwrap()
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    drop(node);
}

#[test]
fn help_of_checktoken_and_genconfig_says_what_they_do() {
    let output = run(&["checktoken", "--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Compared with runs of whitespace as one space: clap may wrap lines.
    let flat = |text: String| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = flat(stdout(&output));
    for want in [
        "claims as JSON",
        "exits 0",
        "exits 1",
        "Exit codes: 0 valid, 1 invalid, 2",
        "token expired",
        "invalid token: <why>",
        "unknown key id",
        "JWT",
        "subscription token",
    ] {
        assert!(
            help.contains(want),
            "checktoken --help lacks {want:?}:\n{help}"
        );
    }

    let output = run(&["genconfig", "--help"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let help = flat(stdout(&output));
    for want in [
        "Without FILE: prints the config to stdout",
        "refuses to overwrite",
        "0600",
        "production",
        "127.0.0.1:8000",
        "config/herald.toml",
    ] {
        assert!(
            help.contains(want),
            "genconfig --help lacks {want:?}:\n{help}"
        );
    }
}
