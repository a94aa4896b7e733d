//! Test helper: a tiny Kafka-protocol server that sends fetched record data with sendfile(2),
//! the way Java Kafka brokers do, plus the matching client.
//!
//! Server: `kafka-sendfile-server [--port P] [--dir DIR] [--stats FILE]` listens on
//! 127.0.0.1:P (0 or none = any free port) and prints `listening PORT` once ready (then nothing
//! more on stdout). At start it writes the segment file `DIR/bs-sendfile-0.log` (DIR defaults to
//! a fresh directory under the temp dir, which is removed again right after the file is opened;
//! with `--dir` the file stays for inspection). The segment holds [`BATCHES`] real Kafka v2
//! record batches (magic 2, CRC-32C over attributes..end) of [`RECORDS_PER_BATCH`] records each:
//! batch b has base offset 10·b and records at offsets 10·b..10·b+9; the record at offset o has
//! key `key-<o>`, value `rec-<o>`, timestamp 1_700_000_000_000 + o ms, no headers; producer id,
//! epoch and base sequence are -1, partition leader epoch 0, attributes 0 (no compression).
//!
//! Each connection is served on its own thread, one request at a time (size-prefixed, request
//! header v1: api_key, api_version, correlation_id, client_id):
//! - ApiVersions (18) v0..=2 → a v0 response: error 0, [Fetch (1) 4..=4, ApiVersions (18) 0..=0]
//! - Fetch (1) v4 → a v4 response for the first topic/partition asked for: topic `bs-sendfile`
//!   partition 0 with a fetch offset in 0..50 gets the ONE batch holding that offset (error 0,
//!   high watermark = last stable offset = 50, no aborted transactions); offset 50 gets an empty
//!   record set; beyond that error 1 (OFFSET_OUT_OF_RANGE); another topic/partition error 3
//!   (UNKNOWN_TOPIC_OR_PARTITION). The response header, the topic/partition header and the
//!   records length are written with write(2); the batch bytes then go with sendfile(2) straight
//!   from the segment file (by its position, never read into memory).
//! - anything else closes the connection.
//!
//! With `--stats FILE`, after every response the server rewrites FILE (write to FILE.tmp, then
//! rename) with one JSON object: `{"responses":R,"fetches":F,"sendfile_calls":C,
//! "sendfile_bytes":B,"segment":"PATH","batches":[{"base_offset":0,"records":10,"position":0,
//! "size":S,"crc":N},…]}` (size = the whole batch, 12-byte offset+length prefix included).
//!
//! Client: `kafka-sendfile-server --client PORT [--fetches K]` (K defaults to [`BATCHES`])
//! connects to 127.0.0.1:PORT, sends ApiVersions v0 (correlation id 1) then K Fetch v4 requests
//! (client id `bs-sendfile-client`, correlation ids 2.., max_wait 100 ms, topic `bs-sendfile`
//! partition 0, fetch offsets 0, 10, 20, …), checks every response (correlation id, error 0,
//! high watermark 50, exactly one batch with base offset = fetch offset, magic 2, a valid CRC-32C,
//! 10 records with consecutive offsets, keys and values as above) and prints one JSON line:
//! `{"ok":true,"api_versions":[[1,4,4],[18,0,0]],"fetches":[{"correlation_id":2,
//! "fetch_offset":0,"base_offset":0,"last_offset":9,"records":10,"high_watermark":50,
//! "batch_bytes":S,"crc":N,"values":["rec-0",…]},…],"offsets":[0,…,10·K-1],"record_count":10·K}`.
//! Any mismatch prints `kafka-sendfile-client: FAIL: …` on stderr and exits 1.
use std::{
    fs::{self, File},
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

pub const TOPIC: &str = "bs-sendfile";
pub const BATCHES: u64 = 5;
pub const RECORDS_PER_BATCH: u64 = 10;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
const API_FETCH: i16 = 1;
const API_VERSIONS: i16 = 18;

// ---------------------------------------------------------------------------------------------
// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table driven.

fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    t
}

