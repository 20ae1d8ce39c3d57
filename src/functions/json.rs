//! The hot path's JSON answers, written by hand: `CacheItem`'s three
//! answers are one flat object of a key, a value and a flag, so each is a
//! few copies into one buffer of its exact size, which `Bytes` then takes
//! as it is (a buffer with room to spare costs `Bytes` an allocation of its
//! own, and a guess costs a copy when it is short).
//!
//! A string is written as `serde_json` writes it: between quotes, with `"`,
//! `\` and the control characters escaped and nothing else (the tests hold
//! the two to the same bytes). Most keys and values need no escape at all,
//! which eight bytes at a time tell ([`is_plain`]); those are copied as
//! they are, where `serde_json` looks each byte up in its escape table.
//! The buffer is sized for that case without looking at the strings: one
//! that needs escapes grows it (and `Bytes` then allocates, as it did for
//! every answer before).

/// An answer that writes itself as JSON.
pub(crate) trait Json {
    /// The length of [`Json::write`]'s bytes when no string in them needs
    /// an escape (more when one does).
    fn json_len(&self) -> usize;
    /// Appends the JSON.
    fn write(&self, out: &mut Vec<u8>);
}

/// The answer's JSON, in a buffer of exactly its size when none of its
/// strings needs an escape.
pub(crate) fn to_vec(value: &impl Json) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.json_len());
    value.write(&mut out);
    out
}

/// Appends `"name":` (a name that needs no escape), after a comma unless
/// it is the first.
pub(crate) fn name(out: &mut Vec<u8>, name: &str, first: bool) {
    debug_assert!(is_plain(name.as_bytes()));
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// [`name`]'s length.
pub(crate) fn name_len(name: &str, first: bool) -> usize {
    name.len() + 3 + usize::from(!first)
}

/// Appends `s` as a JSON string.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    if is_plain(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // A `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// [`string`]'s length when `s` needs no escape (more when it does).
pub(crate) fn string_len(s: &str) -> usize {
    s.len() + 2
}

/// Appends `true` or `false`.
pub(crate) fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// [`boolean`]'s length.
pub(crate) fn boolean_len(b: bool) -> usize {
    if b {
        4
    } else {
        5
    }
}

/// Whether JSON writes `s` as it is between quotes: no `"`, no `\` and no
/// control character (below 0x20). Eight bytes at a time: a byte `b` of
/// the word `x` is zero in `x ^ c` when it equals `c`, and below `n` when
/// `x - n` borrows into its top bit while `b`'s own top bit is clear.
fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const TOPS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        let found = below(x, 0x20) | below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1);
        if found & TOPS != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, s);
        out
    }

    /// Each byte that needs an escape, in each place of an eight-byte word
    /// and of the remainder, is found; the bytes around them are not.
    #[test]
    fn finds_every_byte_to_escape_anywhere() {
        for len in 0..20 {
            assert!(is_plain(&vec![b'x'; len]));
            for at in 0..len {
                for b in (0..=0x1f).chain([b'"', b'\\']) {
                    let mut s = vec![b'x'; len];
                    s[at] = b;
                    assert!(!is_plain(&s), "{b:#x} at {at} of {len}");
                }
                for b in [0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
                    let mut s = vec![b'x'; len];
                    s[at] = b;
                    assert!(is_plain(&s), "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    /// Control characters, quotes, backslashes and multi-byte characters
    /// come out as `serde_json` writes them; the length said is exact for
    /// a string with nothing to escape, and short of it otherwise.
    #[test]
    fn writes_what_serde_json_writes() {
        for s in [
            "",
            "plain text",
            "a\"b",
            "back\\slash",
            "\n\r\t\u{8}\u{c}",
            "\u{0}\u{1f}\u{7f}",
            "é✓🦀",
            "key:000000000001",
        ] {
            let want = serde_json::to_vec(s).unwrap();
            assert_eq!(written(s), want, "{s:?}");
            if is_plain(s.as_bytes()) {
                assert_eq!(string_len(s), want.len(), "{s:?}");
            } else {
                assert!(string_len(s) < want.len(), "{s:?}");
            }
        }
    }

    /// An answer with nothing to escape fills its buffer exactly, so
    /// `Bytes` takes it without allocating.
    #[test]
    fn a_plain_answer_fills_its_buffer() {
        struct Pair<'a>(&'a str, bool);
        impl Json for Pair<'_> {
            fn json_len(&self) -> usize {
                1 + name_len("k", true) + string_len(self.0) + name_len("b", false) + boolean_len(self.1) + 1
            }
            fn write(&self, out: &mut Vec<u8>) {
                out.push(b'{');
                name(out, "k", true);
                string(out, self.0);
                name(out, "b", false);
                boolean(out, self.1);
                out.push(b'}');
            }
        }
        for (s, b) in [("key:000000000001", true), ("", false), ("é✓", true)] {
            let out = to_vec(&Pair(s, b));
            assert_eq!(out.len(), out.capacity(), "{s:?}");
            let want = format!(r#"{{"k":{},"b":{b}}}"#, serde_json::to_string(s).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        let escaped = to_vec(&Pair("a\"b", true));
        assert_eq!(escaped, br#"{"k":"a\"b","b":true}"#);
    }

    proptest! {
        /// Any string: the same bytes as `serde_json`, at the length said.
        #[test]
        fn any_string_as_serde_json_writes_it(s in any::<String>()) {
            let want = serde_json::to_vec(&s).unwrap();
            prop_assert_eq!(written(&s), want.clone());
            prop_assert_eq!(string_len(&s) == want.len(), is_plain(s.as_bytes()));
        }

        /// Strings mostly of the bytes that need escapes.
        #[test]
        fn escapes_as_serde_json_writes_them(s in "[\\x00-\\x1f\"\\\\a-z]{0,40}") {
            let want = serde_json::to_vec(&s).unwrap();
            prop_assert_eq!(written(&s), want.clone());
            prop_assert_eq!(string_len(&s) == want.len(), is_plain(s.as_bytes()));
        }
    }
}
