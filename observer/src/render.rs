//! Text and JSON renderings of events, shared by `brokerscope trace` and tests.
//!
//! JSON field names are stable (documented in the README): `time` (RFC 3339, ns), `system`,
//! `kind`, `pid`, `connection` {`id`, `local`, `peer`}, `direction`, `destination` {…, `name`},
//! and every id the protocol gives. Absent values are omitted, never null.
use serde_json::{Map, Value, json};

use crate::event::{BrokerEvent, Destination};

/// RFC 3339 UTC with nanoseconds, from ns since the epoch (no time-zone database needed).
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days → (year, month, day) for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn put<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), v.into());
    }
}

fn destination_json(d: &Destination) -> Value {
    let mut m = Map::new();
    put(&mut m, "name", d.name());
    put(&mut m, "vhost", d.vhost.clone());
    put(&mut m, "exchange", d.exchange.clone());
    put(&mut m, "routing_key", d.routing_key.clone());
    put(&mut m, "queue", d.queue.clone());
    put(&mut m, "topic", d.topic.clone());
    put(&mut m, "partition", d.partition);
    put(&mut m, "subject", d.subject.clone());
    put(&mut m, "group", d.group.clone());
    put(&mut m, "resource", d.resource);
    Value::Object(m)
}

/// One JSON object (one line of `trace --json`).
pub fn to_json(e: &BrokerEvent) -> Value {
    let mut m = Map::new();
    m.insert("time".into(), rfc3339(e.ts_ns).into());
    m.insert("system".into(), e.system.as_str().into());
    m.insert("kind".into(), e.kind.as_str().into());
    put(&mut m, "pid", e.conn.pid);
    m.insert(
        "connection".into(),
        json!({ "id": e.conn.id.0, "local": e.conn.local.to_string(), "peer": e.conn.peer.to_string() }),
    );
    m.insert("direction".into(), e.direction.as_str().into());
    put(&mut m, "method", e.method);
    put(&mut m, "channel", e.channel);
    if let Some(d) = &e.destination {
        m.insert("destination".into(), destination_json(d));
    }
    put(&mut m, "user", e.user.clone());
    put(&mut m, "mechanism", e.mechanism.clone());
    put(&mut m, "outcome", e.outcome.map(|o| o.as_str()));
    put(&mut m, "delivery_tag", e.delivery_tag);
    put(&mut m, "publish_seq", e.publish_seq);
    put(&mut m, "multiple", e.multiple);
    put(&mut m, "requeue", e.requeue);
    put(&mut m, "redelivered", e.redelivered);
    put(&mut m, "consumer_tag", e.consumer_tag.clone());
    put(&mut m, "packet_id", e.packet_id);
    put(&mut m, "offset", e.offset);
    put(&mut m, "record_count", e.record_count);
    put(&mut m, "reply_code", e.reply_code);
    put(&mut m, "reply_text", e.reply_text.clone());
    put(&mut m, "body_size", e.body_size);
    put(
        &mut m,
        "fingerprint",
        e.fingerprint.map(|f| format!("{f:016x}")),
    );
    put(&mut m, "message_count", e.message_count);
    put(&mut m, "consumer_count", e.consumer_count);
    put(&mut m, "qos", e.qos);
    put(&mut m, "retain", e.retain);
    put(&mut m, "dup", e.dup);
    put(&mut m, "client_id", e.client_id.clone());
    put(&mut m, "reply_to", e.reply_to.clone());
    put(&mut m, "latency_ns", e.latency_ns);
    for (k, v) in &e.attrs {
        m.entry(*k).or_insert_with(|| Value::from(v.as_str()));
    }
    if let Some(p) = &e.props {
        put(&mut m, "message_id", p.message_id.clone());
        put(&mut m, "correlation_id", p.correlation_id.clone());
        put(&mut m, "content_type", p.content_type.clone());
        put(&mut m, "delivery_mode", p.delivery_mode);
        put(&mut m, "traceparent", p.traceparent.clone());
        put(&mut m, "tracestate", p.tracestate.clone());
        if !p.headers.is_empty() {
            let headers: Map<String, Value> = p
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            m.insert("headers".into(), Value::Object(headers));
        }
    }
    Value::Object(m)
}

/// One human line: time, system, kind, connection, destination, then the key fields.
pub fn to_line(e: &BrokerEvent) -> String {
    let mut line = format!(
        "{} {:<4} {:<17} {} pid={} {}←{}",
        rfc3339(e.ts_ns),
        e.system.as_str(),
        e.kind.as_str(),
        e.conn.id,
        e.conn.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
        e.conn.local,
        e.conn.peer
    );
    let mut field = |k: &str, v: String| {
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(&v);
    };
    if let Some(m) = e.method {
        field("method", m.to_owned());
    }
    if let Some(c) = e.channel {
        field("ch", c.to_string());
    }
    if let Some(name) = e.destination.as_ref().and_then(Destination::name) {
        field("dest", name);
    }
    if let Some(v) = e.destination.as_ref().and_then(|d| d.vhost.clone()) {
        field("vhost", v);
    }
    if let Some(u) = &e.user {
        field("user", u.clone());
    }
    if let Some(o) = e.outcome {
        field("outcome", o.as_str().to_owned());
    }
    if let Some(t) = e.delivery_tag {
        field("tag", t.to_string());
    }
    if let Some(s) = e.publish_seq {
        field("seq", s.to_string());
    }
    if e.multiple == Some(true) {
        field("multiple", "true".into());
    }
    if let Some(r) = e.requeue {
        field("requeue", r.to_string());
    }
    if e.redelivered == Some(true) {
        field("redelivered", "true".into());
    }
    if let Some(c) = &e.consumer_tag {
        field("consumer", c.clone());
    }
    if let Some(c) = e.reply_code {
        field("code", c.to_string());
    }
    if let Some(t) = &e.reply_text {
        field("text", format!("{t:?}"));
    }
    if let Some(b) = e.body_size {
        field("size", b.to_string());
    }
    if let Some(n) = e.message_count {
        field("messages", n.to_string());
    }
    if let Some(id) = e.packet_id {
        field("packet_id", id.to_string());
    }
    if let Some(q) = e.qos {
        field("qos", q.to_string());
    }
    if e.retain == Some(true) {
        field("retain", "true".into());
    }
    if e.dup == Some(true) {
        field("dup", "true".into());
    }
    if let Some(c) = &e.client_id {
        field("client_id", c.clone());
    }
    if let Some(r) = &e.reply_to {
        field("reply_to", r.clone());
    }
    if let Some(o) = e.offset {
        field("offset", o.to_string());
    }
    if let Some(p) = e.destination.as_ref().and_then(|d| d.partition) {
        field("partition", p.to_string());
    }
    if let Some(g) = e.destination.as_ref().and_then(|d| d.group.clone()) {
        field("group", g);
    }
    if let Some(n) = e.record_count {
        field("records", n.to_string());
    }
    if let Some(l) = e.latency_ns {
        field("latency", format!("{:.3}ms", l as f64 / 1e6));
    }
    for (k, v) in &e.attrs {
        field(k, v.clone());
    }
    if let Some(p) = &e.props {
        if let Some(id) = &p.message_id {
            field("msg_id", id.clone());
        }
        if let Some(tp) = &p.traceparent {
            field("traceparent", tp.clone());
        }
    }
    line
}

/// Shell-style glob: `*` any run of characters, `?` one character; everything else literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("orders.*", "orders.eu"));
        assert!(glob_match("*orders*", "amq.default/bs.orders"));
        assert!(glob_match("o?ders", "orders"));
        assert!(!glob_match("orders.*", "payments.eu"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
