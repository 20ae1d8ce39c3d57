//! Redis Cluster hash slots: which of the 16384 slots a command's key
//! belongs to, and a hash tag that puts a key on a chosen shard.
//!
//! The slot is CRC16 (XMODEM) of the key, or of the text between the first
//! `{` and the next `}` when that is not empty (a hash tag), modulo 16384, as
//! the Redis Cluster specification says. The test tools (`devhost`) keep a
//! copy of their own on purpose, so tests check routing against an
//! independent reference.

/// How many hash slots a Redis Cluster has.
pub(crate) const SLOTS: u16 = 16384;

/// The slot `key` belongs to (honours `{hash tags}`).
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS
}

/// Commands without a key: any master can answer them. Every other command
/// the handler sends has its one key as its first argument (GET, SET, DEL,
/// INCRBY, EXPIRE, ...).
const KEYLESS: &[&[u8]] = &[
    b"PING",
    b"ECHO",
    b"INFO",
    b"CLIENT",
    b"CLUSTER",
    b"CONFIG",
    b"DBSIZE",
    b"TIME",
    b"COMMAND",
    b"ACL",
    b"AUTH",
    b"HELLO",
    b"ASKING",
    b"READONLY",
    b"READWRITE",
    b"MEMORY",
    b"LATENCY",
    b"SLOWLOG",
    b"LOLWUT",
];

/// Commands whose keys follow a key count: `EVALSHA sha numkeys key ...`.
const KEYS_AFTER_COUNT: &[&[u8]] = &[b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"];

/// The slot of `cmd`'s (first) key, or `None` for a command without a key.
pub(crate) fn command_slot(cmd: &redis::Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => bytes,
        _ => &b"0"[..],
    });
    let name = args.next()?;
    if KEYLESS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
        return None;
    }
    if KEYS_AFTER_COUNT.iter().any(|k| k.eq_ignore_ascii_case(name)) {
        let _script = args.next()?;
        let count: u32 = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
        return (count > 0).then(|| args.next().map(key_slot))?;
    }
    args.next().map(key_slot)
}

/// The hash tag of `key`: the text between its first `{` and the next `}`,
/// when that is not empty (what decides the key's slot).
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let len = key[open + 1..].find('}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// A prefix (`{...}`) that puts any key it starts in the same slot as
/// `key`: `key`'s own hash tag, or `key` itself braced; for the rare key
/// that has a `}` but no tag, a short tag found for its slot.
pub(crate) fn same_slot_prefix(key: &str) -> String {
    match hash_tag(key) {
        Some(tag) => format!("{{{tag}}}"),
        None if !key.contains('}') => format!("{{{key}}}"),
        None => {
            let slot = key_slot(key.as_bytes());
            tag_in(&[(slot, slot)]).unwrap_or_else(|| format!("{{{}}}", key.replace('}', "")))
        }
    }
}

/// A short hash tag (`{n}`, braces included) whose keys land in one of
/// `ranges` (inclusive slot ranges), so a probe key can be put on a chosen
/// master. `None` when the ranges are empty.
pub(crate) fn tag_in(ranges: &[(u16, u16)]) -> Option<String> {
    if ranges.is_empty() {
        return None;
    }
    // Decimal numbers cover every slot after about 170 000 tries; a shard
    // owns thousands of slots, so this ends after a few.
    (0u32..2_000_000)
        .map(|n| n.to_string())
        .find(|text| {
            let slot = crc16(text.as_bytes()) % SLOTS;
            ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
        })
        .map(|text| format!("{{{text}}}"))
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

    /// The specification's reference values: CRC16("123456789") is 0x31C3,
    /// and the slots redis-cli's CLUSTER KEYSLOT gives.
    #[test]
    fn slots_match_redis() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"Message"), 999);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag hashes the whole key; so does an unclosed brace.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % SLOTS);
    }

    /// A command's key decides its slot; keyless commands have none.
    #[test]
    fn command_slots() {
        assert_eq!(command_slot(redis::cmd("GET").arg("foo")), Some(12182));
        assert_eq!(command_slot(redis::cmd("set").arg("bar").arg("v")), Some(5061));
        assert_eq!(command_slot(redis::cmd("INCRBY").arg("foo").arg(3)), Some(12182));
        assert_eq!(command_slot(&redis::cmd("PING")), None);
        assert_eq!(command_slot(redis::cmd("CLIENT").arg("LIST")), None);
        assert_eq!(command_slot(redis::cmd("info").arg("cluster")), None);
        // Scripts: the first key after the key count.
        assert_eq!(
            command_slot(redis::cmd("EVALSHA").arg("abc").arg(2).arg("foo").arg("x")),
            Some(12182)
        );
        assert_eq!(command_slot(redis::cmd("EVAL").arg("return 1").arg(0).arg("foo")), None);
    }

    /// A prefix keeps a record in its key's slot, whatever braces the key
    /// holds: a tag, none, an unclosed or an empty one, a lone `}`.
    #[test]
    fn same_slot_prefixes() {
        for key in [
            "counter",
            "{user1}:c",
            "a{b",
            "foo{}{bar}",
            "a}b",
            "}",
            "x{}y}z",
            "é{ü}",
            "{",
        ] {
            let record = format!("{}:record", same_slot_prefix(key));
            assert_eq!(
                key_slot(record.as_bytes()),
                key_slot(key.as_bytes()),
                "{key} -> {record}"
            );
        }
        assert_eq!(same_slot_prefix("{user1}:c"), "{user1}");
        assert_eq!(same_slot_prefix("counter"), "{counter}");
    }

    /// A tag lands in the ranges asked for, however small.
    #[test]
    fn tags_land_in_their_ranges() {
        for ranges in [
            vec![(0, 5460)],
            vec![(10923, 16383)],
            vec![(7000, 7000)],
            vec![(1, 1), (16383, 16383)],
        ] {
            let tag = tag_in(&ranges).expect("a tag");
            let slot = key_slot(format!("{tag}probe").as_bytes());
            assert!(
                ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot)),
                "{tag} -> {slot}"
            );
        }
        assert_eq!(tag_in(&[]), None);
    }
}
