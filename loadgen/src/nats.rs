//! NATS: INFO/CONNECT, PUB, SUB/MSG, PING/PONG. NATS has no publish confirms, so the publisher
//! sends a PING after every batch and counts a batch confirmed at its PONG (the server answers
//! in order, after processing what came before).
use std::{
    collections::VecDeque,
    io::{self, BufWriter, Write},
    net::TcpStream,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use crate::wire::{Confirms, Reader, is_timeout};
use crate::{Consume, Publish};

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("NATS: {what}"))
}

fn connect(addr: &str) -> io::Result<(TcpStream, Reader)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut r = Reader::new(s.try_clone()?);
    if !r.line()?.starts_with(b"INFO ") {
        return Err(bad("the server did not greet with INFO"));
    }
    s.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"loadgen\"}\r\nPING\r\n",
    )?;
    loop {
        let l = r.line()?;
        if l == b"PONG" {
            return Ok((s, r));
        }
        if l.starts_with(b"-ERR") {
            return Err(bad(&String::from_utf8_lossy(l)));
        }
    }
}

pub struct Publisher {
    out: BufWriter<TcpStream>,
    subject: String,
    batch: u64,
    /// Messages sent before each outstanding PING, oldest first.
    pings: Arc<Mutex<VecDeque<u64>>>,
    sent: u64,
}

pub fn publisher(
    addr: &str,
    subject: &str,
    confirms: Arc<Confirms>,
    batch: u64,
) -> io::Result<Publisher> {
    let (s, mut r) = connect(addr)?;
    let pings: Arc<Mutex<VecDeque<u64>>> = Arc::default();
    let mut w = s.try_clone()?;
    let p = pings.clone();
    thread::spawn(move || {
        let why = loop {
            match r.line() {
                Ok(b"PONG") => {
                    if let Some(n) = p.lock().unwrap().pop_front() {
                        confirms.set_at_least(n);
                    }
                }
                Ok(b"PING") => {
                    if let Err(e) = w.write_all(b"PONG\r\n") {
                        break format!("NATS publisher: {e}");
                    }
                }
                Ok(l) if l.starts_with(b"-ERR") => {
                    break format!("NATS publisher: {}", String::from_utf8_lossy(l));
                }
                Ok(_) => {}
                Err(e) => break format!("NATS publisher: {e}"),
            }
        };
        confirms.fail(why);
    });
    Ok(Publisher {
        out: BufWriter::with_capacity(1 << 16, s),
        subject: subject.to_owned(),
        batch: batch.max(1),
        pings,
        sent: 0,
    })
}

impl Publisher {
    fn ping(&mut self) -> io::Result<()> {
        self.pings.lock().unwrap().push_back(self.sent);
        self.out.write_all(b"PING\r\n")
    }
}

impl Publish for Publisher {
    fn publish(&mut self, _seq: u64, payload: &[u8]) -> io::Result<()> {
        write!(self.out, "PUB {} {}\r\n", self.subject, payload.len())?;
        self.out.write_all(payload)?;
        self.out.write_all(b"\r\n")?;
        self.sent += 1;
        if self.sent.is_multiple_of(self.batch) {
            self.ping()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        // A partial batch gets its own PING, so waiting for every confirm ends.
        if !self.sent.is_multiple_of(self.batch)
            && self.pings.lock().unwrap().back() != Some(&self.sent)
        {
            self.ping()?;
        }
        self.out.flush()
    }
}

pub struct Consumer {
    s: TcpStream,
    r: Reader,
}

pub fn consumer(addr: &str, subject: &str) -> io::Result<Consumer> {
    let (mut s, mut r) = connect(addr)?;
    write!(s, "SUB {subject} 1\r\nPING\r\n")?;
    // The PONG says the subscription is in place before anyone publishes.
    loop {
        let l = r.line()?;
        if l == b"PONG" {
            break;
        }
        if l.starts_with(b"-ERR") {
            return Err(bad(&String::from_utf8_lossy(l)));
        }
    }
    Ok(Consumer { s, r })
}

impl Consume for Consumer {
    fn next(&mut self) -> io::Result<Option<[u8; 16]>> {
        loop {
            let line = match self.r.line() {
                Ok(l) => l,
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            if line == b"PING" {
                self.s.write_all(b"PONG\r\n")?;
                continue;
            }
            if line.starts_with(b"-ERR") {
                return Err(bad(&String::from_utf8_lossy(line)));
            }
            if !line.starts_with(b"MSG ") {
                continue;
            }
            // MSG <subject> <sid> [reply-to] <#bytes>
            let len: usize = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .ok_or_else(|| bad("a MSG line without a size"))?;
            // The MSG line is consumed: wait out read timeouts until its payload is in.
            loop {
                match self.r.fill(len + 2) {
                    Ok(()) => break,
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            let body = self.r.take(len + 2);
            let head: [u8; 16] = body
                .get(..16)
                .ok_or_else(|| bad("a message shorter than the 16-byte header"))?
                .try_into()
                .unwrap();
            return Ok(Some(head));
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.r.set_timeout(t)
    }
}
