//! `split::client_ip` over arbitrary X-Forwarded-For values and trusted
//! nets: never panics; an untrusted peer is always the answer; the answer
//! is always the peer or an address written in one of the headers.
#![no_main]

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    peer: IpAddr,
    nets: Vec<(IpAddr, u8)>,
    xff: Vec<Vec<u8>>,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fuzz_target!(|input: Input| {
    let trusted: Vec<IpNet> =
        input.nets.iter().take(8).filter_map(|&(ip, len)| IpNet::new(ip, len % 129).ok()).collect();
    let mut headers = HeaderMap::new();
    let mut written = Vec::new();
    let mut last_value = None;
    for raw in input.xff.iter().take(8) {
        let Ok(value) = HeaderValue::from_bytes(raw) else { continue };
        if let Ok(text) = value.to_str() {
            for entry in text.split(',') {
                let entry = entry.trim();
                if let Ok(ip) = entry.parse::<IpAddr>() {
                    written.push(canonical(ip));
                } else if let Ok(sa) = entry.parse::<std::net::SocketAddr>() {
                    written.push(canonical(sa.ip()));
                }
            }
        }
        last_value = Some(value.clone());
        headers.append("x-forwarded-for", value);
    }
    let got = grayshift::proxy::split::client_ip(input.peer, &headers, &trusted);
    let peer_trusted = trusted.iter().any(|n| n.contains(&canonical(input.peer)));
    if !peer_trusted {
        assert_eq!(got, input.peer, "untrusted peer");
    }
    assert!(got == input.peer || written.contains(&got), "{got} is neither the peer nor written");
    // A trusted peer whose nearest entry is a readable untrusted address:
    // that address is the client.
    let nearest = last_value.as_ref().and_then(|v| v.to_str().ok()?.rsplit(',').next()?.trim().parse::<IpAddr>().ok());
    if let Some(ip) = nearest.map(canonical) {
        if peer_trusted && !trusted.iter().any(|n| n.contains(&ip)) {
            assert_eq!(got, ip, "nearest untrusted hop");
        }
    }
});
