//! Wire primitives: the variable byte integer, a bounds-checked reader for packet bodies, MQTT 5
//! properties (walked in place, never collected) and bounded text rendering.
use std::fmt::Write as _;

/// A packet body that does not decode (too short, bad property, invalid field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bad;

pub(super) type Res<T> = Result<T, Bad>;

/// At most this many user properties are kept per packet (traceparent/tracestate do not count).
pub(super) const MAX_HEADERS: usize = 32;
/// Strings from the wire (client ids, user names, property values) are cut to this many bytes.
pub(super) const MAX_VALUE: usize = 256;
/// Topics and topic filters are cut to this many bytes (the protocol allows 65535).
pub(super) const MAX_TOPIC: usize = 1024;
/// traceparent is 55 bytes; W3C bounds tracestate at 512.
pub(super) const MAX_TRACE: usize = 512;

/// Result of reading a variable byte integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Var {
    /// The bytes end inside the integer.
    Need,
    /// A fifth byte would be needed: not MQTT.
    Bad,
    Ok {
        value: u32,
        len: usize,
    },
}

/// Variable byte integer: 7 bits per byte, least significant first, bit 7 = more follows; at most
/// 4 bytes (max 268,435,455).
pub(super) fn varint(b: &[u8]) -> Var {
    let mut value = 0u32;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Var::Need;
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Var::Ok { value, len: i + 1 };
        }
    }
    Var::Bad
}

/// Big-endian reader over a packet body.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(super) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.buf.len() {
            return Err(Bad);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Res<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Res<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn varint(&mut self) -> Res<u32> {
        match varint(self.buf) {
            Var::Ok { value, len } => {
                self.buf = &self.buf[len..];
                Ok(value)
            }
            Var::Need | Var::Bad => Err(Bad),
        }
    }
    /// UTF-8 string and binary data share the u16-prefixed layout (UTF-8 is not validated here:
    /// rendering is lossy).
    pub(super) fn str(&mut self) -> Res<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    /// A packet identifier: MUST be non-zero.
    pub(super) fn packet_id(&mut self) -> Res<u16> {
        match self.u16()? {
            0 => Err(Bad),
            id => Ok(id),
        }
    }
    /// MQTT 5 property block (after its length), not yet validated.
    pub(super) fn properties(&mut self) -> Res<&'a [u8]> {
        let n = self.varint()?;
        self.take(n as usize)
    }
}

/// One MQTT 5 property value; strings and binary data borrow the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prop<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    Var(u32),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Pair(&'a [u8], &'a [u8]),
}

impl Prop<'_> {
    /// Integer properties as a number (for attrs).
    pub(super) fn num(self) -> Option<u32> {
        match self {
            Prop::Byte(v) => Some(u32::from(v)),
            Prop::U16(v) => Some(u32::from(v)),
            Prop::U32(v) | Prop::Var(v) => Some(v),
            _ => None,
        }
    }
}

pub(super) const PAYLOAD_FORMAT: u8 = 0x01;
pub(super) const MESSAGE_EXPIRY: u8 = 0x02;
pub(super) const CONTENT_TYPE: u8 = 0x03;
pub(super) const RESPONSE_TOPIC: u8 = 0x08;
pub(super) const CORRELATION_DATA: u8 = 0x09;
pub(super) const SUBSCRIPTION_ID: u8 = 0x0B;
pub(super) const SESSION_EXPIRY: u8 = 0x11;
pub(super) const ASSIGNED_CLIENT_ID: u8 = 0x12;
pub(super) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(super) const AUTH_METHOD: u8 = 0x15;
pub(super) const SERVER_REFERENCE: u8 = 0x1C;
pub(super) const REASON_STRING: u8 = 0x1F;
pub(super) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(super) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(super) const TOPIC_ALIAS: u8 = 0x23;
pub(super) const MAXIMUM_QOS: u8 = 0x24;
pub(super) const RETAIN_AVAILABLE: u8 = 0x25;
pub(super) const USER_PROPERTY: u8 = 0x26;
pub(super) const MAXIMUM_PACKET_SIZE: u8 = 0x27;

/// Walks a property block: identifier, value, identifier, value … An unknown identifier or a
/// value running past the block does not decode (the types differ, so it cannot be skipped).
pub(super) fn for_each_property<'a>(block: &'a [u8], mut f: impl FnMut(u8, Prop<'a>)) -> Res<()> {
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let id = r.u8()?;
        let value = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Prop::Byte(r.u8()?),
            0x13 | 0x21 | 0x22 | 0x23 => Prop::U16(r.u16()?),
            0x02 | 0x11 | 0x18 | 0x27 => Prop::U32(r.u32()?),
            0x0B => Prop::Var(r.varint()?),
            0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Prop::Str(r.str()?),
            0x09 | 0x16 => Prop::Bin(r.str()?),
            0x26 => {
                let name = r.str()?;
                Prop::Pair(name, r.str()?)
            }
            _ => return Err(Bad),
        };
        f(id, value);
    }
    Ok(())
}

/// Lossy UTF-8, cut to at most `cap` bytes on a character boundary. Valid UTF-8 (the usual case)
/// is converted without an intermediate copy.
pub(super) fn text(bytes: &[u8], cap: usize) -> String {
    // A character cut by the window starts past `cap`, so cutting the converted text again on a
    // character boundary drops its replacement character.
    let window = &bytes[..bytes.len().min(cap + 4)];
    let s = String::from_utf8_lossy(window);
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Binary data (correlation data) as text: itself when it is UTF-8, else "0x" and lowercase hex
/// (the same rendering the AMQP decoder gives byte arrays); at most `cap` bytes.
pub(super) fn bytes_text(bytes: &[u8], cap: usize) -> String {
    if std::str::from_utf8(bytes).is_ok() {
        return text(bytes, cap);
    }
    let mut s = String::with_capacity(cap.min(2 + 2 * bytes.len()));
    s.push_str("0x");
    for b in bytes {
        if s.len() + 2 > cap {
            break;
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}
