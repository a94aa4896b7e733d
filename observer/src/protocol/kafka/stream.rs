//! Streaming decode of Fetch responses over [`MAX_MESSAGE`](super::MAX_MESSAGE).
//!
//! A big fetch (a consumer catching up: fetch.max.bytes is 50 MiB by default) is never
//! buffered. Its structure — response header, topics, partition fields, the tagged sections —
//! is small and parsed from a bounded buffer ([`STRUCT_CAP`]) as it arrives; the records of
//! each partition stream through batch by batch: a batch up to [`BATCH_CAP`] is held whole
//! (decoded like in a buffered response: counts, offsets, first-record headers), a bigger one
//! contributes its 61-byte header and feeds the fingerprint as its bytes pass. The result is
//! the same [`FetchResult`] a buffered response gives, so the events are the same (except
//! trace headers of batches over [`BATCH_CAP`]). A structure that does not parse within its
//! bounds fails the stream: the response is then reported header-only, as oversize.
//!
//! Decisions depend on the bytes only: a structural element is parsed from at most
//! [`STRUCT_CAP`] bytes however they arrive, so chunking never changes the outcome.
use super::{
    records::{BATCH_HEADER, Summarizer, batch_header, next_batch},
    session::{FetchPart, FetchResult, Session, fetch_part_head},
    wire::{Reader, Res, Undecodable, is_flexible},
};

/// Largest structural element (a partition's fields with its aborted-transaction list).
pub(super) const STRUCT_CAP: usize = 64 << 10;
/// Largest record batch held whole while streaming.
pub(super) const BATCH_CAP: usize = 2 << 20;
/// Most partitions a streamed response may report.
const MAX_PARTS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Top,
    TopicHead,
    PartHead,
    Records { left: usize },
    PartTail,
    TopicTail,
    Tail,
    Done,
    Failed,
}

#[derive(Debug)]
pub(super) struct FetchStream {
    pub(super) corr: i32,
    version: i16,
    flex: bool,
    stage: Stage,
    /// Bytes of the message not handed to `feed` yet.
    unseen: usize,
    /// A structural element split across calls (≤ STRUCT_CAP).
    buf: Vec<u8>,
    topics_left: usize,
    parts_left: usize,
    topic: String,
    part: Option<FetchPart>,
    rec: RecStream,
    result: FetchResult,
}

impl FetchStream {
    /// `size`: message bytes after the size prefix.
    pub(super) fn new(corr: i32, version: i16, size: usize) -> Self {
        Self {
            corr,
            version,
            flex: is_flexible(super::wire::FETCH, version),
            stage: Stage::Top,
            unseen: size,
            buf: Vec::new(),
            topics_left: 0,
            parts_left: 0,
            topic: String::new(),
            part: None,
            rec: RecStream::default(),
            result: FetchResult::default(),
        }
    }

    pub(super) fn buffered(&self) -> usize {
        self.buf.len() + self.rec.buf.len()
    }

    /// The decoded response once the message has ended, or None if it did not decode.
    pub(super) fn finish(self) -> Option<FetchResult> {
        (self.stage == Stage::Done).then_some(self.result)
    }

