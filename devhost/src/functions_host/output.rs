//! The handler's stdout and stderr: captured for error messages and tests,
//! and echoed live with a prefix when asked.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Where [`capture`] echoes lines.
pub(super) enum Echo {
    /// Keep quiet.
    None,
    /// Print to stdout, prefixed with `[<label>]`.
    Stdout(String),
    /// Print to stderr, prefixed with `[<label>]`.
    Stderr(String),
}

/// Appends each line of `pipe` to `buf` (keeping at most `keep` bytes when
/// set) and echoes it as `echo` says.
pub(super) async fn capture(pipe: impl AsyncRead + Unpin, buf: Arc<Mutex<String>>, echo: Echo, keep: Option<usize>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let trimmed = text.trim_end_matches(['\n', '\r']);
                match &echo {
                    Echo::None => {}
                    Echo::Stdout(label) => println!("[{label}] {trimmed}"),
                    Echo::Stderr(label) => eprintln!("[{label}] {trimmed}"),
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
            }
        }
    }
}
