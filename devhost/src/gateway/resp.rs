//! Just enough RESP to stand between a client and `redis-server`: where a
//! command (an array of bulk strings, or an inline line) or a reply (any
//! RESP2 or RESP3 type) ends, and which replies are pushes.

/// Parses one RESP command (an array of bulk strings, or an inline line):
/// its length in bytes and its arguments, or `None` if incomplete.
pub fn parse_command(buf: &[u8]) -> Option<(usize, Vec<Vec<u8>>)> {
    if buf.first() != Some(&b'*') {
        let end = line_end(buf, 0)?;
        let args = buf[..end]
            .split(|b| *b == b' ')
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        return Some((end + 2, args));
    }
    let end = line_end(buf, 0)?;
    let count: usize = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
    let mut at = end + 2;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        if buf.get(at) != Some(&b'$') {
            return None;
        }
        let end = line_end(buf, at)?;
        let len: usize = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        let start = end + 2;
        if buf.len() < start + len + 2 {
            return None;
        }
        args.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    Some((at, args))
}

/// Encodes a command (or a push's elements) as an array of bulk strings.
pub fn encode(parts: &[Vec<u8>]) -> Vec<u8> {
    encode_with(b'*', parts)
}

/// Encodes a RESP3 push (`>`) of bulk strings.
pub fn encode_push(parts: &[&[u8]]) -> Vec<u8> {
    let owned: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    encode_with(b'>', &owned)
}

fn encode_with(kind: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(format!("{}\r\n", parts.len()).as_bytes());
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|p| from + p)
}

/// The length of the complete reply at the start of `buf`, or `None` when
/// more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    frame_end(buf, 0)
}

fn frame_end(buf: &[u8], at: usize) -> Option<usize> {
    let kind = *buf.get(at)?;
    let end = line_end(buf, at)?;
    let number = || -> Option<i64> { std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok() };
    match kind {
        // Simple string, error, integer, null, double, boolean, big number.
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(end + 2),
        // Bulk string, bulk error, verbatim string.
        b'$' | b'!' | b'=' => match number()? {
            n if n < 0 => Some(end + 2),
            n => {
                let stop = end + 2 + n as usize + 2;
                (buf.len() >= stop).then_some(stop)
            }
        },
        // Array, set, push; map and attribute hold pairs.
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number()?;
            if n < 0 {
                return Some(end + 2);
            }
            let items = if matches!(kind, b'%' | b'|') { 2 * n } else { n };
            let mut next = end + 2;
            for _ in 0..items {
                next = frame_end(buf, next)?;
            }
            // An attribute describes the reply that follows it: one frame.
            match kind {
                b'|' => frame_end(buf, next),
                _ => Some(next),
            }
        }
        // Not RESP: hand the whole line over as it is.
        _ => Some(end + 2),
    }
}

/// For a push frame (`>`), its kind (`message`, `subscribe`, `MOVING`...).
pub fn push_kind(frame: &[u8]) -> Option<String> {
    if frame.first() != Some(&b'>') {
        return None;
    }
    let head = line_end(frame, 0)? + 2;
    let inner_end = frame_end(frame, head)?;
    let item = &frame[head..inner_end];
    let text = match item.first()? {
        b'$' => {
            let le = line_end(item, 0)?;
            &item[le + 2..item.len() - 2]
        }
        b'+' => &item[1..item.len() - 2],
        _ => return None,
    };
    Some(String::from_utf8_lossy(text).into_owned())
}

/// Whether a push answers a command (a subscription's confirmation) rather
/// than arriving on its own (a message, a notification).
pub fn push_is_reply(kind: &str) -> bool {
    matches!(
        kind.to_ascii_lowercase().as_str(),
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe" | "sunsubscribe"
    )
}

/// How many replies `command` gets: one, but a subscription command gets
/// one confirmation per channel.
pub fn replies_for(args: &[Vec<u8>]) -> u64 {
    let name = args.first().map(|a| a.to_ascii_uppercase()).unwrap_or_default();
    match name.as_slice() {
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" | b"SUNSUBSCRIBE" => {
            (args.len().saturating_sub(1)).max(1) as u64
        }
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RESP2 and RESP3 type ends where it should, nested and with
    /// nulls; an incomplete frame asks for more.
    #[test]
    fn frame_lengths() {
        let frames: [&[u8]; 14] = [
            b"+OK\r\n",
            b"-ERR wrong\r\n",
            b":42\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"*-1\r\n",
            b"_\r\n",
            b",3.14\r\n",
            b"#t\r\n",
            b"%1\r\n+server\r\n+redis\r\n",
            b"~2\r\n:1\r\n:2\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\nhey\r\n",
            b"=15\r\ntxt:Some string\r\n",
        ];
        for frame in frames {
            let mut buf = frame.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(frame_len(&buf), Some(frame.len()), "{}", String::from_utf8_lossy(frame));
            assert_eq!(
                frame_len(&frame[..frame.len() - 1]),
                None,
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
        assert_eq!(frame_len(b""), None);
    }

    /// Push kinds, and which pushes answer a command.
    #[test]
    fn pushes() {
        let msg = encode_push(&[b"message", b"AzureRedisEvents", b"x|y"]);
        assert_eq!(frame_len(&msg), Some(msg.len()));
        assert_eq!(push_kind(&msg).as_deref(), Some("message"));
        assert!(!push_is_reply("message"));
        assert!(push_is_reply("subscribe"));
        assert_eq!(push_kind(b"+OK\r\n"), None);
        let moving = b">4\r\n$6\r\nMOVING\r\n:17\r\n:15\r\n$19\r\n54.78.247.156:12075\r\n";
        assert_eq!(push_kind(moving).as_deref(), Some("MOVING"));
        assert_eq!(frame_len(moving), Some(moving.len()));
    }

    /// Commands parse as arrays or inline lines; subscriptions expect one
    /// confirmation per channel.
    #[test]
    fn commands() {
        let cmd = encode(&[b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
        assert_eq!(
            parse_command(&cmd),
            Some((cmd.len(), vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]))
        );
        assert_eq!(parse_command(&cmd[..cmd.len() - 1]), None);
        assert_eq!(parse_command(b"PING\r\n"), Some((6, vec![b"PING".to_vec()])));
        assert_eq!(replies_for(&[b"GET".to_vec(), b"k".to_vec()]), 1);
        assert_eq!(replies_for(&[b"subscribe".to_vec(), b"a".to_vec(), b"b".to_vec()]), 2);
    }
}