    /// Parses one structural element from `buf` + `data`; None if more bytes are needed (all
    /// of `data` taken) or the stream failed.
    fn structural<T>(
        &mut self,
        data: &mut &[u8],
        parse: impl Fn(&mut Reader<'_>) -> Res<T>,
    ) -> Option<T> {
        let old = self.buf.len();
        let add = data.len().min(STRUCT_CAP - old);
        let (res, avail) = if old == 0 {
            let window = &data[..add];
            let mut r = Reader::new(window, self.flex);
            (parse(&mut r).map(|t| (t, add - r.remaining())), add)
        } else {
            self.buf.extend_from_slice(&data[..add]);
            let mut r = Reader::new(&self.buf, self.flex);
            (
                parse(&mut r).map(|t| (t, self.buf.len() - r.remaining())),
                self.buf.len(),
            )
        };
        match res {
            Ok((t, used)) => {
                *data = &data[used.saturating_sub(old)..];
                self.buf.clear();
                Some(t)
            }
            Err(_) => {
                if avail == STRUCT_CAP || (add == data.len() && self.unseen == 0) {
                    self.stage = Stage::Failed;
                    self.buf = Vec::new();
                } else if old == 0 {
                    self.buf.extend_from_slice(&data[..add]);
                }
                *data = &data[add..];
                None
            }
        }
    }

    /// The next bytes of the message (after its size prefix).
    pub(super) fn feed(&mut self, mut data: &[u8], session: &Session) {
        self.unseen = self.unseen.saturating_sub(data.len());
        let v = self.version;
        loop {
            match self.stage {
                Stage::Done | Stage::Failed => return,
                Stage::Records { left } => {
                    if data.is_empty() && left > 0 {
                        return;
                    }
                    let n = left.min(data.len());
                    if self.rec.feed(&data[..n]).is_err() {
                        self.stage = Stage::Failed;
                        return;
                    }
                    data = &data[n..];
                    if n < left {
                        self.stage = Stage::Records { left: left - n };
                        continue;
                    }
                    let rec = std::mem::take(&mut self.rec);
                    if let Some(mut p) = self.part.take() {
                        p.summary = rec.finish();
                        self.result.parts.push(p);
                    }
                    self.stage = Stage::PartTail;
                }
                Stage::Top => {
                    let flex = self.flex;
                    let Some((throttle, error, topics)) = self.structural(&mut data, |r| {
                        r.i32()?; // correlation id
                        if flex {
                            r.tags()?;
                        }
                        let throttle = if v >= 1 { r.i32()? } else { 0 };
                        let mut error = 0;
                        if v >= 7 {
                            error = r.i16()?;
                            r.i32()?;
                        }
                        Ok((throttle, error, r.count()?))
                    }) else {
                        return;
                    };
                    self.result.throttle = throttle;
                    self.result.error = error;
                    self.topics_left = topics;
                    self.stage = if topics > 0 {
                        Stage::TopicHead
                    } else {
                        Stage::Tail
                    };
                }
                Stage::TopicHead => {
                    let Some((topic, parts)) = self.structural(&mut data, |r| {
                        let topic = session.topic_of(r, v, 13)?;
                        Ok((topic, r.count()?))
                    }) else {
                        return;
                    };
                    self.topic = topic;
                    self.parts_left = parts;
                    self.stage = if parts > 0 {
                        Stage::PartHead
                    } else {
                        Stage::TopicTail
                    };
                }
                Stage::PartHead => {
                    if self.result.parts.len() >= MAX_PARTS {
                        self.stage = Stage::Failed;
                        return;
                    }
                    let topic = self.topic.clone();
                    let Some((part, len)) = self.structural(&mut data, |r| {
                        let p = fetch_part_head(r, v, topic.clone())?;
                        Ok((p, r.records_len()?))
                    }) else {
                        return;
                    };
                    self.part = Some(part);
                    self.rec = RecStream::default();
                    self.stage = Stage::Records { left: len };
                }
                Stage::PartTail | Stage::TopicTail | Stage::Tail => {
                    if self.structural(&mut data, |r| r.tags()).is_none() {
                        return;
                    }
                    self.stage = match self.stage {
                        Stage::PartTail => {
                            self.parts_left -= 1;
                            if self.parts_left > 0 {
                                Stage::PartHead
                            } else {
                                Stage::TopicTail
                            }
                        }
                        Stage::TopicTail => {
                            self.topics_left -= 1;
                            if self.topics_left > 0 {
                                Stage::TopicHead
                            } else {
                                Stage::Tail
                            }
                        }
                        _ => Stage::Done,
                    };
                }
            }
        }
    }
}

/// One partition's records streaming past.
#[derive(Debug, Default)]
struct RecStream {
    sum: Summarizer,
    /// The current batch's first bytes, or all of it when ≤ BATCH_CAP.
    buf: Vec<u8>,
    /// Bytes left of a big batch streaming through.
    big_left: usize,
}

impl RecStream {
    fn feed(&mut self, mut bytes: &[u8]) -> Res<()> {
        while !bytes.is_empty() {
            if self.big_left > 0 {
                let n = self.big_left.min(bytes.len());
                self.sum.stream(&bytes[..n]);
                self.big_left -= n;
                bytes = &bytes[n..];
                if self.big_left == 0 {
                    self.sum.end_streamed();
                }
                continue;
            }
            // Enough for the size and magic first.
            if self.buf.len() < 17 {
                let n = (17 - self.buf.len()).min(bytes.len());
                self.buf.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                continue;
            }
            let len = i32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
            let magic = self.buf[16];
            let min = if magic >= 2 { BATCH_HEADER - 12 } else { 14 };
            if len < min as i32 || magic > 2 {
                return Err(Undecodable);
            }
            let size = 12 + len as usize;
            let want = if size <= BATCH_CAP {
                size
            } else if magic == 2 {
                BATCH_HEADER
            } else {
                return Err(Undecodable);
            };
            let n = (want - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() < want {
                continue;
            }
            if want == size {
                let (b, _) = next_batch(&self.buf)?.ok_or(Undecodable)?;
                self.sum.whole(&b, size);
            } else {
                let (b, _) = batch_header(&self.buf)?;
                self.sum.start_streamed(&b, size);
                self.big_left = size - BATCH_HEADER;
            }
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(self) -> super::records::Summary {
        // A batch cut off by the end of the records (the broker stops at max_bytes) is not
        // counted, whether held or streaming.
        self.sum.finish()
    }
}
