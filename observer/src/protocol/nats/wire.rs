//! Wire primitives: control-line parsing (ops, arguments, sizes), the `NATS/1.0` header block,
//! a small JSON object scanner and bounded text.
//!
//! Everything here borrows the caller's bytes. The JSON scanner hands out raw slices (strings
//! still escaped) and never copies a value it is not asked to render — CONNECT's secrets are
//! only ever looked at as "present".
use super::{MAX_CONTROL_LINE, MAX_JSON_LINE};
use crate::{capture::Direction, event::MessageProps};

/// At most this many headers are kept per message (traceparent/tracestate/ids do not count).
pub(super) const MAX_HEADERS: usize = 32;
/// Rendered values (header values, JSON strings, attrs) are cut to this many bytes.
pub(super) const MAX_VALUE: usize = 256;
/// traceparent is 55 bytes; W3C bounds tracestate at 512.
pub(super) const MAX_TRACE: usize = 512;

/// A protocol operation (the first token of a control line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpName {
    Info,
    Connect,
    Pub,
    Hpub,
    Sub,
    Unsub,
    Msg,
    Hmsg,
    Ping,
    Pong,
    Ok,
    Err,
}

impl OpName {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            OpName::Info => "INFO",
            OpName::Connect => "CONNECT",
            OpName::Pub => "PUB",
            OpName::Hpub => "HPUB",
            OpName::Sub => "SUB",
            OpName::Unsub => "UNSUB",
            OpName::Msg => "MSG",
            OpName::Hmsg => "HMSG",
            OpName::Ping => "PING",
            OpName::Pong => "PONG",
            OpName::Ok => "+OK",
            OpName::Err => "-ERR",
        }
    }

    /// Longest control line accepted for the op. INFO (connect_urls of a big cluster) and
    /// CONNECT (user JWT + signature) legitimately outgrow max_control_line.
    fn line_cap(self) -> usize {
        match self {
            OpName::Info | OpName::Connect => MAX_JSON_LINE,
            _ => MAX_CONTROL_LINE,
        }
    }
}

/// What a client may send / what a server may send. An op of the other side is unknown.
const CLIENT_OPS: [OpName; 7] = [
    OpName::Connect,
    OpName::Pub,
    OpName::Hpub,
    OpName::Sub,
    OpName::Unsub,
    OpName::Ping,
    OpName::Pong,
];
const SERVER_OPS: [OpName; 7] = [
    OpName::Info,
    OpName::Msg,
    OpName::Hmsg,
    OpName::Ping,
    OpName::Pong,
    OpName::Ok,
    OpName::Err,
];

fn ops(dir: Direction) -> &'static [OpName] {
    match dir {
        Direction::Ingress => &CLIENT_OPS,
        Direction::Egress => &SERVER_OPS,
    }
}

/// The longest op token ("CONNECT").
const MAX_OP: usize = 7;

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn op_of(dir: Direction, token: &[u8]) -> Option<OpName> {
    ops(dir)
        .iter()
        .copied()
        .find(|op| op.as_str().as_bytes().eq_ignore_ascii_case(token))
}

/// Verdict on the start of a line before its end is seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Partial {
    /// Could still be a valid line: keep it.
    Wait,
    /// Not an op of this direction, whatever follows.
    Unknown,
    /// A known op, but longer than its cap whatever follows.
    Oversize,
}

/// `head`: the first bytes (≥ `MAX_OP + 1` of them, or all) of a line of `len` bytes so far
/// (its `\n` not included). Decides exactly what [`parse`] of the whole line would say about
/// the op and the size, so deciding early does not depend on where the stream was cut.
pub(super) fn precheck(dir: Direction, head: &[u8], len: usize) -> Partial {
    let end = head
        .iter()
        .position(|&b| is_ws(b) || b == b'\r')
        .unwrap_or(head.len());
    let token = &head[..end];
    if end == head.len() {
        // Token not finished yet (or the line is just this token).
        let viable = token.len() <= MAX_OP
            && ops(dir).iter().any(|op| {
                op.as_str()
                    .as_bytes()
                    .get(..token.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(token))
            });
        return if viable {
            Partial::Wait
        } else {
            Partial::Unknown
        };
    }
    if token.is_empty() {
        // "\r" alone may be the empty line "\r\n"; anything else before the op is garbage.
        return if head == b"\r" {
            Partial::Wait
        } else {
            Partial::Unknown
        };
    }
    match op_of(dir, token) {
        None => Partial::Unknown,
        // +1: the line may still end in "\r\n", whose '\r' does not count.
        Some(op) if len > op.line_cap() + 1 => Partial::Oversize,
        Some(_) => Partial::Wait,
    }
}

