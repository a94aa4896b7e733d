//! Record data: the `records` field of Produce requests and Fetch responses.
//!
//! A partition's records are a sequence of batches. Magic 2 (Kafka ≥ 0.11, what librdkafka and
//! the Java client send) is a 61-byte batch header — base offset, length, leader epoch, magic,
//! CRC, attributes (codec in bits 0–2, control flag in bit 5), last offset delta, timestamps,
//! producer id/epoch, base sequence, record count — then the records, compressed as a whole when
//! the codec is not `none`. Magic 0/1 message sets are counted one entry per message.
//!
//! Only what the events need is read: the batch headers (counts, offsets, producer, codec) and
//! the first record of the first data batch (its offset delta and headers, for trace context).
//! A compressed batch is decompressed only as far as that first record, bounded by
//! [`MAX_FIRST_RECORD`]. A Fetch response may end in a partial batch (the broker cuts at
//! max_bytes): it is ignored, not an error.
use std::io::Read;

use super::wire::{Reader, Res, Undecodable, text};
use crate::event::{Fingerprint, MessageProps};

/// Largest first record decompressed for its headers (bigger ones keep no headers).
pub(super) const MAX_FIRST_RECORD: usize = 1 << 20;
/// Headers kept per message (traceparent/tracestate do not count).
pub(super) const MAX_HEADERS: usize = 32;
/// Header names and values are cut to this many bytes.
pub(super) const MAX_HEADER_VALUE: usize = 256;
/// traceparent is 55 bytes; W3C bounds tracestate at 512.
const MAX_TRACE: usize = 512;

const V2_HEADER: usize = 61;
/// Bytes of a magic-2 batch header.
pub(super) const BATCH_HEADER: usize = V2_HEADER;
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";

pub(super) fn codec_name(codec: u8) -> &'static str {
    match codec {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

/// One batch's header fields and its record bytes (after the header).
#[derive(Clone, Copy, Debug)]
pub(super) struct Batch<'a> {
    pub(super) base_offset: i64,
    pub(super) magic: i8,
    pub(super) attributes: i16,
    pub(super) last_offset_delta: i32,
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) base_sequence: i32,
    pub(super) record_count: i32,
    pub(super) records: &'a [u8],
}

impl Batch<'_> {
    pub(super) fn codec(&self) -> u8 {
        (self.attributes & 7) as u8
    }
    fn control(&self) -> bool {
        self.magic >= 2 && self.attributes & 0x20 != 0
    }
}

/// Reads the next whole batch from `data`: `Ok(None)` at the end or at a partial trailing
/// batch (`data` shorter than the batch says), `Err` if the header is not a batch's.
pub(super) fn next_batch(data: &[u8]) -> Res<Option<(Batch<'_>, usize)>> {
    if data.len() < 17 {
        return Ok(None);
    }
    let mut r = Reader::new(data, false);
    let base_offset = r.i64()?;
    let len = r.i32()?;
    let magic = data[16] as i8;
    let min = if magic >= 2 { V2_HEADER - 12 } else { 14 };
    if len < min as i32 || !(0..=2).contains(&magic) {
        return Err(Undecodable);
    }
    let size = 12 + len as usize;
    if data.len() < size {
        return Ok(None);
    }
    let body = &data[12..size];
    let mut r = Reader::new(body, false);
    let batch = if magic >= 2 {
        let (b, _) = batch_header(data)?;
        Batch {
            records: &data[V2_HEADER..size],
            ..b
        }
    } else {
        r.take(4 + 1)?; // crc, magic
        let attributes = i16::from(r.i8()?);
        if magic == 1 {
            r.i64()?;
        }
        r.bytes()?; // key
        let value = r.bytes()?;
        Batch {
            base_offset,
            magic,
            attributes,
            last_offset_delta: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: 1,
            records: value,
        }
    };
    Ok(Some((batch, size)))
}

/// What a partition's records say, summed over its whole batches.
#[derive(Clone, Debug, Default)]
pub(super) struct Summary {
    pub(super) batches: u32,
    /// Records in data batches (control batches — transaction markers — not counted).
    pub(super) records: u32,
    /// Bytes of whole batches.
    pub(super) bytes: u64,
    /// Offset of the first data record (base offset + its delta when the record was read).
    pub(super) first_offset: Option<i64>,
    /// Offset of the last record of the last data batch.
    pub(super) last_offset: Option<i64>,
    /// Codec, producer id/epoch and base sequence of the first data batch.
    pub(super) codec: u8,
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) base_sequence: i32,
    /// Over the record bytes (after each batch header, compressed as sent) of the data
    /// batches: the broker stores and serves a producer's batches unchanged.
    pub(super) fingerprint: u64,
    /// Headers of the first record (None: it has none, or could not be read).
    pub(super) props: Option<MessageProps>,
    /// Base offset, last offset delta and record count of the first data batch.
    pub(super) first_batch: Option<(i64, i32, i32)>,
}

