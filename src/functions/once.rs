//! Writes applied once per invocation, answered with their true result,
//! however often a lost connection makes the cache send them again; and a
//! client's own retries (`Idempotency-Key`) answered with the first result.
//!
//! The cache never sends a write again blindly once it may have reached
//! Redis ([`crate::cache::replay`]). `INCRBY` and `DEL` are not safe to send
//! twice (the count would go up twice; the second `DEL` would answer "not
//! deleted"), so their functions run a script instead, which records the
//! invocation's result beside the key, under
//! `{<the key's slot tag>}:azfn:<what>:<invocation id>` (the same hash slot
//! as the key, so it works on a cluster, hash tags included), with a TTL of
//! a few minutes. Run again for the same invocation, the script answers the
//! recorded result and changes nothing, so the cache may send it again:
//! the write happens once, and its answer is the truth.
//!
//! `Idempotency-Key` (Stripe's API, the IETF httpapi draft) does the same
//! for a client that retries the whole request: the first answer is
//! recorded for 24 hours beside the key, with a fingerprint of the request
//! (`by` and the body); the same key again gets that answer, applied once,
//! from any instance; the same key with another request is a 422. The
//! record belongs to the counter's key: the same `Idempotency-Key` on
//! another counter is another request.

use crate::cache::{same_slot_prefix, Cache, CacheError, Script};
use crate::error::AppError;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The header a client names its retries with.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header on an answer given again for an `Idempotency-Key`.
pub(crate) const REPLAYED: &str = "idempotent-replayed";
/// How long a client's `Idempotency-Key` is remembered.
pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// The shortest an invocation's record lives (longer when a call may take
/// longer: twice its longest).
const RECORD_TTL_MIN: Duration = Duration::from_secs(300);
/// Longest `Idempotency-Key` accepted, in characters.
const IDEMPOTENCY_KEY_MAX: usize = 255;

/// `INCRBY` once per invocation and per `Idempotency-Key`.
///
/// `KEYS`: the counter, the invocation's record, and (optionally) the
/// client's idempotency record. `ARGV`: `by`, the invocation record's TTL
/// (s), the request's fingerprint, the idempotency record's TTL (s).
/// Answers `{0, value}` applied now, `{1, value}` applied before by this
/// invocation, `{2, value}` applied before for this `Idempotency-Key`,
/// `{3, ""}` the `Idempotency-Key` came with another request; or the
/// error `INCRBY` gave (nothing recorded, nothing changed).
static INCR: Script = Script::new(
    r#"
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local sep = string.find(seen, ':', 1, true)
    if string.sub(seen, 1, sep - 1) ~= ARGV[3] then return {3, ''} end
    return {2, string.sub(seen, sep + 1)}
  end
end
local done = redis.call('GET', KEYS[2])
if done then return {1, done} end
local value = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(value) == 'table' and value.err then return value end
redis.call('SET', KEYS[2], value, 'EX', ARGV[2])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[3] .. ':' .. value, 'EX', ARGV[4]) end
return {0, value}
"#,
);

/// `DEL` once per invocation: `KEYS` the key and the invocation's record,
/// `ARGV` the record's TTL (s). Answers how many keys this invocation
/// deleted (0 or 1), the first time and every time after.
static DEL: Script = Script::new(
    r#"
local done = redis.call('GET', KEYS[2])
if done then return tonumber(done) end
local n = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], n, 'EX', ARGV[1])
return n
"#,
);

/// The key of the record of `what` done by `id` to `key`: same slot as `key`.
pub(crate) fn record_key(key: &str, what: &str, id: &str) -> String {
    format!("{}:azfn:{what}:{id}", same_slot_prefix(key))
}

/// The invocation id the host gave (see [`crate::host`]), or a random one
/// for a call that came without (a retry inside this call still finds it).
pub(crate) fn invocation(headers: &HeaderMap) -> String {
    match crate::host::invocation_id(headers) {
        "" => format!("local-{:032x}", fastrand::u128(..)),
        id => id.to_owned(),
    }
}

/// The request's `Idempotency-Key`, if any: 1 to 255 printable ASCII
/// characters, else a 400.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        AppError::BadRequest(format!(
            "the Idempotency-Key header must be one value of 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"
        ))
    };
    if values.next().is_some() {
        return Err(bad());
    }
    let text = value.to_str().map_err(|_| bad())?.trim();
    let printable = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    match !text.is_empty() && text.len() <= IDEMPOTENCY_KEY_MAX && printable {
        true => Ok(Some(text.to_owned())),
        false => Err(bad()),
    }
}

/// A request's fingerprint: SHA-256 of its parts, each length-prefixed.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long an invocation's record lives with this cache.
fn record_ttl(cache: &Cache) -> u64 {
    (cache.longest_call() * 2).max(RECORD_TTL_MIN).as_secs()
}

