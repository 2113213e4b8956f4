//! `WatchDashboard`'s stream: the dashboard again every interval until the client goes or the
//! server shuts down.

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{admin::Admin, proto::v1};

/// Bounds of `WatchDashboardRequest.interval_seconds`.
pub(super) const INTERVAL_SECS: std::ops::RangeInclusive<u32> = 1..=60;

/// The dashboard of `admin` every `secs` seconds, first at once; ends with UNAVAILABLE when
/// `shutdown` is cancelled.
pub(super) fn every(
    admin: Admin,
    shutdown: CancellationToken,
    secs: u32,
) -> ReceiverStream<Result<v1::Dashboard, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(u64::from(secs)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
            }
            let update = admin
                .dashboard()
                .await
                .map(super::reports::dashboard)
                .map_err(Status::from);
            if tx.send(update).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}
