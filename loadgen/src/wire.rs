//! A buffered reader over a TCP stream that hands out whole frames without allocating per frame,
//! and the shared bookkeeping between a publisher and its confirm-reading thread.
use std::{
    io::{self, Read},
    net::TcpStream,
    sync::{Condvar, Mutex},
    time::Duration,
};

pub struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: vec![0; 1 << 16],
            lo: 0,
            hi: 0,
        }
    }

    /// Bounds each blocking read, so a consumer can check its deadline.
    pub fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(t))
    }

    /// Ensures `need` unread bytes are buffered. A timeout leaves what was read in place.
    pub fn fill(&mut self, need: usize) -> io::Result<()> {
        while self.hi - self.lo < need {
            if self.lo + need > self.buf.len() {
                self.buf.copy_within(self.lo..self.hi, 0);
                self.hi -= self.lo;
                self.lo = 0;
                if need > self.buf.len() {
                    self.buf.resize(need.next_power_of_two(), 0);
                }
            }
            let n = self.stream.read(&mut self.buf[self.hi..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection",
                ));
            }
            self.hi += n;
        }
        Ok(())
    }

    pub fn peek(&self) -> &[u8] {
        &self.buf[self.lo..self.hi]
    }

    pub fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.buf[self.lo..self.lo + n];
        self.lo += n;
        s
    }

    /// Reads through the next `\r\n`; returns the line without it.
    pub fn line(&mut self) -> io::Result<&[u8]> {
        let mut from = 0;
        loop {
            if let Some(p) = self.peek()[from..].windows(2).position(|w| w == b"\r\n") {
                let end = from + p;
                let s = &self.buf[self.lo..self.lo + end];
                self.lo += end + 2;
                return Ok(s);
            }
            from = (self.hi - self.lo).saturating_sub(1);
            let have = self.hi - self.lo;
            self.fill(have + 1)?;
        }
    }
}

/// Messages the broker has confirmed so far, shared by the publisher (waits for room in its
/// window) and the thread reading confirms; `failed` carries why the reader stopped.
#[derive(Default)]
pub struct Confirms {
    state: Mutex<(u64, Option<String>)>,
    cv: Condvar,
}

impl Confirms {
    pub fn set_at_least(&self, acked: u64) {
        let mut s = self.state.lock().unwrap();
        if acked > s.0 {
            s.0 = acked;
            self.cv.notify_all();
        }
    }

    pub fn fail(&self, why: String) {
        self.state.lock().unwrap().1 = Some(why);
        self.cv.notify_all();
    }

    /// Waits until at least `target` messages are confirmed, or `timeout`; returns the count.
    pub fn wait_for(&self, target: u64, timeout: Duration) -> Result<u64, String> {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .cv
            .wait_timeout_while(s, timeout, |s| s.0 < target && s.1.is_none())
            .unwrap();
        match &s.1 {
            Some(why) => Err(why.clone()),
            None => Ok(s.0),
        }
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
