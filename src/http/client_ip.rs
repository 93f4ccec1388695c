//! The client's address behind a load balancer: when the connection comes from one of
//! `IPTO_TRUSTED_PROXIES`, the client is the right-most address of `X-Forwarded-For` that is not
//! itself a trusted proxy (each proxy appends the address it saw, so entries left of an untrusted
//! hop are the client's own claims and are never believed). Without the setting, or from any
//! other peer, the header is ignored and the client is the socket's peer, as before.
//!
//! The per-IP buckets of signup and login and the failure budget of credential checks read the
//! address this resolves (the connection's `ConnectInfo`, replaced in the request).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::http::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Replaces the request's peer address with the forwarded client's, when the peer is trusted.
pub fn resolve(request: &mut Request, trusted: &[IpNet]) {
    if trusted.is_empty() {
        return;
    }
    let Some(ConnectInfo(peer)) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    else {
        return;
    };
    if let Some(client) = forwarded_client(peer.ip(), request.headers(), trusted) {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
    }
}

/// The client `peer` forwards for, if `peer` is a trusted proxy and the header names one.
pub fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !is_trusted(peer) {
        return None;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        hops.extend(value.to_str().ok()?.split(','));
    }
    let mut client = None;
    for hop in hops.iter().rev() {
        // An entry that is not an address ends the chain: nothing left of it is believed.
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = Some(ip.to_canonical());
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_network;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| parse_network(n).unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = nets(&["10.0.0.0/8"]);
        let forged = headers(&["1.2.3.4"]);
        assert_eq!(forwarded_client(ip("192.0.2.7"), &forged, &trusted), None);
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1"]);
        // The client claimed 6.6.6.6; the edge proxy saw 203.0.113.9; an inner proxy saw the edge.
        let chain = headers(&["6.6.6.6, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &chain, &trusted),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_malformed_hop_ends_the_chain_and_no_header_changes_nothing() {
        let trusted = nets(&["127.0.0.1"]);
        let chain = headers(&["6.6.6.6, junk, 10.9.9.9"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &chain, &trusted),
            Some(ip("10.9.9.9"))
        );
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &headers(&["junk"]), &trusted),
            None
        );
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &HeaderMap::new(), &trusted),
            None
        );
    }

    #[test]
    fn mapped_ipv6_peers_match_their_ipv4_networks_and_settings_parse() {
        let trusted = nets(&["127.0.0.0/8"]);
        assert_eq!(
            forwarded_client(ip("::ffff:127.0.0.1"), &headers(&["2001:db8::1"]), &trusted),
            Some(ip("2001:db8::1"))
        );
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("nonsense").is_err());
        assert_eq!(parse_network(" ::1 ").unwrap().prefix_len(), 128);
    }
}
