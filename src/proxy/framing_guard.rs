//! Refuses a request carrying both Content-Length and Transfer-Encoding
//! (RFC 9112 §6.1), which hyper would otherwise accept: it drops the
//! Content-Length while parsing, frames the body as chunked and closes
//! afterwards, so the request handler never sees the conflict.
//!
//! [`FramingGuard`] follows the request framing of an HTTP/1 connection
//! on the bytes as they are read from the client, before hyper sees them: request heads, then each body as hyper will frame it
//! (Content-Length, chunked, or none), then the next head. When the second
//! of the two field names completes in a head, the guard overwrites its
//! `:` with a NUL, which is invalid in a field name: httparse fails, and
//! hyper itself answers `400 Bad Request` and closes the connection — for
//! the first request of a connection and for any later one alike.
//!
//! The guard only ever changes that one byte, and only while it is sure
//! where it is in the stream. Whatever it does not follow exactly as hyper
//! does (a chunk size hyper would refuse, an `Upgrade` or `CONNECT` request
//! after which the bytes may become a tunnel, an HTTP/1.0 request with
//! Transfer-Encoding, a Content-Length list, a head over the size limit,
//! ...) turns it off for the rest of the connection: hyper refuses the
//! malformed cases on its own, and a guard that is off changes nothing.
//! Every framing it does follow is one hyper accepts and frames the same
//! way (`hyper::proto::h1::role::Server::parse` and `decode.rs` in 1.12),
//! so it cannot take body bytes for a head.
//!
//! The cost is small and nothing is allocated: a head is searched for its
//! line feeds eight bytes at a time and only lines starting with `c`, `t`
//! or `u` are looked at further; a Content-Length body costs O(1) per
//! read, a chunked body a few instructions per chunk. Under
//! `benches/load/callgrind.sh` (small keep-alive GETs, 65-byte heads) the
//! guard costs about 400 instructions per request, of some 28 000.

use crate::proxy::path::hex;

/// The byte written over the `:` of the conflicting field. httparse refuses
/// a NUL after a field name even when told to ignore invalid header lines.
const REJECT: u8 = 0;

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const UPGRADE: &[u8] = b"upgrade";
const CHUNKED: &[u8] = b"chunked";

const HTTP_11: u64 = u64::from_be_bytes(*b"HTTP/1.1");
const HTTP_10: u64 = u64::from_be_bytes(*b"HTTP/1.0");
const CONNECT: u64 = u64::from_be_bytes(*b"CONNECT ");

// Facts about the current head.
const SEEN_CL: u8 = 1;
const SEEN_TE: u8 = 1 << 1;
const HTTP10: u8 = 1 << 2;
/// The guard cannot follow the body (hyper refuses it, or it is not
/// chunked), or the bytes after this head may not be HTTP (an upgrade):
/// off once the head is complete.
const OFF_AFTER_HEAD: u8 = 1 << 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    // Head states first: `in_head` relies on the order.
    /// Before a request line: empty lines are skipped (as httparse does).
    Start,
    /// A CR before the request line; an LF must follow.
    StartLf,
    RequestLine,
    /// At the start of a field line, or of the empty line ending the head.
    LineStart,
    /// A CR at the start of a line: the head ends with the LF.
    HeadEndLf,
    /// A field name that may still be `self.name`; `name_len` bytes match.
    Name,
    /// The rest of a line of no interest.
    SkipLine,
    ClValue,
    TeValue,
    // Body states.
    /// A Content-Length body, `remaining` bytes left.
    Fixed,
    ChunkStart,
    ChunkSize,
    ChunkLws,
    ChunkExt,
    ChunkSizeLf,
    /// Chunk data, `remaining` bytes left.
    ChunkData,
    ChunkDataCr,
    ChunkDataLf,
    /// After the last chunk's size line, and after each trailer line.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    /// Not following the connection (any more): bytes pass untouched.
    Off,
}