fn crc32c(data: &[u8]) -> u32 {
    let table = crc32c_table();
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// ---------------------------------------------------------------------------------------------
// Record batch v2 encoding / decoding.

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_bytes_varint(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// One v2 record batch at `base` with `n` records (see the module docs for their contents).
fn encode_batch(base: i64, n: i64) -> Vec<u8> {
    let mut records = Vec::new();
    for delta in 0..n {
        let off = base + delta;
        let mut r = Vec::new();
        r.push(0u8); // attributes
        put_varint(&mut r, off - base); // timestamp delta (timestamps run with the offsets)
        put_varint(&mut r, delta); // offset delta
        put_bytes_varint(&mut r, format!("key-{off}").as_bytes());
        put_bytes_varint(&mut r, format!("rec-{off}").as_bytes());
        put_varint(&mut r, 0); // headers
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    // attributes .. end: the CRC-covered part.
    let mut tail = Vec::new();
    tail.extend_from_slice(&0i16.to_be_bytes()); // attributes
    tail.extend_from_slice(&((n - 1) as i32).to_be_bytes()); // last offset delta
    tail.extend_from_slice(&(BASE_TIMESTAMP + base).to_be_bytes()); // base timestamp
    tail.extend_from_slice(&(BASE_TIMESTAMP + base + n - 1).to_be_bytes()); // max timestamp
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&(n as i32).to_be_bytes()); // record count
    tail.extend_from_slice(&records);
    let crc = crc32c(&tail);
    let mut batch = Vec::new();
    batch.extend_from_slice(&base.to_be_bytes());
    // batch length: everything after this field (leader epoch 4 + magic 1 + crc 4 + tail).
    batch.extend_from_slice(&((4 + 1 + 4 + tail.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// A reader over big-endian Kafka primitives.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, i: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.i + n > self.b.len() {
            return Err(format!(
                "truncated: need {n} bytes at {} of {}",
                self.i,
                self.b.len()
            ));
        }
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        Ok(s)
    }
    fn i8(&mut self) -> Result<i8, String> {
        Ok(self.take(1)?[0] as i8)
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A nullable int16-length string (None for null).
    fn string(&mut self) -> Result<Option<String>, String> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(self.take(n as usize)?).into_owned(),
        ))
    }
    fn varint(&mut self) -> Result<i64, String> {
        let mut z = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err("varint too long".into())
    }
    fn bytes_varint(&mut self) -> Result<Option<&'a [u8]>, String> {
        let n = self.varint()?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize).map(Some)
    }
    fn rest(&self) -> usize {
        self.b.len() - self.i
    }
}

/// A decoded batch: (base offset, crc, [(offset, key, value)]), CRC and layout checked.
type Decoded = (i64, u32, Vec<(i64, String, String)>);

