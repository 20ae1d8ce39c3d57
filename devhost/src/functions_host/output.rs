//! The handler's stdout and stderr: captured for error messages and tests,
//! and echoed live with a prefix when asked.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Where [`capture`] echoes lines.
pub(super) enum Echo {
    /// Keep quiet.
    None,
    /// Print to stdout, prefixed with `[<label>]`.
    Stdout(String),
    /// Print to stderr, prefixed with `[<label>]`.
    Stderr(String),
}

/// Appends what `pipe` says to `buf` (keeping at most `keep` bytes when
/// set) and echoes each line as `echo` says. Reads in chunks and appends
/// whole lines, so a handler logging tens of thousands of lines a second
/// costs one lock per chunk, not per line.
pub(super) async fn capture(
    mut pipe: impl AsyncRead + Unpin,
    buf: Arc<Mutex<String>>,
    echo: Echo,
    keep: Option<usize>,
) {
    let mut chunk = vec![0; 64 * 1024];
    let mut pending = Vec::new();
    loop {
        let n = pipe.read(&mut chunk).await.unwrap_or(0);
        pending.extend_from_slice(&chunk[..n]);
        // Whole lines only (a character may be cut between chunks), and at
        // the end whatever is left.
        let end = match pending.iter().rposition(|&b| b == b'\n') {
            _ if n == 0 => pending.len(),
            Some(i) => i + 1,
            None => continue,
        };
        let text = String::from_utf8_lossy(&pending[..end]);
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim_end_matches(['\n', '\r']);
            match &echo {
                Echo::None => break,
                Echo::Stdout(label) => println!("[{label}] {trimmed}"),
                Echo::Stderr(label) => eprintln!("[{label}] {trimmed}"),
            }
        }
        let mut b = buf.lock().unwrap();
        b.push_str(&text);
        if let Some(max) = keep.filter(|max| b.len() > 2 * max) {
            let mut cut = b.len() - max;
            while !b.is_char_boundary(cut) {
                cut += 1;
            }
            b.drain(..cut);
        }
        drop(b);
        pending.drain(..end);
        if n == 0 {
            return;
        }
    }
}