/// Follows the request framing of one HTTP/1 connection; see the module
/// documentation. Feed it every byte read from the client, in order.
#[derive(Debug, Clone)]
pub struct FramingGuard {
    state: State,
    /// hyper's `max_header_size`: a longer head is refused by hyper (431).
    max_head: usize,
    /// Bytes of the current head so far, counted from where hyper's parse
    /// starts (empty lines before the request line included).
    head_len: usize,
    flags: u8,
    /// The Content-Length of this head, once one was read.
    content_length: Option<u64>,
    /// Request line: its length, first 8 bytes and last 9 bytes.
    line_len: usize,
    line_first: u64,
    line_last: u128,
    /// The field name being matched and how many bytes of it match.
    name: &'static [u8],
    name_len: usize,
    /// Field value parsing: the Content-Length so far; where in the value
    /// (or in its last list element) we are; how much of `chunked` the
    /// element matches, or `mismatch`; `bad` for a value hyper refuses.
    value: u64,
    phase: Phase,
    matched: usize,
    mismatch: bool,
    bad: bool,
    /// Body bytes left (Content-Length body or the current chunk).
    remaining: u64,
}

/// What a whole field line was.
enum Line {
    Field,
    HeadEnd,
    /// The conflict: the line's `:` is overwritten, the guard is off.
    Refused,
    /// Not a line the guard can follow.
    Stop,
}

/// Where in a field value (or in one list element of it) we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Whitespace before the first character.
    Before,
    In,
    /// Whitespace after it.
    After,
}

impl FramingGuard {
    /// A guard for a new HTTP/1 connection; `max_head` is the head size
    /// limit hyper enforces (`max_header_size`).
    pub fn new(max_head: usize) -> Self {
        FramingGuard {
            state: State::Start,
            max_head,
            head_len: 0,
            flags: 0,
            content_length: None,
            line_len: 0,
            line_first: 0,
            line_last: 0,
            name: CONTENT_LENGTH,
            name_len: 0,
            value: 0,
            phase: Phase::Before,
            matched: 0,
            mismatch: false,
            bad: false,
            remaining: 0,
        }
    }

    /// A guard that never looks at anything (HTTP/2 connections).
    pub fn off() -> Self {
        FramingGuard { state: State::Off, ..FramingGuard::new(0) }
    }

    /// Whether the guard has stopped following the connection for good.
    #[inline]
    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    fn in_head(&self) -> bool {
        self.state <= State::TeValue
    }

