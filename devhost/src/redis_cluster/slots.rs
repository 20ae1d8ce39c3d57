//! Redis Cluster key slots: which of the 16384 slots a key hashes to, and a
//! hash tag for each slot so a test can put keys where it wants them.
//!
//! The slot is CRC16 (XMODEM) of the key, or of the text between the first
//! `{` and the next `}` when that is not empty (a hash tag), modulo 16384, as
//! in the Redis Cluster specification.
//!
//! The handler has its own copy (`src/cache/slot.rs`). This second one is
//! on purpose: tests that place keys on a chosen shard and check where the
//! handler sent them must not take the handler's own routing as the
//! reference, or a wrong slot would agree with itself.

use std::sync::OnceLock;

/// How many hash slots a Redis Cluster has.
pub const SLOTS: u16 = 16384;

/// The slot `key` belongs to (honours `{hash tags}`).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS
}

/// A short hash tag (`{…}`, braces included) whose keys all land in
/// `slot`: `format!("{}name", slot_tag(s))` hashes to `s`.
///
/// # Panics
///
/// When `slot` is 16384 or more.
pub fn slot_tag(slot: u16) -> String {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        // The decimal numbers cover every slot after about 170 000 tries.
        let mut tags = vec![String::new(); usize::from(SLOTS)];
        let mut missing = tags.len();
        let mut n: u64 = 0;
        while missing > 0 {
            let text = n.to_string();
            let t = &mut tags[usize::from(crc16(text.as_bytes()) % SLOTS)];
            if t.is_empty() {
                *t = format!("{{{text}}}");
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    tags[usize::from(slot)].clone()
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum
/// Redis Cluster uses.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // The specification's check value, and slots `CLUSTER KEYSLOT` gives.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn every_slot_has_a_tag() {
        for slot in [0, 1, 5061, 12182, SLOTS - 1] {
            let key = format!("{}k", slot_tag(slot));
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
        assert!((0..SLOTS).all(|s| !slot_tag(s).is_empty()));
    }
}