/// What [`incr`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incremented {
    /// The value after this invocation's increment.
    Applied(i64),
    /// The value the first request with this `Idempotency-Key` was answered.
    Replayed(i64),
    /// The `Idempotency-Key` came before with another request.
    KeyReused,
}

/// A client's `Idempotency-Key` and the fingerprint of its request.
pub(crate) struct ClientRetry {
    /// The header's value.
    pub(crate) key: String,
    /// [`fingerprint`] of the request.
    pub(crate) fingerprint: String,
}

/// Adds `by` to the integer at `key`, once for `invocation` (and for
/// `retry`, when the client named one).
pub(crate) async fn incr(
    cache: &Cache,
    key: &str,
    by: i64,
    invocation: &str,
    retry: Option<&ClientRetry>,
) -> Result<Incremented, CacheError> {
    let record = record_key(key, "incr", invocation);
    let by = by.to_string();
    let ttl = record_ttl(cache).to_string();
    let idempotency_ttl = IDEMPOTENCY_TTL.as_secs().to_string();
    let (keys, args): (Vec<String>, Vec<&str>) = match retry {
        Some(r) => (
            vec![
                key.to_owned(),
                record,
                record_key(key, "idem", &fingerprint(&[r.key.as_bytes()])),
            ],
            vec![&by, &ttl, &r.fingerprint, &idempotency_ttl],
        ),
        None => (vec![key.to_owned(), record], vec![&by, &ttl]),
    };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let (how, value): (i64, redis::Value) = cache.eval(&INCR, &keys, &args).await?;
    let value = || match &value {
        redis::Value::Int(v) => Ok(*v),
        redis::Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CacheError::Command("the increment's record is not a number".into())),
        other => Err(CacheError::Command(format!(
            "unexpected answer from the increment: {other:?}"
        ))),
    };
    match how {
        0 | 1 => Ok(Incremented::Applied(value()?)),
        2 => Ok(Incremented::Replayed(value()?)),
        3 => Ok(Incremented::KeyReused),
        other => Err(CacheError::Command(format!(
            "unexpected answer from the increment: {other}"
        ))),
    }
}

/// Deletes `key`, once for `invocation`; whether this invocation deleted it.
pub(crate) async fn delete(cache: &Cache, key: &str, invocation: &str) -> Result<bool, CacheError> {
    let record = record_key(key, "del", invocation);
    let ttl = record_ttl(cache).to_string();
    let deleted: i64 = cache.eval(&DEL, &[key, &record], &[&ttl]).await?;
    Ok(deleted > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// Records share their key's slot, and differ by what and by invocation.
    #[test]
    fn records_sit_beside_their_key() {
        let slot = |k: &str| crate::cache::key_slot(k.as_bytes());
        for key in ["counter", "{tenant7}:visits", "a}b", "x{"] {
            let record = record_key(key, "incr", "inv-1");
            assert_eq!(slot(&record), slot(key), "{key} -> {record}");
        }
        assert_ne!(record_key("k", "incr", "a"), record_key("k", "incr", "b"));
        assert_ne!(record_key("k", "incr", "a"), record_key("k", "del", "a"));
        assert_eq!(record_key("{t}:c", "del", "i"), "{t}:azfn:del:i");
    }

    /// Idempotency-Key: absent is fine; one printable value up to 255
    /// characters is taken (trimmed); empty, too long, control characters,
    /// non-ASCII or two values are a 400.
    #[test]
    fn idempotency_keys() {
        let with = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(v).unwrap());
            }
            idempotency_key(&h)
        };
        assert_eq!(with(&[]).unwrap(), None);
        assert_eq!(with(&[b" order-42 "]).unwrap().as_deref(), Some("order-42"));
        assert!(with(&["k".repeat(255).as_bytes()]).unwrap().is_some());
        for bad in [&b""[..], b"   ", "k".repeat(256).as_bytes(), b"a\tb", "é".as_bytes()] {
            assert!(matches!(with(&[bad]), Err(AppError::BadRequest(_))), "{bad:?}");
        }
        assert!(matches!(with(&[b"a", b"b"]), Err(AppError::BadRequest(_))));
    }

    /// A request's fingerprint tells its parts apart: `by` 1 with body
    /// "23" is not `by` 12 with body "3".
    #[test]
    fn fingerprints() {
        assert_eq!(fingerprint(&[b"1", b""]), fingerprint(&[b"1", b""]));
        assert_ne!(fingerprint(&[b"1", b"23"]), fingerprint(&[b"12", b"3"]));
        assert_eq!(fingerprint(&[b"x"]).len(), 64);
    }
}
