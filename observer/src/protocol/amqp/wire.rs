//! Wire primitives: a bounds-checked argument reader, field tables (walked lazily, rendered to
//! bounded text) and the basic-class content properties.
//!
//! Nothing here allocates for bytes it does not keep: tables are walked in place, nested tables
//! and arrays are kept as raw slices and only descended into while rendering (depth-bounded, so a
//! hostile nesting cannot exhaust the stack).
use std::fmt::{self, Write as _};

use crate::event::MessageProps;

/// Method arguments or a content header that do not decode (too short, unknown field type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Undecodable;

pub(super) type Res<T> = Result<T, Undecodable>;

/// At most this many headers are kept per message (traceparent/tracestate do not count).
pub(super) const MAX_HEADERS: usize = 32;
/// Rendered header values (and names, strings from the wire) are cut to this many bytes.
pub(super) const MAX_VALUE: usize = 256;
/// traceparent is 55 bytes; W3C bounds tracestate at 512.
pub(super) const MAX_TRACE: usize = 512;
/// Deeper nested tables/arrays render as "…".
const MAX_DEPTH: u8 = 8;

/// Big-endian reader over method arguments.
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

    pub(super) fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.buf.len() {
            return Err(Undecodable);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let b = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(super) fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(super) fn u16(&mut self) -> Res<u16> {
        self.array().map(u16::from_be_bytes)
    }
    pub(super) fn u32(&mut self) -> Res<u32> {
        self.array().map(u32::from_be_bytes)
    }
    pub(super) fn u64(&mut self) -> Res<u64> {
        self.array().map(u64::from_be_bytes)
    }
    pub(super) fn shortstr(&mut self) -> Res<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// Long string, byte array, table and array bodies all share this u32-prefixed layout.
    pub(super) fn longstr(&mut self) -> Res<&'a [u8]> {
        let n = self.u32()?;
        self.take(n as usize)
    }
    /// A table's body (without its length prefix), not validated.
    pub(super) fn table(&mut self) -> Res<&'a [u8]> {
        self.longstr()
    }
}

/// Lossy UTF-8, cut to at most `cap` bytes on a character boundary.
pub(super) fn text(bytes: &[u8], cap: usize) -> String {
    let mut t = Text::new(cap);
    t.push_bytes(bytes);
    t.s
}

/// One field value. Strings, tables and arrays borrow the frame.
#[derive(Clone, Copy, Debug)]
pub(super) enum Value<'a> {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal { scale: u8, value: u32 },
    Str(&'a [u8]),
    Bytes(&'a [u8]),
    Array(&'a [u8]),
    Timestamp(u64),
    Table(&'a [u8]),
    Void,
}

/// Reads one type-tagged value. Field types follow what brokers implement (RabbitMQ/Qpid, the
/// 0-9-1 errata): `s` is a signed 16-bit integer and `l` a signed 64-bit one; the 0-9-1 spec's
/// `U`, `u`, `i`, `L`, `B` are accepted as well. (The spec's `s` = short string is used by no
/// broker; reading it that way would misparse every table a RabbitMQ client sends with `s`.)
pub(super) fn read_value<'a>(r: &mut Reader<'a>) -> Res<Value<'a>> {
    Ok(match r.u8()? {
        b't' => Value::Bool(r.u8()? != 0),
        b'b' => Value::I8(r.u8()? as i8),
        b'B' => Value::U8(r.u8()?),
        b's' | b'U' => Value::I16(r.u16()? as i16),
        b'u' => Value::U16(r.u16()?),
        b'I' => Value::I32(r.u32()? as i32),
        b'i' => Value::U32(r.u32()?),
        b'l' | b'L' => Value::I64(r.u64()? as i64),
        b'f' => Value::F32(f32::from_bits(r.u32()?)),
        b'd' => Value::F64(f64::from_bits(r.u64()?)),
        b'D' => Value::Decimal {
            scale: r.u8()?,
            value: r.u32()?,
        },
        b'S' => Value::Str(r.longstr()?),
        b'x' => Value::Bytes(r.longstr()?),
        b'A' => Value::Array(r.longstr()?),
        b'T' => Value::Timestamp(r.u64()?),
        b'F' => Value::Table(r.longstr()?),
        b'V' => Value::Void,
        _ => return Err(Undecodable),
    })
}

/// Walks a table body (no length prefix): name, value, name, value …
pub(super) fn for_each_field<'a>(
    table: &'a [u8],
    mut f: impl FnMut(&'a [u8], Value<'a>),
) -> Res<()> {
    let mut r = Reader::new(table);
    while !r.is_empty() {
        let name = r.shortstr()?;
        let value = read_value(&mut r)?;
        f(name, value);
    }
    Ok(())
}

/// Renders a value as text of at most `cap` bytes.
pub(super) fn render(v: Value<'_>, cap: usize) -> String {
    let mut t = Text::new(cap);
    render_into(v, &mut t, 0);
    t.s
}

