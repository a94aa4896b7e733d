//! Test helper server: moves known payloads over TCP in every way brokers do (many small writes,
//! writev, large writes, sendfile) so the capture tests can compare what the kernel saw with what
//! the client sent and received.
//!
//! Usage: `payload-server [PORT [ADDR]]` (port 0 or none = any free port, address 127.0.0.1 by
//! default); prints `listening PORT` once ready.
//! Each connection sends command lines; the server answers each, and closes on EOF:
//! - `small COUNT SIZE`  COUNT separate writes of SIZE bytes
//! - `writev COUNT`      one writev of COUNT buffers of varying sizes
//! - `big SIZE`          one write of SIZE bytes
//! - `sendfile SIZE`     SIZE bytes from a file with sendfile(2)
//! - `upload SIZE`       reads SIZE bytes from the client, answers `ok SIZE\n`
//! - `fetch PORT SIZE`   connects to 127.0.0.1:PORT itself, sends `big SIZE\n`, reads the SIZE
//!   bytes, answers `fetched SIZE\n` (an outgoing connection of the server, like a cluster link)
use std::{
    io::{BufRead, BufReader, IoSlice, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    thread,
};

use tests::pattern;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let addr: std::net::IpAddr = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or([127, 0, 0, 1].into());
    let listener = TcpListener::bind((addr, port)).expect("bind");
    println!("listening {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    for (n, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || {
            let _ = serve(stream, n as u64);
        });
    }
}

fn serve(stream: TcpStream, conn: u64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    let mut seed = conn * 1000;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        seed += 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.parse::<usize>().ok())
                .unwrap_or(0)
        };
        match words.first().copied() {
            Some("small") => {
                for i in 0..arg(1) {
                    writer.write_all(&pattern(seed + i as u64, arg(2)))?;
                }
            }
            Some("writev") => {
                let bufs: Vec<Vec<u8>> = (0..arg(1))
                    .map(|i| pattern(seed + i as u64, 1 + (i * 37) % 300))
                    .collect();
                let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
                let mut slices = &mut slices[..];
                while !slices.is_empty() {
                    let n = writer.write_vectored(slices)?;
                    IoSlice::advance_slices(&mut slices, n);
                }
            }
            Some("big") => writer.write_all(&pattern(seed, arg(1)))?,
            Some("sendfile") => sendfile(&writer, &pattern(seed, arg(1)))?,
            Some("upload") => {
                let mut buf = vec![0u8; arg(1)];
                reader.read_exact(&mut buf)?;
                writer.write_all(format!("ok {}\n", buf.len()).as_bytes())?;
            }
            Some("fetch") => {
                let mut upstream = TcpStream::connect(("127.0.0.1", arg(1) as u16))?;
                upstream.write_all(format!("big {}\n", arg(2)).as_bytes())?;
                upstream.shutdown(std::net::Shutdown::Write)?;
                let mut got = Vec::new();
                upstream.read_to_end(&mut got)?;
                writer.write_all(format!("fetched {}\n", got.len()).as_bytes())?;
            }
            _ => writer.write_all(b"unknown command\n")?,
        }
    }
}

fn sendfile(out: &TcpStream, content: &[u8]) -> std::io::Result<()> {
    let path = std::env::temp_dir().join(format!(
        "payload-server-{}-{}",
        std::process::id(),
        content.len()
    ));
    std::fs::write(&path, content)?;
    let file = std::fs::File::open(&path)?;
    std::fs::remove_file(&path)?;
    let mut offset: libc::off_t = 0;
    while (offset as usize) < content.len() {
        // SAFETY: valid fds and offset pointer.
        let n = unsafe {
            libc::sendfile(
                out.as_raw_fd(),
                file.as_raw_fd(),
                &mut offset,
                content.len() - offset as usize,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
