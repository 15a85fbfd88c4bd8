//! `Splitter::routing_key` + `bucket` over arbitrary headers and cookies:
//! never panics; the key is a header/cookie value or the client IP; the
//! bucket is murmur3_x86_32(group:key) mod 100 and the same every time.
#![no_main]

use std::net::IpAddr;

use grayshift::config::SplitConfig;
use grayshift::proxy::split::{IpText, KeySource, Splitter};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = ["x-user-id", "x-tenant", "cookie", "x-other"];

#[derive(Arbitrary, Debug)]
enum Source {
    Header(u8),
    Cookie(String),
    ClientIp,
}

#[derive(Arbitrary, Debug)]
struct Input {
    group: String,
    sources: Vec<Source>,
    headers: Vec<(u8, Vec<u8>)>,
    client: IpAddr,
}

/// murmur3_x86_32, seed 0, from the reference algorithm.
fn murmur3_32(data: &[u8]) -> u32 {
    let mix = |k: u32| k.wrapping_mul(0xcc9e_2d51).rotate_left(15).wrapping_mul(0x1b87_3593);
    let mut h: u32 = 0;
    let blocks = data.chunks_exact(4);
    let tail = blocks.remainder();
    for block in blocks {
        h ^= mix(u32::from_le_bytes(block.try_into().unwrap()));
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    if !tail.is_empty() {
        h ^= mix(tail.iter().enumerate().fold(0u32, |k, (i, &b)| k | (u32::from(b) << (8 * i))));
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|input: Input| {
    if input.group.is_empty() {
        return;
    }
    let mut key: Vec<KeySource> = input
        .sources
        .iter()
        .take(6)
        .map(|s| match s {
            Source::Header(i) => KeySource::Header(HeaderName::from_static(NAMES[*i as usize % NAMES.len()])),
            Source::Cookie(name) => KeySource::Cookie(name.clone()),
            Source::ClientIp => KeySource::ClientIp,
        })
        .collect();
    if key.is_empty() {
        key.push(KeySource::ClientIp);
    }
    let first_is_ip = key[0] == KeySource::ClientIp;
    let splitter = Splitter::new(&SplitConfig {
        percent: 50,
        group: input.group.clone(),
        key,
        force_new: Default::default(),
        force_stable: Default::default(),
        trusted_proxies: vec![],
        fallback_to_stable: true,
        expose_pool: true,
    });
    let mut headers = HeaderMap::new();
    for (i, raw) in input.headers.iter().take(16) {
        if let Ok(value) = HeaderValue::from_bytes(raw) {
            headers.append(NAMES[*i as usize % NAMES.len()], value);
        }
    }
    let ip_text = IpText::new(input.client);
    assert_eq!(ip_text.as_bytes(), input.client.to_string().as_bytes());
    let key = splitter.routing_key(&headers, ip_text.as_bytes());
    if first_is_ip {
        assert_eq!(key, ip_text.as_bytes());
    }
    assert!(key == ip_text.as_bytes() || headers.values().any(|v| !key.is_empty() && contains(v.as_bytes(), key)));
    let bucket = splitter.bucket(key);
    assert!(bucket < 100);
    let hashed = [format!("{}:", input.group).as_bytes(), key].concat();
    assert_eq!(u32::from(bucket), murmur3_32(&hashed) % 100);
    let again = headers.clone();
    let key_again = splitter.routing_key(&again, ip_text.as_bytes());
    assert_eq!(key, key_again);
    assert_eq!(bucket, splitter.bucket(key_again));
});
