//! Security defaults: TLS verified unless --insecure, http(s) only, credentials never follow a
//! redirect to another origin and never appear in records or logs, no header injection.

use serde_json::Value;

use crate::server::{Server, refused_port};
use crate::support::{by_seq, kind, records, run};

#[test]
fn insecure_warns_on_stderr() {
    let server = Server::start_in_background();
    let out = run(&["--insecure"], &server.url("/ok"));
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--insecure") && err.contains("NOT verified"),
        "{err}"
    );
    let out = run(&[], &server.url("/ok"));
    assert!(out.stderr.is_empty(), "no warning without the flag");
}

#[test]
fn only_http_and_https_urls_are_fetched() {
    let input =
        "file:///etc/passwd\nftp://127.0.0.1/x\ndata:text/plain,hi\njavascript:alert(1)\nhttp://\n";
    let out = run(&[], input);
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 5);
    assert!(recs.iter().all(|r| kind(r) == "invalid_url"), "{recs:?}");
}

/// reqwest drops Authorization and Cookie when a redirect changes scheme, host or port
/// (`remove_sensitive_headers`). Two loopback servers on different ports are different
/// origins; so are `127.0.0.1` and `localhost` on the same port.
#[tokio::test]
async fn credentials_do_not_follow_a_redirect_to_another_origin() {
    let a = Server::start().await;
    let b = Server::start().await;
    let mut settings = fetchall::Settings::default();
    for h in ["Authorization: Bearer t0ken", "Cookie: session=abc"] {
        let (name, value) = fetchall::parse_header(h).unwrap();
        settings.request.headers.append(name, value);
    }
    let other_port = format!("{}/redirect?to={}", a.url(""), b.url("/headers"));
    let other_host = format!(
        "{}/redirect?to=http://localhost:{}/headers",
        a.url(""),
        a.addr.port()
    );
    let same_origin = a.url("/redirect?to=/headers");
    let input = format!("{other_port}\n{other_host}\n{same_origin}\n");
    let mut run = fetchall::start(settings, Box::pin(std::io::Cursor::new(input))).unwrap();
    let mut seen: Vec<(u64, Value)> = Vec::new();
    while let Some(record) = run.next().await {
        assert!(record.ok, "{record:?}");
        seen.push((record.seq, record.body.unwrap()));
    }
    run.finish().await.unwrap();
    seen.sort_by_key(|(seq, _)| *seq);
    for (seq, headers) in &seen[..2] {
        assert!(
            headers.get("authorization").is_none(),
            "line {seq}: {headers}"
        );
        assert!(headers.get("cookie").is_none(), "line {seq}: {headers}");
    }
    // The same origin keeps them (so the test would notice if nothing were sent at all).
    let headers = &seen[2].1;
    assert_eq!(headers["authorization"], "Bearer t0ken");
    assert_eq!(headers["cookie"], "session=abc");
}

/// Credentials in the URL become Basic auth for that origin only, and are masked in records.
#[test]
fn url_credentials_stay_with_their_origin_and_are_masked() {
    let a = Server::start_in_background();
    let b = Server::start_in_background();
    let input = format!(
        "http://user:s3cretpw@{}/redirect?to={}\nhttp://user:s3cretpw@{}/redirect?to=/headers\n",
        a.addr,
        b.url("/headers"),
        a.addr
    );
    let out = run(&["-vv"], &input);
    let recs = by_seq(records(&out.stdout));
    assert!(
        recs[0]["body"].get("authorization").is_none(),
        "{}",
        recs[0]
    );
    assert!(
        recs[1]["body"]["authorization"]
            .as_str()
            .is_some_and(|v| v.starts_with("Basic ")),
        "{}",
        recs[1]
    );
    assert!(recs[0]["url"].as_str().unwrap().contains("user:****@"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stdout.contains("s3cretpw") && !stderr.contains("s3cretpw"));
}

/// Failures, retries and debug logs never show a password or a token standing as user name.
#[test]
fn credentials_are_masked_in_errors_and_logs() {
    let port = refused_port();
    let input = format!(
        "http://user:s3cretpw@127.0.0.1:{port}/\nhttp://t0kenvalue@127.0.0.1:{port}/\nhttp://user:s3cretpw@nowhere.invalid/\n"
    );
    let out = run(&["-vv", "--retries", "1", "--retry-base", "1ms"], &input);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    for secret in ["s3cretpw", "t0kenvalue"] {
        assert!(!stdout.contains(secret), "{stdout}");
        assert!(!stderr.contains(secret), "{stderr}");
    }
    assert!(stdout.contains("http://****@127.0.0.1"), "{stdout}");
    assert!(
        stderr.contains("retrying"),
        "the retry was logged: {stderr}"
    );
}

/// A header value with CR or LF is refused before anything is sent.
#[test]
fn header_values_with_line_breaks_are_refused() {
    let server = Server::start_in_background();
    for bad in ["x\r\nX-Evil: 1", "x\nX-Evil: 1", "x\r"] {
        let out = run(&["-A", bad], &server.url("/ok"));
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("line break"), "{err}");
    }
    assert_eq!(server.requests(), 0);
}

