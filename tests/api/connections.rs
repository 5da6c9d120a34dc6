//! What a connection may cost: a bound on the time to a complete request head on every
//! protocol the listener speaks (HTTP/1.1 only: HTTP/2 is off), an idle keep-alive timeout
//! that is not the header timeout, and a cap on open connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::helpers::{Backend, TestApp, metric};

/// Waits, in a blocking thread, for the server to close `stream`; what it sent before is
/// returned. A 10 s client-side bound: the server closing later (or never) fails the test.
async fn closed_by_server(mut stream: TcpStream) -> String {
    tokio::task::spawn_blocking(move || {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        match stream.read_to_end(&mut buf) {
            Ok(_) => String::from_utf8_lossy(&buf).to_string(),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                String::from_utf8_lossy(&buf).to_string()
            }
            Err(e) => panic!("the server left the connection open: {e}"),
        }
    })
    .await
    .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).unwrap()
}

/// One request on a kept-alive connection; returns the response head.
fn request(stream: &mut TcpStream, path: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_sent_connections_are_closed_after_the_header_timeout() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| s.server.header_read_timeout = Duration::from_millis(300))
        .spawn()
        .await;
    for listener in [app.api, app.ops] {
        // Sends nothing at all.
        let silent = connect(listener);
        // The start of an HTTP/2 preface, then silence (the HTTP/1.1 parser refuses it at once).
        let mut preface = connect(listener);
        preface.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
        // Half a request head.
        let mut half = connect(listener);
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            .unwrap();
        for stream in [silent, preface, half] {
            let sent = closed_by_server(stream).await;
            assert!(!sent.contains(" 200 "), "{sent}");
        }
    }
    // The silent and the half-sent connections ran out of time on each listener.
    let text = app.metrics().await;
    assert!(
        metric(
            &text,
            "http_connections_timed_out_total",
            "reason=\"header_read\""
        ) >= 4.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_refused() {
    let app = TestApp::spawn(Backend::sqlite()).await;
    let mut h2 = connect(app.api);
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let sent = closed_by_server(h2).await;
    assert!(!sent.contains("HTTP/2"), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_get_their_own_timeout() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| {
            s.server.header_read_timeout = Duration::from_millis(200);
            s.server.keep_alive_timeout = Duration::from_secs(3);
        })
        .spawn()
        .await;
    let mut conn = connect(app.api);
    assert!(request(&mut conn, "/healthz").starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout, shorter than the keep-alive timeout: a client
    // pausing between requests is not a slow client, and its connection stays.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(request(&mut conn, "/healthz").starts_with("HTTP/1.1 200"));
    // Idle for good: the server closes the connection.
    let rest = closed_by_server(conn).await;
    assert!(rest.is_empty(), "{rest}");
    // On a kept-alive connection, the head of the next request is timed again.
    let mut slow = connect(app.api);
    assert!(request(&mut slow, "/healthz").starts_with("HTTP/1.1 200"));
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let rest = closed_by_server(slow).await;
    assert!(!rest.contains(" 200 "), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_at_accept_and_counted() {
    let app = TestApp::builder(Backend::sqlite())
        .with(|s| s.server.max_connections = 3)
        .spawn()
        .await;
    let refused_before = metric(
        &app.metrics().await,
        "http_connections_refused_total",
        "listener=\"api\"",
    );
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(app.api)).collect();
    for conn in &mut open {
        assert!(request(conn, "/healthz").starts_with("HTTP/1.1 200"));
    }
    let mut fourth = connect(app.api);
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let sent = closed_by_server(fourth).await;
    assert!(sent.is_empty(), "served past the cap: {sent}");
    let refused = metric(
        &app.metrics().await,
        "http_connections_refused_total",
        "listener=\"api\"",
    );
    assert!(refused - refused_before >= 1.0);
    // The ops listener has a cap of its own: probes still answer.
    assert_eq!(
        app.client
            .get(app.ops_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A closed connection frees its place.
    drop(open.pop());
    crate::support::faults::until("a place is free again", || async {
        let mut conn = connect(app.api);
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    })
    .await;
}
