//! brokerscope-loadgen: drives one broker on loopback with a publisher and a subscriber in one
//! process, and prints one line of results.
//!
//! - `wire`: buffered frame reader, confirm bookkeeping; `amqp`, `mqtt`, `nats`: the protocols.
//! - Saturation (`--rate 0`): publish as fast as the broker confirms, at most `--window`
//!   unconfirmed messages (AMQP publisher confirms, MQTT QoS 1 PUBACKs, NATS PING/PONG per batch).
//! - Rate-limited (`--rate N`): N messages per second on a schedule, same window.
//!
//! Every payload starts with the publish time (ns since the run's start) and a sequence number;
//! the subscriber turns them into publish → delivery latencies. Runs are bounded by
//! `--messages` and `--timeout`; the broker must be on 127.0.0.1.
mod amqp;
mod mqtt;
mod nats;
mod wire;

use std::{
    io,
    process::ExitCode,
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use wire::Confirms;

/// A connected publisher; writes are buffered until `flush`.
pub trait Publish {
    fn publish(&mut self, seq: u64, payload: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// A subscribed consumer; `next` returns a message's first 16 bytes, or None when a read timed
/// out (so the caller can check its deadline).
pub trait Consume: Send {
    fn next(&mut self) -> io::Result<Option<[u8; 16]>>;
    /// Sends acknowledgements still held back.
    fn finish(&mut self) -> io::Result<()>;
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Proto {
    Amqp,
    Mqtt,
    Nats,
}

#[derive(Debug)]
struct Args {
    proto: Proto,
    port: u16,
    messages: u64,
    payload: usize,
    window: u64,
    rate: u64,
    timeout: Duration,
    name: String,
}

const USAGE: &str = "usage: brokerscope-loadgen --proto amqp|mqtt|nats --port PORT \
[--messages N (10000)] [--payload BYTES (64, at least 16)] [--window N (1000)] \
[--rate MSGS_PER_S (0 = saturation)] [--timeout SECONDS (60)] [--name QUEUE_OR_TOPIC (bench)]";

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        proto: Proto::Mqtt,
        port: 0,
        messages: 10_000,
        payload: 64,
        window: 1000,
        rate: 0,
        timeout: Duration::from_secs(60),
        name: "bench".into(),
    };
    let mut proto = None;
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} {v:?}: expected a whole number\n{USAGE}"))
        };
        match flag.as_str() {
            "--proto" => {
                proto = Some(match value.as_str() {
                    "amqp" => Proto::Amqp,
                    "mqtt" => Proto::Mqtt,
                    "nats" => Proto::Nats,
                    _ => return Err(format!("--proto {value:?}: expected amqp, mqtt or nats")),
                })
            }
            "--port" => {
                a.port = u16::try_from(num(&value)?)
                    .map_err(|_| format!("--port {value}: not a TCP port"))?
            }
            "--messages" => a.messages = num(&value)?,
            "--payload" => a.payload = num(&value)? as usize,
            "--window" => a.window = num(&value)?,
            "--rate" => a.rate = num(&value)?,
            "--timeout" => a.timeout = Duration::from_secs(num(&value)?),
            "--name" => a.name = value,
            _ => return Err(format!("unknown option {flag:?}\n{USAGE}")),
        }
    }
    a.proto = proto.ok_or_else(|| format!("--proto is required\n{USAGE}"))?;
    if a.port == 0 {
        return Err(format!("--port is required\n{USAGE}"));
    }
    if a.messages == 0 || a.window == 0 || a.window >= 65_535 {
        return Err("--messages must be > 0 and --window in 1..65535 (MQTT packet ids)".into());
    }
    if a.payload < 16 {
        return Err("--payload must be at least 16 bytes (publish time and sequence)".into());
    }
    if a.name.is_empty()
        || a.name.len() > 200
        || a.name.contains([' ', '\r', '\n', '*', '>', '#', '+'])
    {
        return Err(format!("--name {:?}: use a plain queue/topic name", a.name));
    }
    Ok(a)
}

struct Report {
    sent: u64,
    received: u64,
    elapsed: Duration,
    latencies: Vec<u64>,
}

