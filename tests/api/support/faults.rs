//! A TCP proxy in front of PostgreSQL that can cut or stall connections, leaving the server
//! itself untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASS: u8 = 0;
const CUT: u8 = 1;
const STALL: u8 = 2;

/// The proxy: `addr` to connect to instead of the server.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    mode: Arc<AtomicU8>,
    /// Bumped on every mode change; copy loops watch it to drop connections on a cut.
    epoch: watch::Sender<u64>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(PASS));
        let (epoch, _) = watch::channel(0u64);
        let connections = Arc::new(AtomicUsize::new(0));
        let (m, e, c) = (mode.clone(), epoch.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                if m.load(Ordering::SeqCst) == CUT {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(pipe(inbound, outbound, m.clone(), e.subscribe()));
            }
        });
        Self {
            addr,
            mode,
            epoch,
            connections,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.set(CUT);
    }

    /// Keeps connections open but forwards nothing.
    pub fn stall(&self) {
        self.set(STALL);
    }

    /// Back to normal.
    pub fn restore(&self) {
        self.set(PASS);
    }
}

async fn pipe(a: TcpStream, b: TcpStream, mode: Arc<AtomicU8>, mut epoch: watch::Receiver<u64>) {
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    loop {
        // While stalled, bytes stay unread, so the peers see silence.
        while mode.load(Ordering::SeqCst) == STALL {
            if epoch.changed().await.is_err() {
                return;
            }
        }
        if mode.load(Ordering::SeqCst) == CUT {
            return;
        }
        tokio::select! {
            n = ar.read(&mut buf_a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if bw.write_all(&buf_a[..n]).await.is_err() { return },
            },
            n = br.read(&mut buf_b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if aw.write_all(&buf_b[..n]).await.is_err() { return },
            },
            _ = epoch.changed() => {}
        }
    }
}

/// Bounded wait for a condition on a live system (another task or process moves it).
pub async fn until<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