/// Why a control line is not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bad {
    Unknown,
    Oversize,
    /// Known op, bad arguments (count, sizes, characters).
    Invalid,
}

/// PUB/HPUB (client) or MSG/HMSG (server): a control line followed by a payload.
#[derive(Clone, Copy, Debug)]
pub(super) struct MsgLine<'a> {
    pub op: OpName,
    pub subject: &'a [u8],
    /// MSG/HMSG only.
    pub sid: Option<&'a [u8]>,
    pub reply: Option<&'a [u8]>,
    /// Header block bytes (0 for PUB/MSG).
    pub hdr: u64,
    /// Header block + payload bytes.
    pub total: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Op<'a> {
    /// The JSON object (from its '{').
    Info(&'a [u8]),
    Connect(&'a [u8]),
    Msg(MsgLine<'a>),
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    Unsub {
        sid: &'a [u8],
        max: Option<u64>,
    },
    Ping,
    Pong,
    Ok,
    /// The text after -ERR, trimmed (quotes still on).
    Err(&'a [u8]),
}

/// Parses one control line (without its "\r\n" / "\n").
pub(super) fn parse(dir: Direction, line: &[u8]) -> Result<Op<'_>, Bad> {
    let end = line.iter().position(|&b| is_ws(b)).unwrap_or(line.len());
    let name = op_of(dir, &line[..end]).ok_or(Bad::Unknown)?;
    if line.len() > name.line_cap() {
        return Err(Bad::Oversize);
    }
    let rest = &line[end..];
    let mut args: [&[u8]; 5] = [&[]; 5];
    let n = match name {
        OpName::Info | OpName::Connect => {
            let json = trim(rest);
            if end == line.len() || json.first() != Some(&b'{') {
                return Err(Bad::Invalid);
            }
            return Ok(if name == OpName::Info {
                Op::Info(json)
            } else {
                Op::Connect(json)
            });
        }
        OpName::Err => return Ok(Op::Err(trim(rest))),
        OpName::Ping | OpName::Pong | OpName::Ok => {
            if !trim(rest).is_empty() {
                return Err(Bad::Invalid);
            }
            return Ok(match name {
                OpName::Ping => Op::Ping,
                OpName::Pong => Op::Pong,
                _ => Op::Ok,
            });
        }
        _ => split(rest, &mut args)?,
    };
    let a = &args[..n];
    let msg = |subject, sid, reply, hdr: Option<&[u8]>, total: &[u8]| {
        let total = number(total)?;
        let hdr = match hdr {
            Some(h) => number(h).filter(|&h| h <= total)?,
            None => 0,
        };
        Some(Op::Msg(MsgLine {
            op: name,
            subject,
            sid,
            reply,
            hdr,
            total,
        }))
    };
    let op = match (name, a) {
        (OpName::Pub, [s, size]) => msg(s, None, None, None, size),
        (OpName::Pub, [s, r, size]) => msg(s, None, Some(*r), None, size),
        (OpName::Hpub, [s, h, size]) => msg(s, None, None, Some(*h), size),
        (OpName::Hpub, [s, r, h, size]) => msg(s, None, Some(*r), Some(*h), size),
        (OpName::Msg, [s, sid, size]) => msg(s, Some(*sid), None, None, size),
        (OpName::Msg, [s, sid, r, size]) => msg(s, Some(*sid), Some(*r), None, size),
        (OpName::Hmsg, [s, sid, h, size]) => msg(s, Some(*sid), None, Some(*h), size),
        (OpName::Hmsg, [s, sid, r, h, size]) => msg(s, Some(*sid), Some(*r), Some(*h), size),
        (OpName::Sub, [subject, sid]) => Some(Op::Sub {
            subject,
            queue: None,
            sid,
        }),
        (OpName::Sub, [subject, queue, sid]) => Some(Op::Sub {
            subject,
            queue: Some(*queue),
            sid,
        }),
        (OpName::Unsub, [sid]) => Some(Op::Unsub { sid, max: None }),
        (OpName::Unsub, [sid, max]) => number(max).map(|m| Op::Unsub { sid, max: Some(m) }),
        _ => None,
    };
    op.ok_or(Bad::Invalid)
}

/// Whitespace-separated arguments, in one pass. More than `out` holds is invalid, and so is a
/// control character (what keeps resync candidates cut out of binary payloads from parsing);
/// UTF-8 in subjects is fine.
fn split<'a>(rest: &'a [u8], out: &mut [&'a [u8]; 5]) -> Result<usize, Bad> {
    let mut n = 0;
    let mut start = None;
    let mut push = |token: &'a [u8]| {
        let slot = out.get_mut(n).ok_or(Bad::Invalid)?;
        *slot = token;
        n += 1;
        Ok(())
    };
    for (i, &b) in rest.iter().enumerate() {
        if b > b' ' && b != 0x7f {
            start.get_or_insert(i);
        } else if !is_ws(b) {
            return Err(Bad::Invalid);
        } else if let Some(s) = start.take() {
            push(&rest[s..i])?;
        }
    }
    if let Some(s) = start {
        push(&rest[s..])?;
    }
    Ok(n)
}

/// A decimal size or count. More than 12 digits is garbage, not a size.
fn number(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 12 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        token
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    &s[start..]
}

pub(super) fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let end = s.iter().rposition(|&b| !is_ws(b)).map_or(0, |i| i + 1);
    &s[..end]
}