/// Summarises a partition's records. `Err`: a batch header that is not one (malformed).
pub(super) fn summarize(data: &[u8]) -> Res<Summary> {
    let mut s = Summarizer::default();
    let mut at = 0;
    while let Some((b, size)) = next_batch(&data[at..])? {
        at += size;
        s.whole(&b, size);
    }
    // Bytes after `at`: a partial batch the broker cut off at max_bytes (not counted).
    Ok(s.finish())
}

/// Builds a [`Summary`] batch by batch: whole batches, or (streaming) a header whose record
/// bytes follow in pieces.
#[derive(Debug)]
pub(super) struct Summarizer {
    s: Summary,
    fp: Fingerprint,
    /// A batch streaming through: counted once whole (a Fetch may cut it off).
    pending: Option<(Batch<'static>, usize)>,
    /// The fingerprint including the streaming data batch's bytes so far.
    tentative: Option<Fingerprint>,
}

impl Default for Summarizer {
    fn default() -> Self {
        Self {
            s: Summary {
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                ..Default::default()
            },
            fp: Fingerprint::default(),
            pending: None,
            tentative: None,
        }
    }
}

impl Summarizer {
    /// Counts a batch's header; true if it is a data batch.
    fn header(&mut self, b: &Batch<'_>, size: usize) -> bool {
        let s = &mut self.s;
        s.batches += 1;
        s.bytes += size as u64;
        if b.control() || b.record_count <= 0 {
            return false;
        }
        s.records = s.records.saturating_add(b.record_count as u32);
        s.last_offset = Some(b.base_offset.saturating_add(i64::from(b.last_offset_delta)));
        if s.first_offset.is_none() {
            s.codec = b.codec();
            s.producer_id = b.producer_id;
            s.producer_epoch = b.producer_epoch;
            s.base_sequence = b.base_sequence;
            s.first_offset = Some(b.base_offset);
            s.first_batch = Some((b.base_offset, b.last_offset_delta, b.record_count));
        }
        true
    }

    /// A whole batch.
    pub(super) fn whole(&mut self, b: &Batch<'_>, size: usize) {
        let first = self.s.first_offset.is_none();
        if !self.header(b, size) {
            return;
        }
        self.fp.update(b.records);
        if first
            && b.magic >= 2
            && let Some(rec) = first_record(b)
        {
            self.s.first_offset = Some(b.base_offset.saturating_add(i64::from(rec.offset_delta)));
            self.s.props = rec.props;
        }
    }

    /// A batch too big to hold: its header now, its record bytes through [`Self::stream`],
    /// counted at [`Self::end_streamed`].
    pub(super) fn start_streamed(&mut self, b: &Batch<'_>, size: usize) {
        let data = !b.control() && b.record_count > 0;
        self.tentative = data.then_some(self.fp);
        self.pending = Some((
            Batch {
                base_offset: b.base_offset,
                magic: b.magic,
                attributes: b.attributes,
                last_offset_delta: b.last_offset_delta,
                producer_id: b.producer_id,
                producer_epoch: b.producer_epoch,
                base_sequence: b.base_sequence,
                record_count: b.record_count,
                records: &[],
            },
            size,
        ));
    }

    pub(super) fn stream(&mut self, bytes: &[u8]) {
        if let Some(t) = &mut self.tentative {
            t.update(bytes);
        }
    }

    pub(super) fn end_streamed(&mut self) {
        let tentative = self.tentative.take();
        if let Some((b, size)) = self.pending.take()
            && self.header(&b, size)
            && let Some(t) = tentative
        {
            self.fp = t;
        }
    }