fn decode_batch(b: &[u8]) -> Result<Decoded, String> {
    let mut c = Cur::new(b);
    let base = c.i64()?;
    let len = c.i32()?;
    if len as usize != c.rest() {
        return Err(format!(
            "batch length {len}, but {} bytes follow (partial or several batches)",
            c.rest()
        ));
    }
    let _leader_epoch = c.i32()?;
    let magic = c.i8()?;
    if magic != 2 {
        return Err(format!("magic {magic}"));
    }
    let crc = c.u32()?;
    let computed = crc32c(&b[c.i..]);
    if crc != computed {
        return Err(format!(
            "CRC-32C {crc:#x} in the batch, {computed:#x} computed"
        ));
    }
    let attributes = c.i16()?;
    if attributes != 0 {
        return Err(format!("attributes {attributes:#x}"));
    }
    let last_delta = c.i32()?;
    let base_ts = c.i64()?;
    let _max_ts = c.i64()?;
    let (_pid, _epoch, _seq) = (c.i64()?, c.i16()?, c.i32()?);
    let count = c.i32()?;
    if count != last_delta + 1 {
        return Err(format!("{count} records, last offset delta {last_delta}"));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let len = c.varint()? as usize;
        let mut r = Cur::new(c.take(len)?);
        let _attr = r.i8()?;
        let ts_delta = r.varint()?;
        let delta = r.varint()?;
        let key = r.bytes_varint()?.unwrap_or_default();
        let value = r.bytes_varint()?.unwrap_or_default();
        let headers = r.varint()?;
        if headers != 0 || r.rest() != 0 {
            return Err(format!(
                "record {delta}: {headers} headers, {} extra bytes",
                r.rest()
            ));
        }
        if base_ts + ts_delta != BASE_TIMESTAMP + base + delta {
            return Err(format!("record {delta}: timestamp {}", base_ts + ts_delta));
        }
        out.push((
            base + delta,
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    if c.rest() != 0 {
        return Err(format!("{} bytes after the last record", c.rest()));
    }
    Ok((base, crc, out))
}

// ---------------------------------------------------------------------------------------------
// Server.

#[derive(Clone)]
struct BatchInfo {
    base: i64,
    records: i64,
    position: i64,
    size: usize,
    crc: u32,
}

#[derive(Default)]
struct Stats {
    responses: u64,
    fetches: u64,
    sendfile_calls: u64,
    sendfile_bytes: u64,
}

struct Segment {
    file: File,
    path: PathBuf,
    batches: Vec<BatchInfo>,
    end: i64,
    stats: Mutex<Stats>,
    stats_path: Option<PathBuf>,
}

impl Segment {
    fn write(dir: &Path) -> std::io::Result<(PathBuf, Vec<BatchInfo>)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{TOPIC}-0.log"));
        let mut bytes = Vec::new();
        let mut batches = Vec::new();
        for b in 0..BATCHES {
            let base = (b * RECORDS_PER_BATCH) as i64;
            let batch = encode_batch(base, RECORDS_PER_BATCH as i64);
            batches.push(BatchInfo {
                base,
                records: RECORDS_PER_BATCH as i64,
                position: bytes.len() as i64,
                size: batch.len(),
                crc: u32::from_be_bytes(batch[17..21].try_into().unwrap()),
            });
            bytes.extend_from_slice(&batch);
        }
        fs::write(&path, &bytes)?;
        Ok((path, batches))
    }

    fn save_stats(&self) {
        let Some(path) = &self.stats_path else {
            return;
        };
        let s = self.stats.lock().unwrap();
        let batches: Vec<String> = self
            .batches
            .iter()
            .map(|b| {
                format!(
                    "{{\"base_offset\":{},\"records\":{},\"position\":{},\"size\":{},\"crc\":{}}}",
                    b.base, b.records, b.position, b.size, b.crc
                )
            })
            .collect();
        let json = format!(
            "{{\"responses\":{},\"fetches\":{},\"sendfile_calls\":{},\"sendfile_bytes\":{},\
             \"segment\":\"{}\",\"batches\":[{}]}}\n",
            s.responses,
            s.fetches,
            s.sendfile_calls,
            s.sendfile_bytes,
            self.path.display(),
            batches.join(",")
        );
        let tmp = path.with_extension("tmp");
        if fs::write(&tmp, json).is_ok() {
            let _ = fs::rename(&tmp, path);
        }
    }
}

fn read_exact_or_eof(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..])? {
            0 if got == 0 => return Ok(false),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(true)
}

fn sendfile_all(out: &TcpStream, file: &File, mut offset: i64, len: usize) -> std::io::Result<u64> {
    let mut left = len;
    let mut calls = 0;
    while left > 0 {
        // SAFETY: valid fds; the kernel advances `offset`.
        let n = unsafe { libc::sendfile(out.as_raw_fd(), file.as_raw_fd(), &mut offset, left) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as usize;
        calls += 1;
    }
    Ok(calls)
}

fn serve(mut s: TcpStream, seg: Arc<Segment>) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    s.set_nodelay(true).map_err(io)?;
    loop {
        let mut size = [0u8; 4];
        if !read_exact_or_eof(&mut s, &mut size).map_err(io)? {
            return Ok(());
        }
        let size = i32::from_be_bytes(size);
        if !(8..=1 << 20).contains(&size) {
            return Err(format!("request size {size}"));
        }
        let mut req = vec![0u8; size as usize];
        if !read_exact_or_eof(&mut s, &mut req).map_err(io)? {
            return Err("EOF inside a request".into());
        }
        let mut c = Cur::new(&req);
        let (api, version, corr) = (c.i16()?, c.i16()?, c.i32()?);
        let _client_id = c.string()?;
        match (api, version) {
            (API_VERSIONS, 0..=2) => {
                let mut body = Vec::new();
                body.extend_from_slice(&corr.to_be_bytes());
                body.extend_from_slice(&0i16.to_be_bytes());
                body.extend_from_slice(&2i32.to_be_bytes());
                for (k, lo, hi) in [(API_FETCH, 4i16, 4i16), (API_VERSIONS, 0, 0)] {
                    for v in [k, lo, hi] {
                        body.extend_from_slice(&v.to_be_bytes());
                    }
                }
                let mut msg = (body.len() as i32).to_be_bytes().to_vec();
                msg.extend_from_slice(&body);
                s.write_all(&msg).map_err(io)?;
            }
            (API_FETCH, 4) => {
                let _replica = c.i32()?;
                let (_max_wait, _min_bytes, _max_bytes) = (c.i32()?, c.i32()?, c.i32()?);
                let _isolation = c.i8()?;
                let ntopics = c.i32()?;
                if ntopics < 1 {
                    return Err("fetch without topics".into());
                }
                let topic = c.string()?.unwrap_or_default();
                let nparts = c.i32()?;
                if nparts < 1 {
                    return Err("fetch without partitions".into());
                }
                let partition = c.i32()?;
                let fetch_offset = c.i64()?;
                let _part_max = c.i32()?;

                let (error, batch) = if topic != TOPIC || partition != 0 {
                    (3i16, None)
                } else if fetch_offset == seg.end {
                    (0, None)
                } else if fetch_offset < 0 || fetch_offset > seg.end {
                    (1, None)
                } else {
                    let b = seg
                        .batches
                        .iter()
                        .find(|b| (b.base..b.base + b.records).contains(&fetch_offset))
                        .cloned();
                    (0, b)
                };
                let records_len = batch.as_ref().map_or(0, |b| b.size);
                // Everything up to the records' length field, written with write(2).
                let mut head = Vec::new();
                head.extend_from_slice(&corr.to_be_bytes());
                head.extend_from_slice(&0i32.to_be_bytes()); // throttle time
                head.extend_from_slice(&1i32.to_be_bytes()); // responses
                head.extend_from_slice(&(topic.len() as i16).to_be_bytes());
                head.extend_from_slice(topic.as_bytes());
                head.extend_from_slice(&1i32.to_be_bytes()); // partitions
                head.extend_from_slice(&partition.to_be_bytes());
                head.extend_from_slice(&error.to_be_bytes());
                let hw = if error == 3 { -1 } else { seg.end };
                head.extend_from_slice(&hw.to_be_bytes()); // high watermark
                head.extend_from_slice(&hw.to_be_bytes()); // last stable offset
                head.extend_from_slice(&(-1i32).to_be_bytes()); // aborted transactions: null
                head.extend_from_slice(&(records_len as i32).to_be_bytes());
                let mut msg = ((head.len() + records_len) as i32).to_be_bytes().to_vec();
                msg.extend_from_slice(&head);
                s.write_all(&msg).map_err(io)?;
                let calls = match &batch {
                    Some(b) => sendfile_all(&s, &seg.file, b.position, b.size).map_err(io)?,
                    None => 0,
                };
                let mut st = seg.stats.lock().unwrap();
                st.fetches += 1;
                st.sendfile_calls += calls;
                st.sendfile_bytes += records_len as u64;
            }
            _ => return Err(format!("unsupported api {api} v{version}")),
        }
        seg.stats.lock().unwrap().responses += 1;
        seg.save_stats();
    }
}

fn server(args: &[String]) {
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let port: u16 = opt("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let keep = opt("--dir").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("brokerscope-kafka-sendfile-{}", std::process::id()))
    });
    let (path, batches) = Segment::write(&dir).expect("write the segment file");
    let file = File::open(&path).expect("open the segment file");
    if keep.is_none() {
        // The open fd keeps the data; nothing is left behind when we are killed.
        let _ = fs::remove_file(&path);
        let _ = fs::remove_dir(&dir);
    }
    let end = batches.last().map_or(0, |b| b.base + b.records);
    let seg = Arc::new(Segment {
        file,
        path,
        batches,
        end,
        stats: Mutex::new(Stats::default()),
        stats_path: opt("--stats").map(PathBuf::from),
    });
    seg.save_stats();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("listening {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let seg = seg.clone();
        thread::spawn(move || {
            if let Err(e) = serve(stream, seg) {
                eprintln!("kafka-sendfile-server: {e}");
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Client.

fn request(
    s: &mut TcpStream,
    api: i16,
    version: i16,
    corr: i32,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| e.to_string();
    let client_id = b"bs-sendfile-client";
    let mut msg = Vec::new();
    msg.extend_from_slice(&api.to_be_bytes());
    msg.extend_from_slice(&version.to_be_bytes());
    msg.extend_from_slice(&corr.to_be_bytes());
    msg.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    msg.extend_from_slice(client_id);
    msg.extend_from_slice(body);
    let mut framed = (msg.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    s.write_all(&framed).map_err(io)?;
    let mut size = [0u8; 4];
    s.read_exact(&mut size).map_err(io)?;
    let size = i32::from_be_bytes(size);
    if !(4..=1 << 24).contains(&size) {
        return Err(format!("response size {size}"));
    }
    let mut resp = vec![0u8; size as usize];
    s.read_exact(&mut resp).map_err(io)?;
    let got = i32::from_be_bytes(resp[..4].try_into().unwrap());
    if got != corr {
        return Err(format!("correlation id {got}, expected {corr}"));
    }
    Ok(resp)
}

fn client(port: u16, fetches: u64) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();

    let resp = request(&mut s, API_VERSIONS, 0, 1, &[])?;
    let mut c = Cur::new(&resp[4..]);
    let err = c.i16()?;
    if err != 0 {
        return Err(format!("ApiVersions error {err}"));
    }
    let mut versions = Vec::new();
    for _ in 0..c.i32()? {
        versions.push(format!("[{},{},{}]", c.i16()?, c.i16()?, c.i16()?));
    }
    if versions != ["[1,4,4]", "[18,0,0]"] {
        return Err(format!("ApiVersions {versions:?}"));
    }

    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for k in 0..fetches {
        let corr = 2 + k as i32;
        let fetch_offset = (k * RECORDS_PER_BATCH) as i64;
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
        body.extend_from_slice(&100i32.to_be_bytes()); // max wait ms
        body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
        body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
        body.push(0); // isolation level
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
        body.extend_from_slice(TOPIC.as_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes()); // partition
        body.extend_from_slice(&fetch_offset.to_be_bytes());
        body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // partition max bytes
        let resp = request(&mut s, API_FETCH, 4, corr, &body)?;
        let ctx = |e: String| format!("fetch at {fetch_offset}: {e}");
        let mut c = Cur::new(&resp[4..]);
        let _throttle = c.i32()?;
        if c.i32()? != 1 {
            return Err(ctx("not one topic".into()));
        }
        let topic = c.string()?.unwrap_or_default();
        if topic != TOPIC || c.i32()? != 1 {
            return Err(ctx(format!("topic {topic:?} / partitions")));
        }
        let (partition, error, hw, lso) = (c.i32()?, c.i16()?, c.i64()?, c.i64()?);
        let end = (BATCHES * RECORDS_PER_BATCH) as i64;
        if partition != 0 || error != 0 || hw != end || lso != end {
            return Err(ctx(format!(
                "partition {partition} error {error} high watermark {hw} lso {lso}"
            )));
        }
        let aborted = c.i32()?;
        if aborted > 0 {
            return Err(ctx(format!("{aborted} aborted transactions")));
        }
        let len = c.i32()?;
        if len <= 0 || len as usize != c.rest() {
            return Err(ctx(format!(
                "records length {len}, {} bytes left",
                c.rest()
            )));
        }
        let batch = c.take(len as usize)?;
        let (base, crc, records) = decode_batch(batch).map_err(ctx)?;
        if base != fetch_offset || records.len() as u64 != RECORDS_PER_BATCH {
            return Err(ctx(format!(
                "base offset {base}, {} records",
                records.len()
            )));
        }
        let mut values = Vec::new();
        for (i, (off, key, value)) in records.iter().enumerate() {
            if *off != base + i as i64
                || *key != format!("key-{off}")
                || *value != format!("rec-{off}")
            {
                return Err(ctx(format!("record {i}: {off} {key:?} {value:?}")));
            }
            offsets.push(off.to_string());
            values.push(format!("\"{value}\""));
        }
        out.push(format!(
            "{{\"correlation_id\":{corr},\"fetch_offset\":{fetch_offset},\"base_offset\":{base},\
             \"last_offset\":{},\"records\":{},\"high_watermark\":{hw},\"batch_bytes\":{len},\
             \"crc\":{crc},\"values\":[{}]}}",
            records.last().unwrap().0,
            records.len(),
            values.join(",")
        ));
    }
    Ok(format!(
        "{{\"ok\":true,\"api_versions\":[{}],\"fetches\":[{}],\"offsets\":[{}],\"record_count\":{}}}",
        versions.join(","),
        out.join(","),
        offsets.join(","),
        offsets.len()
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--client") {
        let port: u16 = args
            .get(i + 1)
            .and_then(|p| p.parse().ok())
            .expect("--client PORT");
        let fetches: u64 = args
            .iter()
            .position(|a| a == "--fetches")
            .and_then(|j| args.get(j + 1))
            .and_then(|k| k.parse().ok())
            .unwrap_or(BATCHES);
        if fetches > BATCHES {
            eprintln!("kafka-sendfile-client: FAIL: at most {BATCHES} fetches (offsets 0..50)");
            std::process::exit(2);
        }
        match client(port, fetches) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("kafka-sendfile-client: FAIL: {e}");
                std::process::exit(1);
            }
        }
    } else {
        server(&args);
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn batch_round_trip() {
        let b = encode_batch(20, 10);
        let (base, _, recs) = decode_batch(&b).unwrap();
        assert_eq!(base, 20);
        assert_eq!(recs.len(), 10);
        assert_eq!(recs[3], (23, "key-23".into(), "rec-23".into()));
    }
}
