//! What makes the reloader reload: file events (debounced), polling where events are not
//! available, and `SIGHUP`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Reloader;

/// Quiet time after a file event before the files are read: a ConfigMap update is a burst.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The file triggers in place: what is watched, and the polling for what cannot be.
#[derive(Default)]
struct Watching {
    /// The files the watch was set up for.
    files: Option<Vec<PathBuf>>,
    watcher: Option<notify::RecommendedWatcher>,
    poll: Option<tokio::time::Interval>,
}

impl Reloader {
    /// Reloads on every trigger until `stop` is cancelled.
    pub async fn run(mut self, stop: CancellationToken) {
        let (tx, mut events) = mpsc::channel::<()>(1);
        let mut watching = Watching::default();
        let mut hangup = hangup();
        loop {
            // Again after each reload: a new `auth.keys_file` is a new file to watch.
            self.rewatch(&mut watching, &tx);
            tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = events.recv() => {
                    // Wait for the burst to end.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
                    self.reload_if_changed("file change");
                }
                Some(()) = next_tick(watching.poll.as_mut()) => {
                    self.reload_if_changed("file change (polled)");
                }
                Some(()) = recv_hangup(hangup.as_mut()) => {
                    self.reload("SIGHUP");
                }
            }
        }
    }

    /// Sets the watch (and the polling) up for the files a reload reads, unless it is set up
    /// for those already.
    fn rewatch(&self, watching: &mut Watching, tx: &mpsc::Sender<()>) {
        let files = self.files();
        if watching.files.as_ref() == Some(&files) {
            return;
        }
        if watching.files.is_some() {
            tracing::info!(files = ?files, "the configuration files changed: watching them");
        }
        // The old watcher goes first: its directories may be watched again.
        watching.watcher = None;
        let (watcher, complete) = if self.running.reload.watch {
            self.watch(tx.clone())
        } else {
            (None, true)
        };
        let interval = self.running.reload.reload_interval;
        watching.poll = (!complete && !interval.is_zero())
            .then(|| tokio::time::interval_at(tokio::time::Instant::now() + interval, interval));
        watching.watcher = watcher;
        watching.files = Some(files);
    }

    /// Watches the directories of the files that exist, and says whether that covers every
    /// file (a directory that is missing or cannot be watched leaves the files to polling).
    fn watch(&self, tx: mpsc::Sender<()>) -> (Option<notify::RecommendedWatcher>, bool) {
        use notify::Watcher;
        let mut dirs: Vec<PathBuf> = self
            .files()
            .iter()
            .filter_map(|f| {
                let dir = f.parent()?;
                Some(if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir.to_path_buf()
                })
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        let mut watcher = match notify::recommended_watcher(move |_event| {
            // Full means a reload is pending already.
            let _ = tx.try_send(());
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration files: polling");
                return (None, false);
            }
        };
        let mut complete = true;
        for dir in &dirs {
            if !dir.is_dir() {
                // No file there to read yet (e.g. no profile directory): polling notices one.
                complete = false;
                continue;
            }
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch: polling it");
                complete = false;
            }
        }
        (Some(watcher), complete)
    }
}

async fn next_tick(poll: Option<&mut tokio::time::Interval>) -> Option<()> {
    match poll {
        Some(p) => {
            p.tick().await;
            Some(())
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

fn hangup() -> Option<Hangup> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

async fn recv_hangup(h: Option<&mut Hangup>) -> Option<()> {
    #[cfg(unix)]
    if let Some(h) = h {
        return h.recv().await;
    }
    #[cfg(not(unix))]
    let _ = h;
    std::future::pending().await
}