    /// Look at the next bytes read from the client, in place. Returns true
    /// when they complete a head with both Content-Length and
    /// Transfer-Encoding: a `:` has then been overwritten so that hyper
    /// refuses the request, and the guard is off.
    pub fn inspect(&mut self, buf: &mut [u8]) -> bool {
        if self.state == State::Off {
            return false;
        }
        let len = buf.len();
        // Where the current head's bytes begin in `buf`, for its length.
        let mut head_from = 0;
        let mut i = 0;
        while i < len {
            let b = buf[i];
            match self.state {
                State::Off => return false,
                State::Start => match b {
                    b'\r' => {
                        self.state = State::StartLf;
                        i += 1;
                    }
                    b'\n' => i += 1,
                    _ => {
                        self.line_len = 0;
                        self.line_first = 0;
                        self.line_last = 0;
                        self.state = State::RequestLine;
                    }
                },
                State::StartLf => {
                    if b != b'\n' {
                        return self.stop(); // httparse refuses a lone CR
                    }
                    self.state = State::Start;
                    i += 1;
                }
                State::RequestLine => {
                    let end = find(&buf[i..], b'\n').map_or(len, |p| i + p);
                    if self.line_len == 0 && end < len {
                        // The whole line in this read (the usual case).
                        if !self.request_line(&buf[i..end]) {
                            return self.stop();
                        }
                        self.state = State::LineStart;
                        i = end + 1;
                        continue;
                    }
                    let part = &buf[i..end];
                    for &c in part.iter().take(8usize.saturating_sub(self.line_len)) {
                        self.line_first = (self.line_first << 8) | u64::from(c);
                    }
                    for &c in &part[part.len().saturating_sub(9)..] {
                        self.line_last = (self.line_last << 8) | u128::from(c);
                    }
                    self.line_len += part.len();
                    if end == len {
                        i = len;
                    } else {
                        let mut last = self.line_last;
                        if last as u8 == b'\r' {
                            last >>= 8;
                        }
                        let first = if self.line_len >= 8 { self.line_first } else { 0 };
                        if self.line_len < 8 || !self.request_line_parts(first, last as u64) {
                            return self.stop();
                        }
                        self.state = State::LineStart;
                        i = end + 1;
                    }
                }
                State::LineStart => {
                    // Whole lines in this read (the usual case).
                    let mut head_end = false;
                    while let Some(p) = find(&buf[i..], b'\n') {
                        let line = i..i + p;
                        i += p + 1;
                        match self.field_line(&mut buf[line]) {
                            Line::Field => {}
                            Line::HeadEnd => {
                                head_end = true;
                                break;
                            }
                            Line::Refused => return true,
                            Line::Stop => return self.stop(),
                        }
                    }
                    if head_end {
                        if !self.head_done(i - head_from) {
                            return self.stop();
                        }
                        head_from = i;
                        continue;
                    }
                    if i == len {
                        continue;
                    }
                    // The start of a line that ends in a later read.
                    let b = buf[i];
                    i += 1;
                    match b.to_ascii_lowercase() {
                        b'\r' => self.state = State::HeadEndLf,
                        b'\n' => {
                            if !self.head_done(i - head_from) {
                                return self.stop();
                            }
                            head_from = i;
                        }
                        b'c' => self.name(CONTENT_LENGTH),
                        b't' => self.name(TRANSFER_ENCODING),
                        b'u' => self.name(UPGRADE),
                        _ => self.state = State::SkipLine,
                    }
                }
                State::HeadEndLf => {
                    if b != b'\n' {
                        return self.stop();
                    }
                    i += 1;
                    if !self.head_done(i - head_from) {
                        return self.stop();
                    }
                    head_from = i;
                }
                State::Name => {
                    if self.name_len == self.name.len() {
                        if b == b':' {
                            if self.field_name_done() {
                                buf[i] = REJECT;
                                self.state = State::Off;
                                return true;
                            }
                            i += 1;
                        } else {
                            self.state = State::SkipLine; // a longer name
                        }
                    } else if b.to_ascii_lowercase() == self.name[self.name_len] {
                        self.name_len += 1;
                        i += 1;
                    } else {
                        self.state = State::SkipLine; // looked at again there
                    }
                }
                State::SkipLine => match find(&buf[i..], b'\n') {
                    Some(p) => {
                        i += p + 1;
                        self.state = State::LineStart;
                    }
                    None => i = len,
                },
                State::ClValue => {
                    i += 1;
                    if b == b'\n' {
                        self.content_length_done();
                        self.state = State::LineStart;
                    } else {
                        self.content_length_byte(b);
                    }
                }
                State::TeValue => {
                    i += 1;
                    if b == b'\n' {
                        self.transfer_encoding_done();
                        self.state = State::LineStart;
                    } else {
                        self.transfer_encoding_byte(b);
                    }
                }
                State::Fixed => {
                    let n = self.remaining.min((len - i) as u64);
                    self.remaining -= n;
                    i += n as usize;
                    if self.remaining == 0 {
                        self.next_head();
                        head_from = i;
                    }
                }
                State::ChunkStart => match hex(b) {
                    Some(d) => {
                        self.remaining = u64::from(d);
                        self.state = State::ChunkSize;
                        i += 1;
                    }
                    None => return self.stop(),
                },
                State::ChunkSize => {
                    i += 1;
                    match b {
                        b'\t' | b' ' => self.state = State::ChunkLws,
                        b';' => self.state = State::ChunkExt,
                        b'\r' => self.state = State::ChunkSizeLf,
                        _ => {
                            let size = hex(b).and_then(|d| self.remaining.checked_mul(16)?.checked_add(u64::from(d)));
                            match size {
                                Some(size) => self.remaining = size,
                                None => return self.stop(),
                            }
                        }
                    }
                }
                State::ChunkLws => {
                    i += 1;
                    match b {
                        b'\t' | b' ' => {}
                        b';' => self.state = State::ChunkExt,
                        b'\r' => self.state = State::ChunkSizeLf,
                        _ => return self.stop(),
                    }
                }
                State::ChunkExt => match buf[i..].iter().position(|&c| c == b'\r' || c == b'\n') {
                    Some(p) if buf[i + p] == b'\r' => {
                        i += p + 1;
                        self.state = State::ChunkSizeLf;
                    }
                    Some(_) => return self.stop(), // hyper refuses an LF in an extension
                    None => i = len,
                },
                State::ChunkSizeLf => {
                    if b != b'\n' {
                        return self.stop();
                    }
                    i += 1;
                    self.state = if self.remaining == 0 { State::EndCr } else { State::ChunkData };
                }
                State::ChunkData => {
                    let n = self.remaining.min((len - i) as u64);
                    self.remaining -= n;
                    i += n as usize;
                    if self.remaining == 0 {
                        self.state = State::ChunkDataCr;
                    }
                }
                State::ChunkDataCr => {
                    if b != b'\r' {
                        return self.stop();
                    }
                    i += 1;
                    self.state = State::ChunkDataLf;
                }
                State::ChunkDataLf => {
                    if b != b'\n' {
                        return self.stop();
                    }
                    i += 1;
                    self.state = State::ChunkStart;
                }
                State::EndCr => {
                    // Any other byte, even an LF, begins a trailer line.
                    i += 1;
                    self.state = if b == b'\r' { State::EndLf } else { State::Trailer };
                }
                State::Trailer => match buf[i..].iter().position(|&c| c == b'\r') {
                    Some(p) => {
                        i += p + 1;
                        self.state = State::TrailerLf;
                    }
                    None => i = len,
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return self.stop();
                    }
                    i += 1;
                    self.state = State::EndCr;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return self.stop();
                    }
                    i += 1;
                    self.next_head();
                    head_from = i;
                }
            }
        }
        if self.in_head() {
            self.head_len += len - head_from;
            if self.head_len > self.max_head {
                return self.stop(); // hyper answers 431
            }
        }
        false
    }

    fn stop(&mut self) -> bool {
        self.state = State::Off;
        false
    }

    fn next_head(&mut self) {
        self.state = State::Start;
        self.head_len = 0;
        self.flags = 0;
        self.content_length = None;
    }

    /// A whole request line, without its LF. False if it is not one the
    /// guard can follow.
    fn request_line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (Some(first), Some(last)) = (line.first_chunk::<8>(), line.last_chunk::<8>()) else {
            return false; // "GET / HTTP/1.1" is 14
        };
        self.request_line_parts(u64::from_be_bytes(*first), u64::from_be_bytes(*last))
    }

    /// The request line's first 8 bytes and its last 8 before the line
    /// end, big-endian.
    fn request_line_parts(&mut self, first: u64, version: u64) -> bool {
        match version {
            HTTP_11 => {}
            HTTP_10 => self.flags |= HTTP10,
            _ => return false,
        }
        if first == CONNECT {
            self.flags |= OFF_AFTER_HEAD; // a tunnel may follow
        }
        true
    }

    /// A whole field line (or the empty line), without its LF.
    fn field_line(&mut self, line: &mut [u8]) -> Line {
        let name = match line.first().map(u8::to_ascii_lowercase) {
            None | Some(b'\r') if line.len() <= 1 => return Line::HeadEnd,
            Some(b'\r') => return Line::Stop, // httparse refuses a lone CR
            Some(b'c') => CONTENT_LENGTH,
            Some(b't') => TRANSFER_ENCODING,
            Some(b'u') => UPGRADE,
            _ => return Line::Field,
        };
        if line.get(name.len()) != Some(&b':') || !line[..name.len()].eq_ignore_ascii_case(name) {
            return Line::Field;
        }
        self.name = name;
        if self.field_name_done() {
            line[name.len()] = REJECT;
            self.state = State::Off;
            return Line::Refused;
        }
        let value = &line[name.len() + 1..];
        match self.state {
            State::ClValue => {
                value.iter().for_each(|&b| self.content_length_byte(b));
                self.content_length_done();
            }
            State::TeValue => {
                value.iter().for_each(|&b| self.transfer_encoding_byte(b));
                self.transfer_encoding_done();
            }
            _ => {}
        }
        self.state = State::LineStart;
        Line::Field
    }

    fn name(&mut self, name: &'static [u8]) {
        self.name = name;
        self.name_len = 1;
        self.state = State::Name;
    }

    /// A field name of interest ended with its `:`. True if it completes
    /// the conflict.
    fn field_name_done(&mut self) -> bool {
        self.value = 0;
        self.phase = Phase::Before;
        self.matched = 0;
        self.mismatch = false;
        self.bad = false;
        if self.name == CONTENT_LENGTH {
            if self.flags & SEEN_TE != 0 {
                return true;
            }
            self.flags |= SEEN_CL;
            self.state = State::ClValue;
        } else if self.name == TRANSFER_ENCODING {
            if self.flags & SEEN_CL != 0 {
                return true;
            }
            if self.flags & (SEEN_TE | HTTP10) != 0 {
                // hyper goes by the last of several (and framing.rs refuses
                // them); HTTP/1.0 with Transfer-Encoding is a 400.
                self.flags |= OFF_AFTER_HEAD;
            }
            self.flags |= SEEN_TE;
            self.state = State::TeValue;
        } else {
            // Upgrade: after a 101 the bytes are no longer HTTP/1.
            self.flags |= OFF_AFTER_HEAD;
            self.state = State::SkipLine;
        }
        false
    }

    /// A Content-Length value byte: only `OWS 1*DIGIT OWS` is followed (a
    /// list is refused by hyper).
    fn content_length_byte(&mut self, b: u8) {
        match b {
            b'0'..=b'9' if self.phase != Phase::After => {
                self.phase = Phase::In;
                match self.value.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))) {
                    Some(v) => self.value = v,
                    None => self.bad = true,
                }
            }
            b' ' | b'\t' => {
                if self.phase == Phase::In {
                    self.phase = Phase::After;
                }
            }
            b'\r' => {} // before the LF (httparse refuses it elsewhere)
            _ => self.bad = true,
        }
    }

    fn content_length_done(&mut self) {
        let same = |n| self.content_length.is_none_or(|old| old == n);
        if self.bad || self.phase == Phase::Before || !same(self.value) {
            self.flags |= OFF_AFTER_HEAD; // hyper answers 400
        } else {
            self.content_length = Some(self.value);
        }
    }

    /// A Transfer-Encoding value byte: tracks whether the last list element
    /// is `chunked` exactly as hyper's `is_chunked_` decides it (the whole
    /// value visible ASCII, the last comma-separated element trimmed equal
    /// to "chunked" in any case).
    fn transfer_encoding_byte(&mut self, b: u8) {
        match b {
            b',' => {
                self.phase = Phase::Before;
                self.matched = 0;
                self.mismatch = false;
            }
            b' ' | b'\t' => {
                if self.phase == Phase::In {
                    self.phase = Phase::After;
                }
            }
            b'\r' => {}
            0x21..=0x7e => {
                if self.phase != Phase::After
                    && self.matched < CHUNKED.len()
                    && b.to_ascii_lowercase() == CHUNKED[self.matched]
                {
                    self.matched += 1;
                } else {
                    self.mismatch = true;
                }
                self.phase = Phase::In;
            }
            _ => self.bad = true, // not visible ASCII: not chunked for hyper
        }
    }

    fn transfer_encoding_done(&mut self) {
        if self.bad || self.mismatch || self.matched != CHUNKED.len() {
            self.flags |= OFF_AFTER_HEAD; // hyper answers 400
        }
    }

    /// The head is complete, `bytes` more of it in this read. False if the
    /// guard cannot follow what comes next.
    fn head_done(&mut self, bytes: usize) -> bool {
        self.head_len += bytes;
        if self.head_len > self.max_head || self.flags & OFF_AFTER_HEAD != 0 {
            return false;
        }
        if self.flags & SEEN_TE != 0 {
            // One Transfer-Encoding ending in chunked (else OFF_AFTER_HEAD).
            self.state = State::ChunkStart;
        } else {
            match self.content_length {
                Some(n) if n > 0 => {
                    self.remaining = n;
                    self.state = State::Fixed;
                }
                _ => self.next_head(),
            }
        }
        true
    }
}

