//! One accepted connection: HTTP/1.1 only, with two clocks of its own and a place under the
//! listener's connection cap.
//!
//! - **Header clock** (`server.header_read_timeout`): from the accept, and on a kept-alive
//!   connection from the first byte of each later request, the request head must be complete
//!   within it. A client that connects and sends nothing, or sends part of a head (including
//!   the start of an HTTP/2 preface) and stops, is disconnected.
//! - **Idle clock** (`server.keep_alive_timeout`): between two requests a connection may stay
//!   open and silent this long. It is separate from the header clock on purpose: a proxy in
//!   front keeps its upstream connections idle for a while (60 s is common), and a backend that
//!   closes them sooner races the proxy's next request and turns it into a 502.
//!
//! hyper's own `header_read_timeout` cannot tell the two apart (its timer starts when it waits
//! for a head, idle or not), so the clocks live in a wrapper around the socket that sees the
//! first byte of each request, and in the service, which sees each request start and end.
//!
//! HTTP/2 is not served: clients, kubelet probes, Prometheus and ingress controllers speak
//! HTTP/1.1 to a pod, and h2c with prior knowledge would bring a protocol surface (stream
//! limits, pings, rapid reset) that nobody here needs. Its preface is refused by the HTTP/1.1
//! parser like any malformed request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use metrics::{counter, gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::telemetry::metrics::{
    HTTP_CONNECTIONS_OPEN, HTTP_CONNECTIONS_REFUSED, HTTP_CONNECTIONS_TIMED_OUT,
};

/// A connection's time limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Until a request head is complete.
    pub header_read: Duration,
    /// Between two requests.
    pub keep_alive: Duration,
}

/// Where a connection stands.
const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// Shared by the socket wrapper and the service of one connection: the phase, and when it
/// began (nanoseconds after the connection's start).
#[derive(Debug)]
struct Phase {
    start: Instant,
    state: AtomicU8,
    since: AtomicU64,
}

impl Phase {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            state: AtomicU8::new(HEAD),
            since: AtomicU64::new(0),
        })
    }

    fn set(&self, state: u8) {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.since.store(now, Ordering::Release);
        self.state.store(state, Ordering::Release);
    }

    /// The deadline of the current phase, and what it bounds (none while a request is served:
    /// the request timeout bounds that).
    fn deadline(&self, limits: Limits) -> Option<(Instant, &'static str)> {
        let (limit, reason) = match self.state.load(Ordering::Acquire) {
            HEAD => (limits.header_read, "header_read"),
            IDLE => (limits.keep_alive, "keep_alive"),
            _ => return None,
        };
        let since = Duration::from_nanos(self.since.load(Ordering::Acquire));
        Some((self.start + since + limit, reason))
    }
}

/// The socket, timed: a read that waits past the current phase's deadline fails with
/// `TimedOut`, and hyper closes the connection.
struct Timed<IO> {
    io: IO,
    phase: Arc<Phase>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    listener: &'static str,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Timed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // The first byte after an idle pause starts the next request's head.
                if buf.filled().len() > before && self.phase.state.load(Ordering::Acquire) == IDLE {
                    self.phase.set(HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, reason)) = self.phase.deadline(self.limits) else {
                    return Poll::Pending;
                };
                if self.armed != Some(deadline) {
                    self.armed = Some(deadline);
                    self.timer.as_mut().reset(deadline);
                }
                ready!(self.timer.as_mut().poll(cx));
                counter!(HTTP_CONNECTIONS_TIMED_OUT, "listener" => self.listener, "reason" => reason)
                    .increment(1);
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason)))
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Timed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The router as one connection's hyper service: it adds the peer address and moves the
/// connection between busy and idle as requests start and end.
#[derive(Clone)]
struct Service {
    app: Router,
    peer: SocketAddr,
    phase: Arc<Phase>,
}

/// Marks the connection idle when the request's future ends, whichever way.
struct Idle(Arc<Phase>);

impl Drop for Idle {
    fn drop(&mut self) {
        self.0.set(IDLE);
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.phase.set(BUSY);
        let idle = Idle(self.phase.clone());
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let call = self.app.clone().oneshot(req);
        Box::pin(async move {
            let _idle = idle;
            call.await
        })
    }
}

/// A connection's place under the cap, counted in `http_connections_open` while it lasts.
pub struct Place {
    _permit: OwnedSemaphorePermit,
    listener: &'static str,
}

impl Place {
    /// Takes a place, or counts the refusal (`http_connections_refused_total`) and says no.
    pub fn take(cap: &Arc<tokio::sync::Semaphore>, listener: &'static str) -> Option<Self> {
        match cap.clone().try_acquire_owned() {
            Ok(permit) => {
                gauge!(HTTP_CONNECTIONS_OPEN, "listener" => listener).increment(1.0);
                Some(Self {
                    _permit: permit,
                    listener,
                })
            }
            Err(_) => {
                counter!(HTTP_CONNECTIONS_REFUSED, "listener" => listener).increment(1);
                None
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        gauge!(HTTP_CONNECTIONS_OPEN, "listener" => self.listener).decrement(1.0);
    }
}

/// Starts every series of a listener at zero.
pub fn register(listener: &'static str) {
    gauge!(HTTP_CONNECTIONS_OPEN, "listener" => listener).set(0.0);
    counter!(HTTP_CONNECTIONS_REFUSED, "listener" => listener).absolute(0);
    for reason in ["header_read", "keep_alive"] {
        counter!(HTTP_CONNECTIONS_TIMED_OUT, "listener" => listener, "reason" => reason)
            .absolute(0);
    }
}

/// The HTTP/1.1 connection serving `app` on `tcp`, timed by `limits`.
pub fn http1(
    http: &hyper::server::conn::http1::Builder,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    listener: &'static str,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + use<> {
    let phase = Phase::new();
    let io = Timed {
        io: tcp,
        phase: phase.clone(),
        limits,
        timer: Box::pin(tokio::time::sleep(limits.header_read)),
        armed: None,
        listener,
    };
    let service = Service { app, peer, phase };
    http.serve_connection(hyper_util::rt::TokioIo::new(io), service)
}
