//! OTLP/HTTP's request and response encodings: the media type picks
//! protobuf (`application/x-protobuf`) or the OTLP/JSON mapping
//! (`application/json`), `Content-Encoding: gzip` is undone, and the
//! answer is an empty `Export*ServiceResponse` in the request's encoding
//! (opentelemetry.io/docs/specs/otlp, "OTLP/HTTP").

use super::model::Protocol;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::io::Read;

/// Largest body accepted once decompressed: far above any real batch, low
/// enough that a gzip bomb cannot fill the machine's memory.
pub(super) const MAX_BODY: usize = 64 * 1024 * 1024;

/// A request refused: its status and a short text.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused(pub StatusCode, pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

/// The media type of `Content-Type`, lowercased, without parameters
/// (`application/json; charset=utf-8` → `application/json`).
pub(super) fn media_type(headers: &HeaderMap) -> String {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The encoding a media type names; 415 for any other.
pub(super) fn protocol(media_type: &str) -> Result<Protocol, Refused> {
    match media_type {
        "application/x-protobuf" => Ok(Protocol::Protobuf),
        "application/json" => Ok(Protocol::Json),
        other => Err(Refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {other:?}: OTLP/HTTP takes application/x-protobuf or application/json"),
        )),
    }
}

/// The body with its `Content-Encoding` undone: as is, or gunzipped; 415
/// for another encoding, 400 for a gzip stream that does not decode.
pub(super) fn decompress(headers: &HeaderMap, body: Bytes) -> Result<Bytes, Refused> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Refused(StatusCode::BAD_REQUEST, format!("gzip body does not decode: {e}")))?;
            if out.len() > MAX_BODY {
                return Err(Refused(StatusCode::PAYLOAD_TOO_LARGE, "body too large".into()));
            }
            Ok(out.into())
        }
        Some(other) => Err(Refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content encoding {other:?}: gzip or none"),
        )),
    }
}

/// An export request decoded with the OTLP definitions; 400 with the
/// decoder's reason when it does not decode.
pub(super) fn decode<M>(body: &[u8], protocol: Protocol) -> Result<M, Refused>
where
    M: prost::Message + Default + serde::de::DeserializeOwned,
{
    let bad = |why: String| Refused(StatusCode::BAD_REQUEST, format!("body does not decode: {why}"));
    match protocol {
        Protocol::Protobuf => M::decode(body).map_err(|e| bad(e.to_string())),
        Protocol::Json => serde_json::from_slice(body).map_err(|e| bad(e.to_string())),
    }
}

/// 200 with an empty `Export*ServiceResponse` (full success) in
/// `protocol`: no bytes in protobuf, `{}` in JSON (serde would write
/// `{"partialSuccess":null}`, which is valid but not what collectors send).
pub(super) fn accepted(protocol: Protocol) -> Response {
    let (content_type, body): (_, &'static [u8]) = match protocol {
        Protocol::Protobuf => ("application/x-protobuf", b""),
        Protocol::Json => ("application/json", b"{}"),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The media type decides, parameters and case aside; anything else is 415.
    #[test]
    fn media_types() {
        let cases = [
            ("application/x-protobuf", Some(Protocol::Protobuf)),
            ("application/json", Some(Protocol::Json)),
            ("Application/JSON; charset=utf-8", Some(Protocol::Json)),
            ("text/plain", None),
            ("", None),
        ];
        for (ct, want) in cases {
            let got = protocol(&media_type(&headers(&[(header::CONTENT_TYPE, ct)])));
            match want {
                Some(p) => assert_eq!(got, Ok(p), "{ct}"),
                None => assert_eq!(got.unwrap_err().0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}"),
            }
        }
    }

    /// gzip is undone, no encoding passes, another encoding is 415 and a
    /// broken gzip stream 400.
    #[test]
    fn content_encodings() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"payload").unwrap();
        let zipped = Bytes::from(gz.finish().unwrap());
        let gzip = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        assert_eq!(decompress(&gzip, zipped).unwrap(), &b"payload"[..]);
        assert_eq!(
            decompress(&HeaderMap::new(), Bytes::from_static(b"x")).unwrap(),
            &b"x"[..]
        );
        let br = headers(&[(header::CONTENT_ENCODING, "br")]);
        assert_eq!(
            decompress(&br, Bytes::new()).unwrap_err().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let broken = decompress(&gzip, Bytes::from_static(b"not gzip")).unwrap_err();
        assert_eq!(broken.0, StatusCode::BAD_REQUEST);
    }
}
