//! `GET /api/v1/events`: the live snapshot as Server-Sent Events (event `snapshot`, JSON
//! data), sent when it changes; a comment every 15 s keeps proxies from closing the stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};

use super::super::{ApiResult, St};

pub(crate) async fn stream(State(st): St) -> ApiResult {
    let rx = st.events.subscribe();
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            // Ends when the producer stops (daemon shutdown).
            rx.changed().await.ok()?;
            let data = rx.borrow_and_update().clone();
            // Empty: the producer dropped a snapshot nobody was reading (it would be stale);
            // the next tick brings a fresh one.
            if !data.is_empty() {
                return Some((Ok::<_, Infallible>(Event::default().event("snapshot").data(data.as_str())), rx));
            }
        }
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
