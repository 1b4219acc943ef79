//! Listeners: wss:// with a certificate made in the test, ws:// and wss:// at
//! once on the same routes, certificate errors at startup, and the client
//! address behind a TCP proxy (PROXY protocol) or an HTTP proxy
//! (`Forwarded` / `X-Forwarded-For`), as the plugin sees it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use berth::{Config, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{TestServer, WAIT, connect, recv_text, request, send_text, try_connect};

/// The address of `server`'s first TLS listener (`tls`) or plain one.
fn addr(server: &TestServer, tls: bool) -> SocketAddr {
    server
        .addrs
        .iter()
        .find(|(_, t)| *t == tls)
        .expect("a listener")
        .0
}

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files.
struct Cert {
    dir: tempfile::TempDir,
    der: rustls_pki_types::CertificateDer<'static>,
}

impl Cert {
    fn new() -> Cert {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        Cert {
            der: certified.cert.der().clone(),
            dir,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// A TLS client configuration that trusts only this certificate.
    fn client(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

type TlsClient = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// The next text message on a wss:// client.
async fn next_text(client: &mut TlsClient) -> String {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("valid");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
            return text.to_string();
        }
    }
}

/// Opens a wss:// connection to `path` on `addr`, verifying the certificate
/// for the name `localhost`.
async fn connect_wss(cert: &Cert, addr: SocketAddr, path: &str) -> TlsClient {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cert.client()));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("TLS in time")
        .expect("TLS handshake");
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    client
}

fn routes() -> &'static str {
    "[[route]]\npath = \"/echo\"\nplugin = \"echo.wasm\"\n\
     [[route]]\npath = \"/chat\"\nplugin = \"chat.wasm\"\n\
     [[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n"
}

/// A config with `listeners` (TOML tables) instead of the test default
/// `listen`, after the top-level keys `top`.
fn with_listeners(top: &str, listeners: &str) -> String {
    format!(
        "plugin-dir = {:?}\n{top}{listeners}{}",
        berth::demo::BUILT_PLUGIN_DIR,
        routes()
    )
}

/// A config with a plain listener and a TLS one with `cert`, serving the
/// same routes.
fn plain_and_tls(cert: &Cert) -> String {
    with_listeners(
        "",
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\ntls-cert = {:?}\ntls-key = {:?}\n",
            cert.file("cert.pem"),
            cert.file("key.pem"),
        ),
    )
}

#[tokio::test]
async fn ws_and_wss_listeners_serve_the_same_routes() {
    let cert = Cert::new();
    let text = plain_and_tls(&cert);
    let server = TestServer::with_config(&text).await;
    let (plain, secure) = (addr(&server, false), addr(&server, true));

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut wss = connect_wss(&cert, secure, "/echo").await;
    wss.send(Message::text("over tls")).await.unwrap();
    let reply = tokio::time::timeout(WAIT, wss.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::text("over tls"));

    // Chat across the two listeners: one member on each.
    let mut on_tls = connect_wss(&cert, secure, "/chat?room=mixed").await;
    let mut on_plain = connect(&format!("ws://{plain}/chat?room=mixed")).await;
    assert!(next_text(&mut on_tls).await.contains("welcome"));
    assert!(recv_text(&mut on_plain).await.contains("welcome"));
    send_text(&mut on_plain, "hello from ws").await;
    let mut heard = String::new();
    for _ in 0..5 {
        heard = next_text(&mut on_tls).await;
        if heard.contains("hello from ws") {
            break;
        }
    }
    assert!(heard.contains("hello from ws"), "{heard}");

    // A plain client on the TLS port gets no WebSocket.
    let refused = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{secure}/echo")),
    )
    .await
    .expect("an answer in time");
    assert!(refused.is_err());
    server.stop().await;
}

