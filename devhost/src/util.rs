//! Small helpers shared by the emulators: free loopback ports and random ids.

use std::net::{Ipv4Addr, TcpListener};

/// Asks the OS for a free TCP port on 127.0.0.1 (bind to port 0, read it,
/// release it). There is a small window in which another process could take
/// it; on a test machine that is acceptable.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// A loopback port that refuses every connection for as long as this
/// lives: a socket bound to it that never listens. Unlike a port found free
/// and released, it cannot be handed to another test's server meanwhile
/// (tests run side by side and ask for free ports all the time).
#[derive(Debug)]
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl RefusingPort {
    /// Binds a new one on 127.0.0.1.
    pub fn new() -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let port = socket.local_addr()?.port();
        Ok(Self { _socket: socket, port })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// `n` bytes from the OS random source.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("OS random source unavailable");
    buf
}

/// `n` random bytes as lowercase hex (2n characters).
pub(crate) fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// A random version-4 UUID in its usual 8-4-4-4-12 text form.
pub(crate) fn uuid_v4() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Puts the child spawned by `cmd` in its own process group (a terminal's
/// Ctrl-C then reaches only this process, which stops the child in order)
/// and, on Linux, makes the kernel send it `signal` when the spawning thread
/// exits (so when this process dies, even by SIGKILL), raising it at once if
/// the parent is already gone.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid is always safe to call.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs between fork and exec and only calls
        // async-signal-safe functions (prctl, getppid, raise).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::raise(signal);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = signal;
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_has_v4_shape() {
        let u = super::uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(u.matches('-').count(), 4);
    }
}
