//! JWT-shaped access tokens, really signed (HS256) so a stand-in gateway can
//! check them.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis": the scope is
//! `https://redis.azure.com/.default` (so `aud` is `https://redis.azure.com`)
//! and the object id is the token's `oid` claim, which peers read when no
//! principal id is configured.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The audience of tokens for Azure Redis (the scope without `/.default`).
pub const REDIS_AUDIENCE: &str = "https://redis.azure.com";

type HmacSha256 = Hmac<Sha256>;

/// The claims of a minted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Audience: the requested resource, `https://redis.azure.com` for Redis.
    pub aud: String,
    /// Issuer: `https://sts.windows.net/<tid>/`.
    pub iss: String,
    /// Object id of the principal: the Redis user name.
    pub oid: String,
    /// Tenant id.
    pub tid: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Expiry, Unix seconds (the `expires_on` of the token response).
    pub exp: i64,
    /// Unique token id: no two minted tokens are equal.
    pub uti: String,
}

/// Why [`crate::identity::IdentityEndpoint::verify`] rejected a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not three base64url parts with JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// The HMAC does not match (tampered, or minted by another endpoint).
    #[error("bad signature")]
    BadSignature,
    /// `aud` is not `https://redis.azure.com`.
    #[error("wrong audience {0:?}")]
    WrongAudience(String),
    /// `exp` is in the past.
    #[error("token expired at {0}")]
    Expired(i64),
}

/// Signs `claims` with `key` into `header.claims.signature`.
pub(crate) fn mint(key: &[u8], claims: &impl Serialize) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let signing_input = format!("{header}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(sign(key, signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

/// Checks signature, audience and expiry (against `now`, Unix seconds).
pub(crate) fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, VerifyError> {
    let claims: Claims = verify_signature(key, token)?;
    if claims.aud != REDIS_AUDIENCE {
        return Err(VerifyError::WrongAudience(claims.aud));
    }
    if claims.exp <= now {
        return Err(VerifyError::Expired(claims.exp));
    }
    Ok(claims)
}

/// Checks the signature only and returns the claims, whatever their
/// audience and expiry (the caller checks those).
pub(crate) fn verify_signature<T: DeserializeOwned>(key: &[u8], token: &str) -> Result<T, VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(b), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(VerifyError::Malformed);
    };
    let header: serde_json::Value = serde_json::from_slice(&decode(h)?).map_err(|_| VerifyError::Malformed)?;
    if header["alg"] != "HS256" {
        return Err(VerifyError::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{h}.{b}").as_bytes());
    mac.verify_slice(&decode(s)?).map_err(|_| VerifyError::BadSignature)?;
    serde_json::from_slice(&decode(b)?).map_err(|_| VerifyError::Malformed)
}

fn sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn decode(part: &str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| VerifyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: REDIS_AUDIENCE.into(),
            iss: "https://sts.windows.net/t/".into(),
            oid: "o".into(),
            tid: "t".into(),
            iat: 100,
            nbf: 100,
            exp,
            uti: "u".into(),
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let key = b"k1";
        let token = mint(key, &claims(1_000));
        assert!(!token.contains('='));
        assert_eq!(verify(key, &token, 500).unwrap(), claims(1_000));
        assert_eq!(verify(key, &token, 1_000), Err(VerifyError::Expired(1_000)));
        assert_eq!(verify(b"k2", &token, 500), Err(VerifyError::BadSignature));
        // Tamper with the claims: swap in another body, keep the signature.
        let other = mint(key, &claims(9_999));
        let mut p: Vec<&str> = token.split('.').collect();
        p[1] = other.split('.').nth(1).unwrap();
        assert_eq!(verify(key, &p.join("."), 500), Err(VerifyError::BadSignature));
        assert_eq!(verify(key, "abc", 500), Err(VerifyError::Malformed));
        let mut c = claims(1_000);
        c.aud = "https://vault.azure.net".into();
        let wrong_aud = mint(key, &c);
        assert!(matches!(
            verify(key, &wrong_aud, 500),
            Err(VerifyError::WrongAudience(_))
        ));
    }
}
