//! A wrapper that keeps secrets out of logs, errors and `Debug` output.

use std::fmt;

/// A secret string: an access token, an access key or a client secret.
///
/// It has no `Display`, and its `Debug` prints `Secret(***)`, so it cannot end
/// up in a log line or an error by accident; code that really needs the value
/// calls [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Replaces anything in `text` that looks like a token or key with `[redacted]`.
///
/// Errors from the identity client and the Redis client are foreign text: a
/// malformed identity response, for one, can be echoed back with the token in
/// it. Every such message passes through here before it is logged or answered.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | '+' | '/' | '=') {
            word.push(ch);
        } else {
            flush_word(&mut out, &mut word);
            out.push(ch);
        }
    }
    flush_word(&mut out, &mut word);
    out
}

fn flush_word(out: &mut String, word: &mut String) {
    if looks_secret(word) {
        out.push_str("[redacted]");
    } else {
        out.push_str(word);
    }
    word.clear();
}

/// A JWT (`eyJ…` with dots) or a long run of base64 is treated as a secret;
/// host names, GUIDs and ordinary words are left alone.
fn looks_secret(word: &str) -> bool {
    if word.starts_with("eyJ") && word.matches('.').count() >= 1 {
        return true;
    }
    let base64ish = word
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_'))
        .count();
    base64ish >= 32 && !word.contains('.') && word.chars().filter(|c| *c == '-').count() < 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug output never shows the value.
    #[test]
    fn debug_hides_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    /// JWTs and long keys are redacted; host names, GUIDs and words are kept.
    #[test]
    fn redact_hides_tokens_and_keys() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJvaWQiOiJ4In0.c2lnbmF0dXJl";
        let key = "Q2hhbmdlTWVBY2Nlc3NLZXlGb3JUaGVDYWNoZTEyMzQ1Ng==";
        let text = format!("bad response {{\"access_token\":\"{jwt}\"}} key={key} from myhost.redis.cache.windows.net id 8d6f4c3a-1b2c-4d5e-9f00-112233445566");
        let red = redact(&text);
        assert!(!red.contains(jwt), "{red}");
        assert!(!red.contains(key), "{red}");
        assert!(red.contains("myhost.redis.cache.windows.net"));
        assert!(red.contains("8d6f4c3a-1b2c-4d5e-9f00-112233445566"));
        assert!(red.contains("bad response"));
    }
}
