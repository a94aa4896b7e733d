//! AMQP 0-9-1, the frames a confirming publisher and an acking consumer need: the connection
//! and channel handshake (PLAIN guest/guest, vhost `/`), queue.declare, confirm.select,
//! basic.publish (+ content header and body), basic.ack both ways, basic.qos and basic.consume.
use std::{
    io::{self, BufWriter, Write},
    net::TcpStream,
    sync::Arc,
    thread,
    time::Duration,
};

use crate::wire::{Confirms, Reader, is_timeout};
use crate::{Consume, Publish};

const FRAME_END: u8 = 0xCE;

fn frame(out: &mut impl Write, kind: u8, channel: u16, payload: &[u8]) -> io::Result<()> {
    let mut head = [0u8; 7];
    head[0] = kind;
    head[1..3].copy_from_slice(&channel.to_be_bytes());
    head[3..7].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    out.write_all(&head)?;
    out.write_all(payload)?;
    out.write_all(&[FRAME_END])
}

fn method(out: &mut impl Write, channel: u16, class: u16, id: u16, args: &[u8]) -> io::Result<()> {
    let mut p = Vec::with_capacity(4 + args.len());
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(args);
    frame(out, 1, channel, &p)
}

fn shortstr(v: &mut Vec<u8>, s: &str) {
    v.push(s.len() as u8);
    v.extend_from_slice(s.as_bytes());
}

/// One frame: (type, channel, payload).
fn read_frame(r: &mut Reader) -> io::Result<(u8, u16, &[u8])> {
    r.fill(7)?;
    let h = r.peek();
    let (kind, channel) = (h[0], u16::from_be_bytes([h[1], h[2]]));
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
    r.fill(7 + size + 1)?;
    let f = r.take(7 + size + 1);
    if f[7 + size] != FRAME_END {
        return Err(bad("a frame without its end marker 0xCE"));
    }
    Ok((kind, channel, &f[7..7 + size]))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("AMQP: {what}"))
}

/// Reads frames until the method (class, id); a connection.close or channel.close is an error
/// that carries the broker's reply text.
fn expect(r: &mut Reader, class: u16, id: u16) -> io::Result<Vec<u8>> {
    loop {
        let (kind, _, p) = read_frame(r)?;
        if kind != 1 || p.len() < 4 {
            continue;
        }
        let (c, m) = (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        );
        if (c, m) == (class, id) {
            return Ok(p[4..].to_vec());
        }
        if (c, m) == (10, 50) || (c, m) == (20, 40) {
            let text = p
                .get(7..7 + *p.get(6).unwrap_or(&0) as usize)
                .unwrap_or(b"");
            return Err(bad(&format!(
                "the broker closed: {}",
                String::from_utf8_lossy(text)
            )));
        }
    }
}

/// Connection and channel 1 open, the queue declared.
fn open(addr: &str, queue: &str) -> io::Result<(TcpStream, Reader)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut r = Reader::new(s.try_clone()?);
    s.write_all(b"AMQP\x00\x00\x09\x01")?;
    expect(&mut r, 10, 10)?; // connection.start
    let mut a = vec![0, 0, 0, 0]; // client-properties: empty table
    shortstr(&mut a, "PLAIN");
    let resp = b"\0guest\0guest";
    a.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    a.extend_from_slice(resp);
    shortstr(&mut a, "en_US");
    method(&mut s, 0, 10, 11, &a)?;
    let tune = expect(&mut r, 10, 30)?;
    let channel_max = tune
        .get(0..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let mut a = channel_max.to_be_bytes().to_vec();
    a.extend_from_slice(&131_072u32.to_be_bytes());
    a.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats: runs are short
    method(&mut s, 0, 10, 31, &a)?;
    let mut a = Vec::new();
    shortstr(&mut a, "/");
    shortstr(&mut a, "");
    a.push(0);
    method(&mut s, 0, 10, 40, &a)?;
    expect(&mut r, 10, 41)?;
    method(&mut s, 1, 20, 10, &[0])?;
    expect(&mut r, 20, 11)?;
    // queue.declare: non-durable, auto-delete once its consumer goes.
    let mut a = vec![0, 0];
    shortstr(&mut a, queue);
    a.push(0b1000);
    a.extend_from_slice(&[0, 0, 0, 0]);
    method(&mut s, 1, 50, 10, &a)?;
    expect(&mut r, 50, 11)?;
    Ok((s, r))
}

pub struct Publisher {
    out: BufWriter<TcpStream>,
    publish_args: Vec<u8>,
}

