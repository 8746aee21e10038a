//! Who is on the other end of an API connection, for the upload quota: on
//! loopback, the local user that owns the client's socket (as `identd`
//! would tell, from the kernel's socket table in `/proc/net/tcp{,6}`);
//! otherwise, or when the table does not say, the client's address.

use crate::builds::quota::ClientId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The client of the connection from `peer` to `local` (the API's own
/// address on that connection).
pub async fn client_of(peer: SocketAddr, local: Option<SocketAddr>) -> ClientId {
    let by_address = ClientId::Addr(peer.ip());
    let Some(local) = local.filter(|_| peer.ip().is_loopback()) else {
        return by_address;
    };
    let owner = tokio::task::spawn_blocking(move || {
        let table = if peer.is_ipv4() {
            "/proc/net/tcp"
        } else {
            "/proc/net/tcp6"
        };
        std::fs::read_to_string(table)
            .ok()
            .and_then(|text| owner_in(&text, peer, local))
    })
    .await
    .ok()
    .flatten();
    owner.map_or(by_address, ClientId::Uid)
}

/// The uid of the one established socket in `table` (the text of
/// `/proc/net/tcp` or `tcp6`) whose local end is `peer` and whose remote end
/// is `local`'s port on a loopback address: the client's side of the
/// connection. `None` unless exactly one socket fits.
fn owner_in(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let mut owners = table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (ours, theirs, state, uid) = (
            fields.get(1)?,
            fields.get(2)?,
            fields.get(3)?,
            fields.get(7)?,
        );
        let theirs = parse_addr(theirs)?;
        // 01: TCP_ESTABLISHED.
        let fits = *state == "01"
            && parse_addr(ours)? == peer
            && theirs.port() == local.port()
            && (theirs.ip() == local.ip() || theirs.ip().is_loopback());
        fits.then(|| uid.parse::<u32>().ok()).flatten()
    });
    let first = owners.next()?;
    owners.next().is_none().then_some(first)
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6), as the kernel
/// prints them: each 32-bit word in the machine's byte order, the port as a
/// number.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as a little-endian kernel prints them: a client on
    // 127.0.0.1:40000 (uid 1000) connected to the API on 127.0.0.1:4002,
    // the API's side of it (uid 0), and the listener.
    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0FA2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:9C40 0100007F:0FA2 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n   2: 0100007F:0FA2 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";

    #[test]
    fn the_clients_side_of_the_connection_names_its_owner() {
        if cfg!(target_endian = "big") {
            return;
        }
        let api: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(owner_in(TABLE, client, api), Some(1000));
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(owner_in(TABLE, other, api), None);
        let elsewhere: SocketAddr = "127.0.0.1:4003".parse().unwrap();
        assert_eq!(owner_in(TABLE, client, elsewhere), None);
        let twice = format!(
            "{TABLE}{}",
            TABLE.lines().nth(2).unwrap().replace(" 1000 ", " 1001 ")
        );
        assert_eq!(owner_in(&twice, client, api), None, "two owners: unknown");
    }

    #[test]
    fn ipv6_words_are_in_machine_order() {
        if cfg!(target_endian = "big") {
            return;
        }
        let loopback = parse_addr("00000000000000000000000001000000:0FA2").unwrap();
        assert_eq!(loopback, "[::1]:4002".parse().unwrap());
        let mapped = parse_addr("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(mapped, "[::ffff:127.0.0.1]:80".parse().unwrap());
    }

    #[tokio::test]
    async fn a_real_loopback_connection_is_ours() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = rustix::process::geteuid().as_raw();
        let local = listener.local_addr().ok();
        assert_eq!(client_of(peer, local).await, ClientId::Uid(me));
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(client_of(remote, local).await, ClientId::Addr(remote.ip()));
    }
}
