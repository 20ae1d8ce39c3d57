//! Reading request bodies with a size limit.

use crate::error::AppError;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

/// How much of an over-limit body is read and thrown away so the
/// connection stays usable for the caller's next request; past this the
/// connection is closed instead.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// Reads the whole body if it is at most `limit` bytes; otherwise answers
/// 413 after draining what the client sends (up to [`DRAIN_CAP`]), since a
/// client still writing its body when the answer comes would find its
/// connection broken.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<Bytes, AppError> {
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| AppError::BadRequest("the request body could not be read".into()))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > limit {
        return Err(AppError::PayloadTooLarge(limit));
    }
    Ok(Bytes::from(buf))
}