#[tokio::test]
async fn bad_certificate_files_fail_startup_with_a_clear_error() {
    let cert = Cert::new();
    let other = Cert::new();
    let cases = [
        (
            cert.file("cert.pem"),
            cert.file("missing.pem"),
            "cannot read",
        ),
        (
            cert.file("cert.pem"),
            cert.file("cert.pem"),
            "no valid PEM private key",
        ),
        (cert.file("key.pem"), cert.file("key.pem"), "no certificate"),
        (
            cert.file("cert.pem"),
            other.file("key.pem"),
            "do not go together",
        ),
    ];
    for (cert_file, key_file, expected) in cases {
        let text = with_listeners(
            "",
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\ntls-cert = {cert_file:?}\ntls-key = {key_file:?}\n"
            ),
        );
        let config = Config::from_toml(&text, Path::new("test.toml"), Path::new("/")).unwrap();
        let error = match Server::bind(config).await {
            Ok(_) => panic!("{cert_file} + {key_file} started"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{error}");
        assert!(error.contains("127.0.0.1:0"), "{error}");
    }
}

/// What the testkit says its client address is, over a WebSocket made on
/// `stream` (which may already carry a PROXY header).
async fn address_seen<S>(stream: S, url: &str, headers: &[(&str, &str)]) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (mut client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    client.send(Message::text("addr")).await.unwrap();
    loop {
        let msg = tokio::time::timeout(WAIT, client.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            return text.as_str().replace("addr ", "");
        }
    }
}

#[tokio::test]
async fn a_proxy_protocol_header_names_the_client_and_is_required() {
    let text = with_listeners(
        "",
        "[[listener]]\naddress = \"127.0.0.1:0\"\nproxy-protocol = true\n",
    );
    let server = TestServer::with_config(&text).await;
    let addr = addr(&server, false);
    let url = format!("ws://{addr}/kit");

    let mut v1 = TcpStream::connect(addr).await.unwrap();
    v1.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n")
        .await
        .unwrap();
    assert_eq!(address_seen(v1, &url, &[]).await, "203.0.113.7:51000");

    let mut v2 = TcpStream::connect(addr).await.unwrap();
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend([0x21, 0x21, 0, 36]);
    header.extend(
        "2001:db8::9"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend(51001u16.to_be_bytes());
    header.extend(443u16.to_be_bytes());
    v2.write_all(&header).await.unwrap();
    assert_eq!(address_seen(v2, &url, &[]).await, "[2001:db8::9]:51001");

    // Without the header the connection is not served: on this listener a
    // client reaching berth directly must not pass as anyone.
    let direct = TcpStream::connect(addr).await.unwrap();
    let outcome = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(&url, direct))
        .await
        .expect("an answer in time");
    assert!(outcome.is_err());
    server.stop().await;
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let text = with_listeners(
        "max-connections-per-ip = 1\n",
        "[[listener]]\naddress = \"127.0.0.1:0\"\ntrusted-proxies = [\"127.0.0.0/8\"]\n\
         [[listener]]\naddress = \"127.0.0.2:0\"\n",
    );
    let server = TestServer::with_config(&text).await;
    let trusted = server.addrs[0].0;
    let untrusted = server.addrs[1].0;
    let xff = [("x-forwarded-for", "6.6.6.6, 198.51.100.20")];

    let url = format!("ws://{trusted}/kit");
    let stream = TcpStream::connect(trusted).await.unwrap();
    assert_eq!(address_seen(stream, &url, &xff).await, "198.51.100.20:0");
    let stream = TcpStream::connect(trusted).await.unwrap();
    let forwarded = [("forwarded", "for=\"[2001:db8::5]:4711\";proto=https")];
    assert_eq!(
        address_seen(stream, &url, &forwarded).await,
        "[2001:db8::5]:4711"
    );

    // From a peer that is not trusted, the headers are ignored.
    let url = format!("ws://{untrusted}/kit");
    let stream = TcpStream::connect(untrusted).await.unwrap();
    let seen = address_seen(stream, &url, &xff).await;
    assert!(seen.starts_with("127.0.0.1:"), "{seen}");

    // The per-address limit counts the forwarded client, not the proxy.
    let url = format!("ws://{trusted}/echo");
    let (_first, _) = try_connect(request(&url, &[("x-forwarded-for", "192.0.2.1")]))
        .await
        .expect("the first from 192.0.2.1");
    let (_other, _) = try_connect(request(&url, &[("x-forwarded-for", "192.0.2.2")]))
        .await
        .expect("another client through the same proxy");
    let (status, _) = try_connect(request(&url, &[("x-forwarded-for", "192.0.2.1")]))
        .await
        .expect_err("a second from 192.0.2.1");
    assert_eq!(status, 429);
    server.stop().await;
}

#[tokio::test]
async fn a_plugins_https_request_is_refused_a_certificate_the_system_does_not_trust() {
    // berth's own wss listener is the backend: its certificate was made
    // here, so no system root vouches for it.
    let cert = Cert::new();
    let text = plain_and_tls(&cert).replace(
        "plugin = \"testkit.wasm\"\n",
        "plugin = \"testkit.wasm\"\n\
         allowed-outbound = [\"https://127.0.0.1:*\", \"http://127.0.0.1:*\"]\n",
    );
    let server = TestServer::with_config(&text).await;
    let (plain, secure) = (addr(&server, false), addr(&server, true));
    let mut client = connect(&format!("ws://{plain}/kit")).await;
    for (url, answer) in [
        (
            format!("http://{plain}/healthz"),
            "response 200 x-test=- ok\n",
        ),
        (
            format!("https://{secure}/healthz"),
            "response error connect-failed",
        ),
    ] {
        send_text(&mut client, &format!("fetch {url}")).await;
        assert_eq!(recv_text(&mut client).await, "fetching");
        assert_eq!(recv_text(&mut client).await, answer, "{url}");
    }
    server.stop().await;
}
