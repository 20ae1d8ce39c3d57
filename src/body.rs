//! Reading request bodies with a size limit, and the body of the
//! server's answers.

use crate::error::AppError;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

/// The body of an answer, as the server writes it: the fast path's JSON
/// answers as they are ([`crate::functions::Answer::into_out`]), anything
/// else as axum's boxed [`Body`]. One box less per answer than `Body`
/// alone, which boxes every body it is given.
pub(crate) type Out = http_body_util::Either<http_body_util::Full<Bytes>, Body>;

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
    // A body that came in one frame (the usual, for a small value) is
    // that frame, without a copy; later frames join it in `buf`.
    let mut first: Option<Bytes> = None;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| AppError::BadRequest("the request body could not be read".into()))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            if first.is_none() && buf.is_empty() {
                first = Some(data);
            } else {
                if let Some(first) = first.take() {
                    buf.extend_from_slice(&first);
                }
                buf.extend_from_slice(&data);
            }
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > limit {
        return Err(AppError::PayloadTooLarge(limit));
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body sent as these chunks, one frame each.
    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let frames = chunks
            .iter()
            .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c)))
            .collect::<Vec<_>>();
        Body::from_stream(futures_util::stream::iter(frames))
    }

    /// One frame, several, empty ones among them: the bytes in order.
    #[tokio::test]
    async fn joins_the_frames_in_order() {
        for chunks in [
            &[][..],
            &[b"".as_slice()],
            &[b"value".as_slice()],
            &[b"va".as_slice(), b"lu", b"e"],
            &[b"".as_slice(), b"val", b"", b"ue"],
        ] {
            let read = read_limited(chunked(chunks), 5).await.unwrap();
            assert_eq!(read, chunks.concat(), "{chunks:?}");
        }
    }

    /// Past the limit, in one frame or over several: 413.
    #[tokio::test]
    async fn refuses_a_body_over_the_limit() {
        for chunks in [&[b"values".as_slice()][..], &[b"val".as_slice(), b"ues"]] {
            let read = read_limited(chunked(chunks), 5).await;
            assert!(matches!(read, Err(AppError::PayloadTooLarge(5))), "{chunks:?}");
        }
    }
}