    pub(super) fn finish(mut self) -> Summary {
        if self.s.records > 0 {
            self.s.fingerprint = self.fp.finish();
        }
        self.s
    }
}

/// Reads a batch header (the first [`BATCH_HEADER`] bytes of a magic-2 batch, or a legacy
/// entry's first bytes) without its records: `(batch, whole size)`.
pub(super) fn batch_header(data: &[u8]) -> Res<(Batch<'_>, usize)> {
    if data.len() < V2_HEADER || data[16] != 2 {
        return Err(Undecodable);
    }
    let mut r = Reader::new(data, false);
    let base_offset = r.i64()?;
    let len = r.i32()?;
    if len < (V2_HEADER - 12) as i32 {
        return Err(Undecodable);
    }
    r.take(4 + 1 + 4)?; // leader epoch, magic, crc
    let attributes = r.i16()?;
    let last_offset_delta = r.i32()?;
    r.take(16)?; // base and max timestamps
    let batch = Batch {
        base_offset,
        magic: 2,
        attributes,
        last_offset_delta,
        producer_id: r.i64()?,
        producer_epoch: r.i16()?,
        base_sequence: r.i32()?,
        record_count: r.i32()?,
        records: &[],
    };
    Ok((batch, 12 + len as usize))
}

struct FirstRecord {
    offset_delta: i32,
    props: Option<MessageProps>,
}

/// The first record of a magic-2 batch, decompressing as little as needed.
fn first_record(b: &Batch<'_>) -> Option<FirstRecord> {
    let codec = b.codec();
    if codec == 0 {
        return parse_record(b.records);
    }
    let raw = decompress_first(codec, b.records)?;
    parse_record(&raw)
}

/// The decompressed bytes of (at least) the first record, or None (unsupported codec, corrupt
/// data, first record over [`MAX_FIRST_RECORD`]).
fn decompress_first(codec: u8, data: &[u8]) -> Option<Vec<u8>> {
    match codec {
        1 => read_first(flate2::read::GzDecoder::new(data)),
        2 if data.starts_with(XERIAL_MAGIC) => read_first(Xerial::new(data)),
        2 => {
            let n = snap::raw::decompress_len(data).ok()?;
            if n > 4 * MAX_FIRST_RECORD {
                return None;
            }
            snap::raw::Decoder::new().decompress_vec(data).ok()
        }
        3 => read_first(lz4_flex::frame::FrameDecoder::new(data)),
        4 => read_first(ruzstd::decoding::StreamingDecoder::new(data).ok()?),
        _ => None,
    }
}

/// Reads the first record's length, then that record, from a decompressing reader.
fn read_first(mut r: impl Read) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r).take(5).read_to_end(&mut buf).ok()?;
    let mut rd = Reader::new(&buf, false);
    let len = usize::try_from(rd.varint().ok()?).ok()?;
    let need = (buf.len() - rd.remaining()).checked_add(len)?;
    if need > MAX_FIRST_RECORD {
        return None;
    }
    if need > buf.len() {
        (&mut r)
            .take((need - buf.len()) as u64)
            .read_to_end(&mut buf)
            .ok()?;
    }
    Some(buf)
}

/// Kafka's (xerial snappy-java) framing: magic, version, compatible version, then blocks of
/// `i32 length, raw snappy`. A reader over the decompressed blocks.
struct Xerial<'a> {
    rest: &'a [u8],
    block: Vec<u8>,
    at: usize,
}

impl<'a> Xerial<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            rest: data.get(16..).unwrap_or_default(),
            block: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Xerial<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
        while self.at == self.block.len() {
            if self.rest.is_empty() {
                return Ok(0);
            }
            let mut r = Reader::new(self.rest, false);
            let n = usize::try_from(r.i32().map_err(|_| bad())?).map_err(|_| bad())?;
            let block = r.take(n).map_err(|_| bad())?;
            self.rest = r.rest();
            if snap::raw::decompress_len(block).map_err(|_| bad())? > 4 * MAX_FIRST_RECORD {
                return Err(bad());
            }
            self.block = snap::raw::Decoder::new()
                .decompress_vec(block)
                .map_err(|_| bad())?;
            self.at = 0;
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Parses one record (length-prefixed) from the start of `data`.
fn parse_record(data: &[u8]) -> Option<FirstRecord> {
    let mut r = Reader::new(data, false);
    let len = usize::try_from(r.varint().ok()?).ok()?;
    let mut r = Reader::new(r.take(len).ok()?, false);
    r.i8().ok()?; // attributes
    r.varlong().ok()?; // timestamp delta
    let offset_delta = r.varint().ok()?;
    skip_varbytes(&mut r)?; // key
    skip_varbytes(&mut r)?; // value
    let n = r.varint().ok()?;
    if n < 0 || n as usize > r.remaining() {
        return None;
    }
    let mut props = MessageProps::default();
    for _ in 0..n {
        let key = varbytes(&mut r)?.unwrap_or_default();
        let value = varbytes(&mut r)?.unwrap_or_default();
        match key {
            b"traceparent" => props.traceparent = Some(text(value, MAX_TRACE)),
            b"tracestate" => props.tracestate = Some(text(value, MAX_TRACE)),
            _ if props.headers.len() < MAX_HEADERS => props
                .headers
                .push((text(key, MAX_HEADER_VALUE), text(value, MAX_HEADER_VALUE))),
            _ => {}
        }
    }
    Some(FirstRecord {
        offset_delta,
        props: (n > 0).then_some(props),
    })
}

fn varbytes<'a>(r: &mut Reader<'a>) -> Option<Option<&'a [u8]>> {
    match r.varint().ok()? {
        -1 => Some(None),
        n if n < 0 => None,
        n => r.take(n as usize).ok().map(Some),
    }
}

fn skip_varbytes(r: &mut Reader<'_>) -> Option<()> {
    varbytes(r).map(|_| ())
}