// ---------------------------------------------------------------------------------------------
// Text

/// Lossy UTF-8, cut to at most `cap` bytes on a character boundary.
pub(super) fn text(bytes: &[u8], cap: usize) -> String {
    // Convert at most cap + 4 bytes: a character cut there is cut off again below.
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(cap + 4)]);
    if s.len() <= cap {
        return s.into_owned();
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Lossy UTF-8 of a wire token, uncut (control lines bound it).
pub(super) fn string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Header block

/// The `NATS/1.0[ status[ description]]` block of HPUB/HMSG, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Headers {
    pub props: MessageProps,
    /// Inline status (503 no responders, 404/408 of pull requests, 100 heartbeats).
    pub status: Option<(u16, String)>,
}

/// Decodes a header block. Only complete lines count, so a block cut at the buffering limit
/// decodes the same however it arrived.
pub(super) fn headers(block: &[u8]) -> Headers {
    let mut h = Headers::default();
    // Complete lines only, without their "\r\n" / "\n".
    let mut lines = block
        .split_inclusive(|&b| b == b'\n')
        .map_while(|l| l.strip_suffix(b"\n"))
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(first) = lines.next() else {
        return h;
    };
    if let Some(rest) = first.strip_prefix(b"NATS/1.0") {
        let rest = trim(rest);
        if rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit) {
            let code = rest[..3]
                .iter()
                .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
            h.status = Some((code, text(trim(&rest[3..]), MAX_VALUE)));
        }
    }
    for l in lines {
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&l[..colon], trim(&l[colon + 1..]));
        let p = &mut h.props;
        if name.eq_ignore_ascii_case(b"traceparent") {
            p.traceparent = Some(text(value, MAX_TRACE));
        } else if name.eq_ignore_ascii_case(b"tracestate") {
            p.tracestate = Some(text(value, MAX_TRACE));
        } else if name.eq_ignore_ascii_case(b"Nats-Msg-Id") {
            p.message_id = Some(text(value, MAX_VALUE));
        } else if name.eq_ignore_ascii_case(b"Content-Type") {
            p.content_type = Some(text(value, MAX_VALUE));
        } else if p.headers.len() < MAX_HEADERS {
            p.headers
                .push((text(name, MAX_VALUE), text(value, MAX_VALUE)));
        }
    }
    h
}

// ---------------------------------------------------------------------------------------------
// JSON

