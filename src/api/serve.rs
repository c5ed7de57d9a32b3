//! Serving the API on the unix socket until SIGTERM/SIGINT: bind the socket (0600 in a 0700
//! directory), tell systemd we are ready, and on a signal stop accepting, end event streams and
//! give open streams a bounded grace before closing them.

use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;

use crate::daemon::{sd_notify, Daemon, SHUTDOWN_GRACE};
use crate::error::{Error, Result};

/// Serves the API over `d` until SIGTERM/SIGINT, then removes the socket.
pub async fn serve(d: &Arc<Daemon>) -> Result<()> {
    let t0 = d.started;
    let listener = crate::daemon::bind_socket(&d.paths.address)?;
    // true once SIGTERM/SIGINT came: the server stops accepting, and open streams get
    // SHUTDOWN_GRACE to end by themselves
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut grace_rx = rx.clone();
    let d_sig = d.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        // event streams never end by themselves: end them, or the server would wait for them
        d_sig.bus.close();
        tx.send_replace(true);
    });
    let router = super::router(d.clone());
    tracing::info!(
        address = %d.paths.address.display(),
        pid = std::process::id(),
        ready_ms = t0.elapsed().as_millis() as u64,
        "nookd is ready"
    );
    sd_notify("READY=1");
    let serve = router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
        let mut rx = rx;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    tokio::pin!(serve);
    // The server's own graceful shutdown waits for every open request, and `attach` or
    // `logs -f` streams may never end: wait for them a bounded time, then close them.
    tokio::select! {
        r = &mut serve => r.map_err(|e| Error::Internal(format!("API server: {e}")))?,
        _ = async {
            let _ = grace_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(
                "open API streams (attach, logs -f, exec) did not end within {} s of the shutdown: closing them",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    }
    sd_notify("STOPPING=1");
    let _ = std::fs::remove_file(&d.paths.address);
    Ok(())
}
