//! Free loopback ports.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use crate::error::Error;

/// Ports already handed out by this process: the kernel may offer a port again once its
/// probe socket is closed, while the component meant to use it has not bound it yet.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

const MAX_ATTEMPTS: usize = 64;

/// Returns a port on 127.0.0.1 that is free now and was not returned before.
pub(crate) fn free_port() -> Result<u16, Error> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..MAX_ATTEMPTS {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(Error::NoFreePort)?
            .port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(Error::NoFreePort(std::io::Error::other(format!(
        "the kernel kept offering already used ports ({MAX_ATTEMPTS} attempts)"
    ))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct() {
        let ports: BTreeSet<u16> = (0..20).map(|_| free_port().unwrap()).collect();
        assert_eq!(ports.len(), 20);
    }
}