fn run(a: &Args) -> Result<Report, String> {
    let addr = format!("127.0.0.1:{}", a.port);
    let epoch = Instant::now();
    let deadline = epoch + a.timeout;
    let e = |what: &str| {
        let addr = addr.clone();
        let what = what.to_owned();
        move |err: io::Error| format!("{what} on {addr}: {err}")
    };
    let mut consumer: Box<dyn Consume> = match a.proto {
        Proto::Amqp => Box::new(amqp::consumer(&addr, &a.name).map_err(e("AMQP consumer"))?),
        Proto::Mqtt => Box::new(mqtt::consumer(&addr, &a.name).map_err(e("MQTT subscriber"))?),
        Proto::Nats => Box::new(nats::consumer(&addr, &a.name).map_err(e("NATS subscriber"))?),
    };
    consumer
        .set_timeout(Duration::from_millis(100))
        .map_err(e("consumer"))?;
    let n = a.messages;
    let (done_tx, done_rx) = mpsc::channel();
    let sub = thread::spawn(move || -> Result<(Vec<u64>, Instant), String> {
        let mut lat = Vec::with_capacity(n as usize);
        let mut last = Instant::now();
        while (lat.len() as u64) < n && Instant::now() < deadline {
            if let Some(head) = consumer.next().map_err(|e| format!("consumer: {e}"))? {
                last = Instant::now();
                let sent = u64::from_le_bytes(head[..8].try_into().unwrap());
                let now = last.duration_since(epoch).as_nanos() as u64;
                lat.push(now.saturating_sub(sent));
            }
        }
        consumer.finish().map_err(|e| format!("consumer: {e}"))?;
        let _ = done_tx.send(());
        Ok((lat, last))
    });

    let confirms = Arc::new(Confirms::default());
    let mut publisher: Box<dyn Publish> = match a.proto {
        Proto::Amqp => Box::new(
            amqp::publisher(&addr, &a.name, confirms.clone()).map_err(e("AMQP publisher"))?,
        ),
        Proto::Mqtt => Box::new(
            mqtt::publisher(&addr, &a.name, confirms.clone()).map_err(e("MQTT publisher"))?,
        ),
        Proto::Nats => Box::new(
            nats::publisher(&addr, &a.name, confirms.clone(), (a.window / 4).max(1))
                .map_err(e("NATS publisher"))?,
        ),
    };
    let mut payload = vec![b'x'; a.payload];
    let start = Instant::now();
    let mut acked = 0;
    let pe = |err: io::Error| format!("publisher: {err}");
    for seq in 0..n {
        if let Some(offset) = (seq * 1_000_000_000).checked_div(a.rate) {
            let due = start + Duration::from_nanos(offset);
            let now = Instant::now();
            if due > now {
                publisher.flush().map_err(pe)?;
                thread::sleep(due - now);
            }
        }
        while seq - acked >= a.window {
            publisher.flush().map_err(pe)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "timed out: the broker confirmed {acked} of {seq} messages"
                ));
            }
            acked = confirms.wait_for(seq - a.window + 1, left)?;
        }
        let t = epoch.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&t.to_le_bytes());
        payload[8..16].copy_from_slice(&seq.to_le_bytes());
        publisher.publish(seq, &payload).map_err(pe)?;
    }
    publisher.flush().map_err(pe)?;
    let left = deadline.saturating_duration_since(Instant::now());
    let acked = confirms.wait_for(n, left)?;
    let _ = done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    let (latencies, last) = sub
        .join()
        .map_err(|_| "the consumer thread panicked".to_string())??;
    if acked < n {
        return Err(format!(
            "timed out: the broker confirmed {acked} of {n} messages"
        ));
    }
    Ok(Report {
        sent: n,
        received: latencies.len() as u64,
        elapsed: last.saturating_duration_since(start),
        latencies,
    })
}

/// The q-quantile of sorted values (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("brokerscope-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(mut r) => {
            r.latencies.sort_unstable();
            let us = |q| quantile(&r.latencies, q) as f64 / 1000.0;
            println!(
                "proto={:?} mode={} sent={} received={} elapsed_s={:.6} rate={:.1} p50_us={:.1} p99_us={:.1} max_us={:.1}",
                args.proto,
                if args.rate == 0 { "saturation" } else { "rate" },
                r.sent,
                r.received,
                r.elapsed.as_secs_f64(),
                r.received as f64 / r.elapsed.as_secs_f64().max(1e-9),
                us(0.5),
                us(0.99),
                us(1.0),
            );
            if r.received < r.sent {
                eprintln!(
                    "brokerscope-loadgen: the subscriber received {} of {} messages within {:?}",
                    r.received, r.sent, args.timeout
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("brokerscope-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(s.split(' ').map(str::to_owned))
    }

    #[test]
    fn parses_and_rejects() {
        let a = args("--proto nats --port 4222 --messages 5 --rate 100").unwrap();
        assert_eq!(
            (a.proto, a.port, a.messages, a.rate),
            (Proto::Nats, 4222, 5, 100)
        );
        assert!(
            args("--port 1")
                .unwrap_err()
                .contains("--proto is required")
        );
        assert!(
            args("--proto amqp")
                .unwrap_err()
                .contains("--port is required")
        );
        assert!(
            args("--proto x --port 1")
                .unwrap_err()
                .contains("amqp, mqtt or nats")
        );
        assert!(
            args("--proto mqtt --port 1 --payload 8")
                .unwrap_err()
                .contains("16")
        );
        assert!(
            args("--proto mqtt --port 1 --window 70000")
                .unwrap_err()
                .contains("65535")
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(
            (quantile(&v, 0.5), quantile(&v, 0.99), quantile(&v, 1.0)),
            (50, 99, 100)
        );
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