pub fn publisher(addr: &str, queue: &str, confirms: Arc<Confirms>) -> io::Result<Publisher> {
    let (mut s, mut r) = open(addr, queue)?;
    method(&mut s, 1, 85, 10, &[0])?; // confirm.select
    expect(&mut r, 85, 11)?;
    thread::spawn(move || {
        let why = loop {
            match read_frame(&mut r) {
                Ok((1, _, p)) if p.len() >= 13 && p[0..4] == [0, 60, 0, 80] => {
                    // Confirms for one queue arrive in order: the highest tag counts them all.
                    let tag = u64::from_be_bytes(p[4..12].try_into().unwrap());
                    confirms.set_at_least(tag);
                }
                Ok((1, _, p)) if p.len() >= 4 && p[0..4] == [0, 60, 0, 120] => {
                    break "AMQP: the broker nacked a publish".to_string();
                }
                Ok((1, _, p))
                    if p.len() >= 4 && (p[0..4] == [0, 10, 0, 50] || p[0..4] == [0, 20, 0, 40]) =>
                {
                    break "AMQP: the broker closed the publisher's channel".to_string();
                }
                Ok(_) => {}
                Err(e) => break format!("AMQP publisher: {e}"),
            }
        };
        confirms.fail(why);
    });
    let mut publish_args = vec![0, 0];
    shortstr(&mut publish_args, ""); // the default exchange routes by queue name
    shortstr(&mut publish_args, queue);
    publish_args.push(0);
    Ok(Publisher {
        out: BufWriter::with_capacity(1 << 16, s),
        publish_args,
    })
}

impl Publish for Publisher {
    fn publish(&mut self, _seq: u64, payload: &[u8]) -> io::Result<()> {
        method(&mut self.out, 1, 60, 40, &self.publish_args)?;
        let mut h = [0u8; 14];
        h[0..2].copy_from_slice(&60u16.to_be_bytes());
        h[4..12].copy_from_slice(&(payload.len() as u64).to_be_bytes());
        frame(&mut self.out, 2, 1, &h)?;
        frame(&mut self.out, 3, 1, payload)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

pub struct Consumer {
    s: TcpStream,
    r: Reader,
    /// The last delivery tag seen and the last acked (acks go out in batches, `multiple`).
    tag: u64,
    acked: u64,
    /// Waiting for the body of a delivery.
    in_message: bool,
    head: [u8; 16],
}

pub fn consumer(addr: &str, queue: &str) -> io::Result<Consumer> {
    let (mut s, mut r) = open(addr, queue)?;
    // basic.qos: at most 1000 unacked deliveries, like a real consumer would bound itself.
    let mut a = vec![0, 0, 0, 0];
    a.extend_from_slice(&1000u16.to_be_bytes());
    a.push(0);
    method(&mut s, 1, 60, 10, &a)?;
    expect(&mut r, 60, 11)?;
    let mut a = vec![0, 0];
    shortstr(&mut a, queue);
    shortstr(&mut a, "loadgen");
    a.push(0);
    a.extend_from_slice(&[0, 0, 0, 0]);
    method(&mut s, 1, 60, 20, &a)?;
    expect(&mut r, 60, 21)?;
    Ok(Consumer {
        s,
        r,
        tag: 0,
        acked: 0,
        in_message: false,
        head: [0; 16],
    })
}

impl Consumer {
    fn ack(&mut self) -> io::Result<()> {
        if self.tag > self.acked {
            let mut a = self.tag.to_be_bytes().to_vec();
            a.push(1); // multiple
            method(&mut self.s, 1, 60, 80, &a)?;
            self.acked = self.tag;
        }
        Ok(())
    }
}

impl Consume for Consumer {
    fn next(&mut self) -> io::Result<Option<[u8; 16]>> {
        loop {
            let (kind, _, p) = match read_frame(&mut self.r) {
                Ok(f) => f,
                Err(e) if is_timeout(&e) => {
                    self.ack()?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            match kind {
                1 if p.len() >= 4 && p[0..4] == [0, 60, 0, 60] => {
                    // basic.deliver: consumer-tag shortstr, then the delivery tag.
                    let at = 5 + p[4] as usize;
                    let tag = p
                        .get(at..at + 8)
                        .ok_or_else(|| bad("a short basic.deliver"))?;
                    self.tag = u64::from_be_bytes(tag.try_into().unwrap());
                    self.in_message = true;
                }
                1 if p.len() >= 4 && (p[0..4] == [0, 10, 0, 50] || p[0..4] == [0, 20, 0, 40]) => {
                    return Err(bad("the broker closed the consumer's channel"));
                }
                3 if self.in_message && p.len() >= 16 => {
                    self.head.copy_from_slice(&p[..16]);
                    self.in_message = false;
                    if self.tag - self.acked >= 100 {
                        self.ack()?;
                    }
                    return Ok(Some(self.head));
                }
                _ => {}
            }
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.ack()
    }

    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.r.set_timeout(t)
    }
}