/// One JSON value, borrowed. Strings are raw (escapes not decoded, no quotes); objects and
/// arrays are their raw text (brackets included).
#[derive(Clone, Copy, Debug)]
pub(super) enum Json<'a> {
    Str(&'a [u8]),
    Num(&'a [u8]),
    Bool(bool),
    Null,
    Obj(&'a [u8]),
    Arr(&'a [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BadJson;

/// Calls `f(raw key, value)` for each member of the object that is the whole of `input`
/// (surrounding whitespace aside). Nested objects/arrays are skipped over (iteratively, so
/// nesting depth costs no stack) and handed over raw.
pub(super) fn members<'a>(
    input: &'a [u8],
    mut f: impl FnMut(&'a [u8], Json<'a>),
) -> Result<(), BadJson> {
    let mut c = Cursor { s: input, i: 0 };
    c.ws();
    c.expect(b'{')?;
    c.ws();
    if c.peek() == Some(b'}') {
        c.i += 1;
    } else {
        loop {
            c.ws();
            let key = c.string()?;
            c.ws();
            c.expect(b':')?;
            c.ws();
            let value = c.value()?;
            f(key, value);
            c.ws();
            match c.next() {
                Some(b',') => {}
                Some(b'}') => break,
                _ => return Err(BadJson),
            }
        }
    }
    c.ws();
    if c.i == input.len() {
        Ok(())
    } else {
        Err(BadJson)
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), BadJson> {
        if self.next() == Some(b) {
            Ok(())
        } else {
            Err(BadJson)
        }
    }

    /// A string at the cursor: its raw contents.
    fn string(&mut self) -> Result<&'a [u8], BadJson> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match self.next().ok_or(BadJson)? {
                b'"' => return Ok(&self.s[start..self.i - 1]),
                b'\\' => {
                    self.next().ok_or(BadJson)?;
                }
                b if b < 0x20 => return Err(BadJson),
                _ => {}
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), BadJson> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(BadJson)
        }
    }

    fn value(&mut self) -> Result<Json<'a>, BadJson> {
        Ok(match self.peek().ok_or(BadJson)? {
            b'"' => Json::Str(self.string()?),
            b'{' => Json::Obj(self.nested()?),
            b'[' => Json::Arr(self.nested()?),
            b't' => {
                self.literal(b"true")?;
                Json::Bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                Json::Bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                Json::Null
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.i += 1;
                }
                Json::Num(&self.s[start..self.i])
            }
            _ => return Err(BadJson),
        })
    }

    /// A nested object or array: its raw text. Brackets are counted, strings stepped over.
    fn nested(&mut self) -> Result<&'a [u8], BadJson> {
        let start = self.i;
        let mut depth = 0usize;
        loop {
            match self.peek().ok_or(BadJson)? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Ok(&self.s[start..self.i]);
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }
}

/// An unsigned integer value.
pub(super) fn json_u64(v: Json<'_>) -> Option<u64> {
    match v {
        Json::Num(n) => std::str::from_utf8(n).ok()?.parse().ok(),
        _ => None,
    }
}

/// A value as text of at most `cap` bytes: strings unescaped, the rest as written.
pub(super) fn render(v: Json<'_>, cap: usize) -> String {
    match v {
        Json::Str(raw) => unescape(raw, cap),
        Json::Num(raw) | Json::Obj(raw) | Json::Arr(raw) => text(raw, cap),
        Json::Bool(b) => (if b { "true" } else { "false" }).into(),
        Json::Null => "null".into(),
    }
}

/// Decodes a raw JSON string (escapes, surrogate pairs), cut to `cap` bytes.
pub(super) fn unescape(raw: &[u8], cap: usize) -> String {
    if !raw.contains(&b'\\') {
        return text(raw, cap);
    }
    let mut out = Vec::with_capacity(raw.len().min(cap + 4));
    let mut i = 0;
    let hex = |at: usize| -> Option<u32> {
        let h = raw.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    while i < raw.len() && out.len() <= cap {
        let b = raw[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = raw.get(i) else { break };
        i += 1;
        let c = match e {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let Some(hi) = hex(i) else { break };
                i += 4;
                let mut code = hi;
                if (0xD800..0xDC00).contains(&hi)
                    && raw.get(i..i + 2) == Some(b"\\u")
                    && let Some(lo) = hex(i + 2).filter(|lo| (0xDC00..0xE000).contains(lo))
                {
                    code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
                char::from_u32(code).unwrap_or('\u{FFFD}')
            }
            other => char::from(other),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
    text(&out, cap)
}
