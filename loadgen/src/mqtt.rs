//! MQTT 3.1.1: CONNECT/CONNACK (clean session), QoS 1 PUBLISH with PUBACK both ways, SUBSCRIBE
//! at QoS 1.
use std::{
    io::{self, BufWriter, Write},
    net::TcpStream,
    sync::Arc,
    thread,
    time::Duration,
};

use crate::wire::{Confirms, Reader, is_timeout};
use crate::{Consume, Publish};

fn remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn string(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("MQTT: {what}"))
}

/// One packet: (first byte, body).
fn read_packet(r: &mut Reader) -> io::Result<(u8, &[u8])> {
    r.fill(2)?;
    let (mut len, mut shift, mut i) = (0usize, 0, 1);
    loop {
        r.fill(i + 1)?;
        let b = r.peek()[i];
        len |= ((b & 0x7F) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(bad("a remaining length over 4 bytes"));
        }
    }
    r.fill(i + len)?;
    let p = r.take(i + len);
    Ok((p[0], &p[i..]))
}

fn connect(addr: &str, client_id: &str) -> io::Result<(TcpStream, Reader)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut r = Reader::new(s.try_clone()?);
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]); // 3.1.1, clean session, keepalive 60 s
    string(&mut body, client_id);
    s.write_all(&packet(0x10, &body))?;
    let (first, b) = read_packet(&mut r)?;
    if first != 0x20 || b.len() < 2 || b[1] != 0 {
        return Err(bad(&format!("CONNECT refused (CONNACK {b:?})")));
    }
    Ok((s, r))
}

pub struct Publisher {
    out: BufWriter<TcpStream>,
    topic: String,
    buf: Vec<u8>,
}

pub fn publisher(addr: &str, topic: &str, confirms: Arc<Confirms>) -> io::Result<Publisher> {
    let (s, mut r) = connect(addr, &format!("loadgen-pub-{}", std::process::id()))?;
    thread::spawn(move || {
        let mut acked = 0u64;
        let why = loop {
            match read_packet(&mut r) {
                Ok((0x40, _)) => {
                    acked += 1;
                    confirms.set_at_least(acked);
                }
                Ok(_) => {}
                Err(e) => break format!("MQTT publisher: {e}"),
            }
        };
        confirms.fail(why);
    });
    Ok(Publisher {
        out: BufWriter::with_capacity(1 << 16, s),
        topic: topic.to_owned(),
        buf: Vec::new(),
    })
}

impl Publish for Publisher {
    fn publish(&mut self, seq: u64, payload: &[u8]) -> io::Result<()> {
        let id = (seq % 65_535) as u16 + 1;
        let len = 2 + self.topic.len() + 2 + payload.len();
        self.buf.clear();
        self.buf.push(0x32);
        remaining_length(&mut self.buf, len);
        string(&mut self.buf, &self.topic);
        self.buf.extend_from_slice(&id.to_be_bytes());
        self.out.write_all(&self.buf)?;
        self.out.write_all(payload)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

pub struct Consumer {
    out: BufWriter<TcpStream>,
    r: Reader,
}

pub fn consumer(addr: &str, topic: &str) -> io::Result<Consumer> {
    let (mut s, mut r) = connect(addr, &format!("loadgen-sub-{}", std::process::id()))?;
    let mut body = vec![0, 1];
    string(&mut body, topic);
    body.push(1);
    s.write_all(&packet(0x82, &body))?;
    loop {
        let (first, b) = read_packet(&mut r)?;
        if first == 0x90 {
            if b.get(2) == Some(&0x80) {
                return Err(bad("SUBSCRIBE refused"));
            }
            break;
        }
    }
    Ok(Consumer {
        out: BufWriter::with_capacity(1 << 14, s),
        r,
    })
}

impl Consume for Consumer {
    fn next(&mut self) -> io::Result<Option<[u8; 16]>> {
        loop {
            let (first, b) = match read_packet(&mut self.r) {
                Ok(p) => p,
                Err(e) if is_timeout(&e) => {
                    self.out.flush()?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            if first & 0xF0 != 0x30 {
                continue;
            }
            let qos = (first >> 1) & 3;
            let tlen = b.get(0..2).map_or(0, |t| u16::from_be_bytes([t[0], t[1]])) as usize;
            let mut at = 2 + tlen;
            if qos > 0 {
                let id = [b[at], b[at + 1]];
                at += 2;
                self.out.write_all(&[0x40, 2, id[0], id[1]])?;
            }
            let head: [u8; 16] = b
                .get(at..at + 16)
                .ok_or_else(|| bad("a message shorter than the 16-byte header"))?
                .try_into()
                .unwrap();
            // PUBACKs go out when the socket has nothing more buffered for us.
            if self.r.peek().is_empty() {
                self.out.flush()?;
            }
            return Ok(Some(head));
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.r.set_timeout(t)
    }
}
