//! OTLP over gRPC, in a build with the `otlp-grpc` feature: the real binary exports to an
//! in-test collector, a bare HTTP/2 server that reads each call's message as gRPC frames it
//! (a compression flag, a big-endian length, the bytes) and decodes it as protobuf.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use crate::support::binary::{eventually, get_status, start, wait_line};
use crate::support::helpers::client;
use crate::telemetry::{Received, get_missing_order, hex, int_attr, spans, str_attr};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One call as the collector took it.
#[derive(Debug)]
struct Call {
    path: String,
    headers: HeaderMap,
    /// The body was exactly one uncompressed, length-prefixed message.
    framed: bool,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// What the collector answers every call with.
#[derive(Clone, Copy)]
enum Answer {
    /// An empty `ExportTraceServiceResponse` and `grpc-status: 0`.
    Accept,
    /// A trailers-only response with this gRPC status code and message.
    Refuse(u8, &'static str),
}

/// Starts the collector; returns its address, the requests it decoded and the calls it took.
async fn collector(answer: Answer) -> (SocketAddr, Received, Calls) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (received, calls) = (Received::default(), Calls::default());
    let (r, c) = (received.clone(), calls.clone());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (r, c) = (r.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = conn.accept().await {
                    tokio::spawn(take(request, respond, answer, r.clone(), c.clone()));
                }
            });
        }
    });
    (addr, received, calls)
}

async fn take(
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    answer: Answer,
    received: Received,
    calls: Calls,
) {
    let (parts, mut body) = request.into_parts();
    let mut message = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let framed = message.len() >= 5
        && message[0] == 0
        && u32::from_be_bytes([message[1], message[2], message[3], message[4]]) as usize
            == message.len() - 5;
    if framed && let Ok(request) = ExportTraceServiceRequest::decode(&message[5..]) {
        received.lock().unwrap().push(request);
    }
    calls.lock().unwrap().push(Call {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        framed,
    });
    let head = Response::builder().header("content-type", "application/grpc");
    match answer {
        Answer::Accept => {
            let Ok(mut stream) = respond.send_response(head.body(()).unwrap(), false) else {
                return;
            };
            let reply = ExportTraceServiceResponse::default().encode_to_vec();
            let mut frame = vec![0];
            frame.extend_from_slice(&u32::try_from(reply.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&reply);
            let _ = stream.send_data(Bytes::from(frame), false);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let _ = stream.send_trailers(trailers);
        }
        Answer::Refuse(code, text) => {
            let head = head
                .header("grpc-status", code.to_string())
                .header("grpc-message", text)
                .body(())
                .unwrap();
            let _ = respond.send_response(head, true);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_grpc_collector_with_the_configured_headers() {
    let (addr, received, calls) = collector(Answer::Accept).await;
    let endpoint = format!("http://{addr}");
    let mut app = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer t0ken,x-tenant=orders",
        ),
        ("OTEL_SERVICE_NAME", "orders-grpc-test"),
        ("APP_TELEMETRY__OTLP__EXPORT_INTERVAL", "100ms"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let missing = get_missing_order(&client(), &app).await;
    // traceparent: 00-<trace id>-<span id>-<flags>
    let traceparent = missing.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let trace = traceparent.split('-').nth(1).unwrap().to_owned();

    let server_span = || {
        spans(&received)
            .into_iter()
            .find(|(_, s)| hex(&s.trace_id) == trace && s.kind == SpanKind::Server as i32)
    };
    eventually("the server span reaches the collector", || {
        server_span().is_some()
    });
    let (resource, span) = server_span().unwrap();
    assert_eq!(str_attr(&resource, "service.name"), "orders-grpc-test");
    assert_eq!(
        str_attr(&span.attributes, "http.route"),
        "/api/v1/orders/{id}"
    );
    assert_eq!(int_attr(&span.attributes, "http.response.status_code"), 404);

    {
        let calls = calls.lock().unwrap();
        assert!(!calls.is_empty());
        for call in calls.iter() {
            assert_eq!(call.path, EXPORT);
            assert!(
                call.framed,
                "one uncompressed, length-prefixed message: {call:?}"
            );
            let header = |name: &str| call.headers.get(name).and_then(|v| v.to_str().ok());
            assert_eq!(header("content-type"), Some("application/grpc"));
            assert_eq!(header("te"), Some("trailers"));
            assert_eq!(header("authorization"), Some("Bearer t0ken"));
            assert_eq!(header("x-tenant"), Some("orders"));
            assert!(header("grpc-timeout").is_some(), "{call:?}");
        }
    }
    assert_eq!(app.terminate(), Some(0));
    let failures = app
        .lines
        .try_iter()
        .filter(|l| l.contains("trace export failed"))
        .count();
    assert_eq!(failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_collector_that_refuses_is_reported_with_its_status() {
    // 16: UNAUTHENTICATED
    let (addr, _, calls) = collector(Answer::Refuse(16, "bad token")).await;
    let endpoint = format!("http://{addr}");
    let app = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("APP_TELEMETRY__OTLP__EXPORT_INTERVAL", "50ms"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let res = client()
        .post(format!("http://{}/api/v1/orders", app.api))
        .json(&crate::support::helpers::order_body("refused"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "a refused export never fails a request");
    let warning = wait_line(&app.lines, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("trace export failed"))
    });
    assert_eq!(warning["level"], "WARN");
    let error = warning["error"].as_str().unwrap_or_default();
    assert!(
        error == "gRPC status 16 (Unauthenticated): bad token",
        "{warning}"
    );
    assert!(
        warning["dropped"].as_u64().is_some_and(|n| n > 0),
        "{warning}"
    );
    assert!(calls.lock().unwrap().iter().all(|c| c.path == EXPORT));
}