/// A loopback HTTPS server with a self-signed certificate for 127.0.0.1; answers `200 ok`.
pub async fn self_signed_server() -> std::net::SocketAddr {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    tls_server(key.cert.der().clone(), &key.signing_key).await
}

/// A loopback HTTPS server presenting `cert` (whose key is `key`); answers `200 ok`.
async fn tls_server(
    cert: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    key: &rcgen::KeyPair,
) -> std::net::SocketAddr {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// TLS is verified: a self-signed certificate fails with kind `tls` (not retried), and
/// passes only with --insecure. Plain HTTP on an https URL is a `tls` failure too.
#[tokio::test]
async fn tls_is_verified_unless_insecure() {
    let addr = self_signed_server().await;
    let plain = Server::start().await;
    let input = format!("https://{addr}/\nhttps://{}/ok\n", plain.addr);
    let run = |args: Vec<&'static str>, input: String| {
        tokio::task::spawn_blocking(move || run(&args, &input))
    };
    let out = run(vec![], input.clone()).await.unwrap();
    let recs = by_seq(records(&out.stdout));
    for r in &recs {
        assert_eq!(kind(r), "tls", "{r}");
        assert_eq!(r["attempts"], 1);
    }
    assert!(
        recs[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{}",
        recs[0]
    );
    let out = run(vec!["--insecure"], format!("https://{addr}/\n"))
        .await
        .unwrap();
    let recs = records(&out.stdout);
    assert_eq!(recs[0]["ok"], true, "{}", recs[0]);
    assert_eq!(recs[0]["body"], "ok");
}

/// A throwaway CA, and a certificate it signed for `name`: (CA PEM, leaf, leaf key).
fn ca_and_leaf(
    name: &str,
) -> (
    String,
    tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    rcgen::KeyPair,
) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca.pem(), leaf.der().clone(), leaf_key)
}

/// `--cacert FILE` trusts the CAs in FILE, and only those (as curl's): a server whose
/// certificate that CA signed passes, the same server fails verification without the option
/// or with another CA's file, and a file that is not PEM stops the run before any request.
#[tokio::test]
async fn cacert_trusts_only_the_given_ca() {
    let (ca_pem, leaf, leaf_key) = ca_and_leaf("a.localhost");
    let (other_ca_pem, _, _) = ca_and_leaf("a.localhost");
    let addr = tls_server(leaf, &leaf_key).await;
    let dir = tempfile::TempDir::new().unwrap();
    let ca = dir.path().join("ca.pem");
    let other = dir.path().join("other.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&other, other_ca_pem).unwrap();
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let url = format!("https://a.localhost:{}/\n", addr.port());
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args, &url)
        })
    };
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let out = run(vec!["--cacert".into(), path(&ca)]).await.unwrap();
    let recs = records(&out.stdout);
    assert_eq!(recs[0]["ok"], true, "{}", recs[0]);
    assert_eq!(recs[0]["body"], "ok");
    for args in [vec![], vec!["--cacert".into(), path(&other)]] {
        let out = run(args).await.unwrap();
        let recs = records(&out.stdout);
        assert_eq!(kind(&recs[0]), "tls", "{}", recs[0]);
    }
    let out = run(vec!["--cacert".into(), path(&junk)]).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cacert") && err.contains("junk.pem"), "{err}");
}
