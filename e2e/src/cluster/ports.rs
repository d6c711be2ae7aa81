//! Free loopback ports.

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};

use crate::error::Error;

/// Ports already handed out by this process: the kernel may offer a port again once its
/// probe socket is closed, while the component meant to use it has not bound it yet.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Loopback addresses (with their port) already handed out by [`free_loopback_address`].
static HANDED_OUT_ADDRESSES: Mutex<BTreeSet<SocketAddr>> = Mutex::new(BTreeSet::new());

const MAX_ATTEMPTS: usize = 64;

/// Returns a port on 127.0.0.1 that is free now and was not returned before.
pub fn free_port() -> Result<u16, Error> {
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

/// Returns an address `127.1.x.y:port` (never 127.0.0.1) where `port` is free now and that
/// was not returned before, so that several servers can each listen on the same
/// conventional port (e.g. 8545 for Ethereum JSON-RPC) at once, as pods of different
/// Services would. Linux routes all of 127.0.0.0/8 to the loopback interface, so nothing
/// needs to be configured. `port` 0 lets the kernel pick a free port on the address.
///
/// Fails if the port is taken on every address tried, e.g. because something listens on
/// `0.0.0.0:port`.
pub fn free_loopback_address(port: u16) -> Result<SocketAddr, Error> {
    let mut handed_out = HANDED_OUT_ADDRESSES
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Randomly keyed per call, so separate test processes pick different addresses too.
    let random = RandomState::new();
    let mut last_error = None;
    for attempt in 0..MAX_ATTEMPTS {
        let [.., high, low] = random.hash_one(attempt).to_le_bytes();
        // 127.1.0.0/16 without the .0 and .255 host parts.
        let ip = Ipv4Addr::new(127, 1, high, low.clamp(1, 254));
        match TcpListener::bind((ip, port)).and_then(|listener| listener.local_addr()) {
            Ok(address) => {
                if handed_out.insert(address) {
                    return Ok(address);
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(Error::NoFreeLoopbackAddress {
        port,
        source: last_error.unwrap_or_else(|| {
            std::io::Error::other(format!(
                "only already handed out addresses were found ({MAX_ATTEMPTS} attempts)"
            ))
        }),
    })
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

    #[test]
    fn loopback_addresses_share_a_port() {
        let addresses: BTreeSet<SocketAddr> = (0..10)
            .map(|_| free_loopback_address(8545).unwrap())
            .collect();
        assert_eq!(addresses.len(), 10);
        for address in &addresses {
            let SocketAddr::V4(v4) = address else {
                panic!("{address} is not IPv4");
            };
            assert_eq!(v4.port(), 8545);
            assert_eq!(v4.ip().octets()[..2], [127, 1], "{address}");
        }
        // All of them can be listened on at once.
        let listeners: Vec<TcpListener> = addresses
            .iter()
            .map(|address| TcpListener::bind(address).unwrap())
            .collect();
        assert_eq!(listeners.len(), 10);
    }

    #[test]
    fn loopback_address_with_any_port() {
        let address = free_loopback_address(0).unwrap();
        assert_ne!(address.port(), 0);
    }
}