/// The first `byte` in `bytes`, eight bytes at a time: on a header line
/// about a quarter of the instructions of `iter().position`. (In a word,
/// the lowest byte flagged is always a match: a false flag needs a borrow
/// from a matching byte below it.) The memchr crate in its place measured
/// +315 instructions per request under `benches/load/callgrind.sh`: its
/// set-up does not pay off on header lines of a few dozen bytes.
fn find(bytes: &[u8], byte: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(byte);
    let flags = |word: &[u8; 8]| {
        let x = u64::from_le_bytes(*word) ^ pattern;
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut at = 0;
    while let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let found = flags(word);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    if at == bytes.len() {
        return None;
    }
    match bytes.last_chunk::<8>() {
        // The last 8 bytes, overlapping bytes already searched: they have
        // no match, so they flag nothing.
        Some(word) => {
            let found = flags(word);
            (found != 0).then(|| bytes.len() - 8 + found.trailing_zeros() as usize / 8)
        }
        None => bytes.iter().position(|&b| b == byte),
    }
}

#[cfg(test)]
mod tests {
    use super::{find, FramingGuard, State, REJECT};

    const LIMIT: usize = 8192;

    /// Feed `stream` in the given pieces; the bytes as hyper would see
    /// them, whether the guard refused, and its final state.
    fn feed(stream: &[u8], cuts: &[usize]) -> (Vec<u8>, bool, State) {
        let mut guard = FramingGuard::new(LIMIT);
        let mut bytes = stream.to_vec();
        let mut refused = false;
        let mut from = 0;
        for &to in cuts.iter().chain([stream.len()].iter()) {
            refused |= guard.inspect(&mut bytes[from..to]);
            from = to;
        }
        (bytes, refused, guard.state)
    }

    /// The same outcome whether the stream comes in one read, in two split
    /// at any byte, or one byte per read.
    fn at_every_split(stream: &[u8]) -> (Vec<u8>, bool, State) {
        let whole = feed(stream, &[]);
        for cut in 0..=stream.len() {
            assert_eq!(feed(stream, &[cut]), whole, "split at {cut}: {:?}", String::from_utf8_lossy(stream));
        }
        let bytes: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(feed(stream, &bytes), whole, "byte by byte");
        // And in a few pseudo-random sets of pieces.
        let mut seed = stream.len() as u64;
        for _ in 0..50 {
            let mut cuts: Vec<usize> = (0..5)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 33) as usize % (stream.len() + 1)
                })
                .collect();
            cuts.sort_unstable();
            assert_eq!(feed(stream, &cuts), whole, "cut at {cuts:?}");
        }
        whole
    }

    /// A valid stream: untouched, and the guard still follows it (ready
    /// for the next head).
    fn followed(stream: &str) {
        let (bytes, refused, state) = at_every_split(stream.as_bytes());
        assert!(!refused);
        assert_eq!(bytes, stream.as_bytes());
        assert_eq!(state, State::Start, "{stream:?}");
    }

    /// Refused: exactly the `:` after the `nth` (0-based) match of `name`
    /// is overwritten, nothing else, and the guard stops.
    fn refused(stream: &str, name: &str, nth: usize) {
        let (bytes, refused, state) = at_every_split(stream.as_bytes());
        assert!(refused, "{stream:?}");
        assert_eq!(state, State::Off);
        let colon = stream.match_indices(name).nth(nth).expect("name in stream").0 + name.len();
        assert_eq!(stream.as_bytes()[colon], b':');
        let mut expected = stream.as_bytes().to_vec();
        expected[colon] = REJECT;
        assert_eq!(bytes, expected, "{stream:?}");
    }

    /// Stopped following: untouched, and off.
    fn off(stream: &str) {
        let (bytes, refused, state) = at_every_split(stream.as_bytes());
        assert!(!refused);
        assert_eq!(bytes, stream.as_bytes());
        assert_eq!(state, State::Off, "{stream:?}");
    }

    /// Body bytes that would be a conflict if the guard took them for a head.
    const TRAP: &str = "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n";

    #[test]
    fn follows_a_content_length_body_then_a_get() {
        followed("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        let trap = format!(
            "POST /a HTTP/1.1\r\nhost: a\r\ncontent-length:\t{}\t\r\n\r\n{TRAP}GET /b HTTP/1.1\r\nHost: a\r\n\r\n",
            TRAP.len()
        );
        followed(&trap);
        // Equal Content-Lengths are one (hyper agrees); zero is no body.
        followed("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\n\r\n");
        followed("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        // Names that only begin like the ones of interest.
        followed(
            "GET / HTTP/1.1\r\nContent-Type: x\r\nContent-Length-X: 5\r\nTransfer: y\r\nUpgraded: z\r\nC: d\r\n\r\n",
        );
    }

    #[test]
    fn follows_a_chunked_body_with_extensions_and_trailers_then_a_get() {
        let chunk = format!("{:x}", TRAP.len());
        followed(&format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip ,  Chunked \r\n\r\n\
             5;name=\"v\\r\"\r\nhello\r\n{chunk} \t;ext\r\n{TRAP}\r\n00\r\nX-Trailer: 1\r\n{TRAP}\r\n\
             GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
        ));
        followed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn follows_bare_lf_and_empty_lines_between_requests() {
        followed("GET / HTTP/1.1\nHost: a\n\nPOST / HTTP/1.0\nContent-Length: 1\n\nx\r\n\r\n\nGET / HTTP/1.1\r\n\n");
    }

    #[test]
    fn refuses_the_conflict_in_either_order_and_any_case() {
        refused(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding",
            0,
        );
        refused(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "Content-Length",
            0,
        );
        refused("POST / HTTP/1.1\r\ntRANSFER-eNCODING: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n", "CONTENT-LENGTH", 0);
        refused("POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: gzip\n\n", "Transfer-Encoding", 0);
        // Whatever else the head says.
        refused(
            "POST / HTTP/1.1\r\nUpgrade: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding",
            0,
        );
        refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "Content-Length", 0);
        refused(
            "POST / HTTP/1.1\r\nContent-Length: x\r\nContent-Length: 5\r\ntransfer-encoding:chunked\r\n\r\n",
            "transfer-encoding",
            0,
        );
    }

    #[test]
    fn refuses_the_conflict_in_a_later_request() {
        let conflict = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        refused(&format!("GET / HTTP/1.1\r\nHost: a\r\n\r\n{conflict}"), "Content-Length", 0);
        refused(
            &format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{TRAP}\r\n{conflict}", TRAP.len()),
            "Content-Length",
            2,
        );
        refused(
            &format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nA: b\r\n\r\n{conflict}"),
            "Content-Length",
            0,
        );
    }

    #[test]
    fn stops_where_it_cannot_follow() {
        // An upgrade: after a 101 the bytes are a tunnel.
        off(&format!("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n{TRAP}\r\n"));
        off(&format!("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n{TRAP}\r\n"));
        // What hyper refuses itself.
        off("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello");
        off("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
        off("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nx\r\n0\r\n\r\n");
        off("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n");
        off("GET / HTTP/1.7\r\n\r\n");
        off("GET /\r\n\r\n");
        off("\r\rGET / HTTP/1.1\r\n\r\n");
        off("GET / HTTP/1.1\r\nHost: a\r\n\rX");
        // A head past hyper's limit (hyper answers 431).
        off(&format!("GET / HTTP/1.1\r\nX: {}\r\nContent-Length: 1\r\n", "a".repeat(LIMIT)));
        // Off is for good.
        let (bytes, refused, state) = feed(
            b"GET / HTTP/1.7\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &[],
        );
        assert!(!refused && state == State::Off && !bytes.contains(&REJECT));
    }

    #[test]
    fn a_head_exactly_at_the_limit_is_still_followed() {
        let head = |n: usize| format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(n));
        let fill = LIMIT - head(0).len();
        let (_, _, state) = feed(head(fill).as_bytes(), &[]);
        assert_eq!(state, State::Start);
        let (_, _, state) = feed(head(fill + 1).as_bytes(), &[100]);
        assert_eq!(state, State::Off);
    }

    #[test]
    fn find_agrees_with_position() {
        for len in 0..40 {
            let mut bytes: Vec<u8> = (0..len).map(|i| [b'a', 0x0b, 0x8a, b'\r', 0x09][i % 5]).collect();
            assert_eq!(find(&bytes, b'\n'), None);
            for at in (0..len).rev() {
                bytes[at] = b'\n'; // a later one stays: the first must win
                assert_eq!(find(&bytes, b'\n'), Some(at), "{len} {at}");
                assert_eq!(find(&bytes[at..], b'\n'), Some(0));
            }
        }
    }

    #[test]
    fn an_off_guard_changes_nothing() {
        let mut guard = FramingGuard::off();
        let mut bytes = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        assert!(!guard.inspect(&mut bytes));
        assert!(!bytes.contains(&REJECT) && guard.is_off());
    }
}