fn render_into(v: Value<'_>, t: &mut Text, depth: u8) {
    // `Text` never fails; it just stops growing at its cap.
    let _ = match v {
        Value::Bool(b) => t.write_str(if b { "true" } else { "false" }),
        Value::I8(n) => write!(t, "{n}"),
        Value::U8(n) => write!(t, "{n}"),
        Value::I16(n) => write!(t, "{n}"),
        Value::U16(n) => write!(t, "{n}"),
        Value::I32(n) => write!(t, "{n}"),
        Value::U32(n) => write!(t, "{n}"),
        Value::I64(n) => write!(t, "{n}"),
        Value::F32(n) => write!(t, "{n}"),
        Value::F64(n) => write!(t, "{n}"),
        Value::Timestamp(n) => write!(t, "{n}"),
        Value::Decimal { scale, value } => render_decimal(t, scale, value),
        Value::Str(s) => {
            t.push_bytes(s);
            Ok(())
        }
        Value::Bytes(b) => {
            if std::str::from_utf8(b).is_ok() {
                t.push_bytes(b);
            } else {
                let _ = t.write_str("0x");
                for byte in b {
                    if t.full {
                        break;
                    }
                    let _ = write!(t, "{byte:02x}");
                }
            }
            Ok(())
        }
        Value::Void => t.write_str("null"),
        Value::Array(_) if depth >= MAX_DEPTH => t.write_str("[…]"),
        Value::Table(_) if depth >= MAX_DEPTH => t.write_str("{…}"),
        Value::Array(body) => {
            let _ = t.write_str("[");
            let mut r = Reader::new(body);
            let mut first = true;
            while !r.is_empty() && !t.full {
                let Ok(item) = read_value(&mut r) else {
                    let _ = t.write_str("?");
                    break;
                };
                if !first {
                    let _ = t.write_str(", ");
                }
                first = false;
                render_into(item, t, depth + 1);
            }
            t.write_str("]")
        }
        Value::Table(body) => {
            let _ = t.write_str("{");
            let mut r = Reader::new(body);
            let mut first = true;
            while !r.is_empty() && !t.full {
                let (Ok(name), Ok(item)) = (r.shortstr(), read_value(&mut r)) else {
                    let _ = t.write_str("?");
                    break;
                };
                if !first {
                    let _ = t.write_str(", ");
                }
                first = false;
                t.push_bytes(name);
                let _ = t.write_str(": ");
                render_into(item, t, depth + 1);
            }
            t.write_str("}")
        }
    };
}

/// `value / 10^scale`, e.g. (2, 12345) → "123.45".
fn render_decimal(t: &mut Text, scale: u8, value: u32) -> fmt::Result {
    let scale = usize::from(scale);
    if scale == 0 {
        return write!(t, "{value}");
    }
    if scale > 12 {
        return write!(t, "{value}e-{scale}");
    }
    let digits = format!("{value:0width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    write!(t, "{int}.{frac}")
}

/// A string that stops growing at `cap` bytes (cut on a character boundary).
struct Text {
    s: String,
    cap: usize,
    full: bool,
}

impl Text {
    fn new(cap: usize) -> Self {
        Self {
            s: String::new(),
            cap,
            full: false,
        }
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.full {
            return;
        }
        // Convert no more than the room left + 4: a character cut by the window starts past the
        // room, so its replacement character is cut off again by `push`. Valid UTF-8 (the usual
        // case) is borrowed, not copied.
        let room = self.cap - self.s.len();
        let window = &bytes[..bytes.len().min(room + 4)];
        self.push(&String::from_utf8_lossy(window));
    }

    fn push(&mut self, s: &str) {
        if self.full {
            return;
        }
        let room = self.cap - self.s.len();
        if s.len() <= room {
            self.s.push_str(s);
        } else {
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.s.push_str(&s[..end]);
            self.full = true;
        }
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s);
        Ok(())
    }
}

/// A decoded basic-class content header.
pub(super) struct ContentHeader {
    pub body_size: u64,
    pub props: MessageProps,
}

/// Content header payload: class u16 (60 = basic), weight u16, body size u64, property flags
/// (16-bit words, bit 0 = another word follows), then the present properties in flag order.
pub(super) fn content_header(payload: &[u8]) -> Res<ContentHeader> {
    let mut r = Reader::new(payload);
    if r.u16()? != 60 {
        return Err(Undecodable);
    }
    let _weight = r.u16()?;
    let body_size = r.u64()?;
    let flags = r.u16()?;
    let mut more = flags;
    while more & 1 != 0 {
        more = r.u16()?;
    }
    let has = |bit: u16| flags & (1 << bit) != 0;
    let mut props = MessageProps::default();
    if has(15) {
        props.content_type = Some(text(r.shortstr()?, MAX_VALUE));
    }
    if has(14) {
        r.shortstr()?; // content-encoding
    }
    if has(13) {
        headers(r.table()?, &mut props)?;
    }
    if has(12) {
        props.delivery_mode = Some(r.u8()?);
    }
    if has(11) {
        r.u8()?; // priority
    }
    if has(10) {
        props.correlation_id = Some(text(r.shortstr()?, MAX_VALUE));
    }
    if has(9) {
        r.shortstr()?; // reply-to
    }
    if has(8) {
        r.shortstr()?; // expiration
    }
    if has(7) {
        props.message_id = Some(text(r.shortstr()?, MAX_VALUE));
    }
    // timestamp, type, user-id, app-id, cluster-id follow; nothing we keep.
    Ok(ContentHeader { body_size, props })
}

fn headers(table: &[u8], props: &mut MessageProps) -> Res<()> {
    for_each_field(table, |name, value| {
        if name.eq_ignore_ascii_case(b"traceparent") {
            props.traceparent = Some(render(value, MAX_TRACE));
        } else if name.eq_ignore_ascii_case(b"tracestate") {
            props.tracestate = Some(render(value, MAX_TRACE));
        } else if props.headers.len() < MAX_HEADERS {
            props
                .headers
                .push((text(name, MAX_VALUE), render(value, MAX_VALUE)));
        }
    })
}
