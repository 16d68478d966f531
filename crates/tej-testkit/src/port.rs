//! Free loopback ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// Ports already handed out by this process, so parallel tests never get the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, release).
///
/// Another process may still take it before the caller binds it, so servers started by
/// this kit retry with a new port when theirs is taken. Within one process, a port is
/// never handed out twice.
///
/// # Panics
///
/// When no socket can be bound on 127.0.0.1 at all.
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let seen = guard.get_or_insert_with(HashSet::new);
    let mut last = 0;
    for _ in 0..200 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind a TCP socket on 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("read the local address of a bound socket")
            .port();
        drop(listener);
        last = port;
        if seen.insert(port) {
            return port;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_not_repeated_within_a_process() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
        assert!(!ports.contains(&0));
    }
}
