//! Scraping and reading `/metrics` of `brokerscope run` in the end-to-end tests.
//!
//! [`scrape`] is a plain HTTP/1.1 GET over a std `TcpStream` (`Connection: close`, 5 s bounds),
//! and [`Scrape::parse`] reads the OpenMetrics text format (and the Prometheus text format it
//! grew from) as prometheus-client 0.24 writes it:
//!
//! ```text
//! # HELP brokerscope_messages_published Messages published.
//! # TYPE brokerscope_messages_published counter
//! brokerscope_messages_published_total{system="amqp",destination="orders"} 20
//! # TYPE brokerscope_confirm_latency_seconds histogram
//! # UNIT brokerscope_confirm_latency_seconds seconds
//! brokerscope_confirm_latency_seconds_sum{system="mqtt"} 0.0187
//! brokerscope_confirm_latency_seconds_count{system="mqtt"} 200
//! brokerscope_confirm_latency_seconds_bucket{le="0.0001",system="mqtt"} 120
//! brokerscope_confirm_latency_seconds_bucket{le="+Inf",system="mqtt"} 200
//! # EOF
//! ```
//!
//! Samples keep their full names (`_total`, `_bucket`, `_count`, `_sum`, `_created`, …); a family
//! is the name a `# TYPE` line declares. Label values are unescaped (`\"`, `\\`, `\n`), exemplars
//! (`… # {trace_id="…"} 1.0`) are skipped, a timestamp is kept as written (seconds in
//! OpenMetrics, milliseconds in the Prometheus format). Two samples with the same name and
//! labels, a malformed line, or anything after `# EOF` make the parse fail: the tests should
//! notice an exporter that writes what Prometheus would refuse.
//!
//! Note: prometheus-client 0.24 does not escape label values (it writes them as they are), so
//! a destination containing `"`, `\` or a newline would make the daemon's exposition invalid;
//! see the test `prometheus_client_does_not_escape_label_values`.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// Connect, write and read bound of [`http_get`] (each, and the whole exchange).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The full sample name (`brokerscope_messages_published_total`).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// As written after the value, when there is one.
    pub timestamp: Option<f64>,
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Every sample, in exposition order.
    pub samples: Vec<Sample>,
    /// Family name → type (`counter`, `gauge`, `histogram`, `info`, `unknown`, …) from `# TYPE`.
    pub types: BTreeMap<String, String>,
    /// Family name → `# HELP` text (unescaped).
    pub help: BTreeMap<String, String>,
    /// Family name → `# UNIT`.
    pub units: BTreeMap<String, String>,
    /// Whether the exposition ended with `# EOF` (OpenMetrics requires it).
    pub eof: bool,
    /// The response's Content-Type, when it came from [`scrape`].
    pub content_type: Option<String>,
}

/// A histogram family's series, summed (see [`Scrape::histogram`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// `_count`, summed over the matching series.
    pub count: f64,
    /// `_sum`, summed over the matching series.
    pub sum: f64,
    /// (`le`, cumulative count) by increasing `le`, summed per `le`; the last `le` is +Inf
    /// when the exporter wrote it (prometheus-client always does).
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// The `q`-quantile as Prometheus' `histogram_quantile` estimates it: find the bucket the
    /// rank `q · count` falls in and interpolate linearly between its lower bound (the previous
    /// `le`, 0 for the first bucket) and its `le`. A rank in the +Inf bucket gives the largest
    /// finite `le`. NaN without observations or without a +Inf bucket; -Inf / +Inf for `q`
    /// below 0 / above 1.
    pub fn quantile(&self, q: f64) -> f64 {
        if q.is_nan() {
            return f64::NAN;
        }
        if q < 0.0 {
            return f64::NEG_INFINITY;
        }
        if q > 1.0 {
            return f64::INFINITY;
        }
        let Some(&(last_le, total)) = self.buckets.last() else {
            return f64::NAN;
        };
        if last_le != f64::INFINITY || total <= 0.0 || total.is_nan() {
            return f64::NAN;
        }
        if self.buckets.len() < 2 {
            return f64::NAN;
        }
        let rank = q * total;
        let b = self
            .buckets
            .iter()
            .position(|&(_, cum)| cum >= rank)
            .unwrap_or(self.buckets.len() - 1);
        if b == self.buckets.len() - 1 {
            return self.buckets[b - 1].0;
        }
        let (end, cum) = self.buckets[b];
        if b == 0 && end <= 0.0 {
            return end;
        }
        let (start, below) = if b == 0 {
            (0.0, 0.0)
        } else {
            self.buckets[b - 1]
        };
        let in_bucket = cum - below;
        if in_bucket <= 0.0 {
            return end;
        }
        start + (end - start) * ((rank - below) / in_bucket)
    }

    /// Observations in buckets with `le` ≤ `le` (the cumulative count of the bucket whose bound
    /// is exactly `le`, if there is one).
    pub fn cumulative(&self, le: f64) -> Option<f64> {
        self.buckets.iter().find(|b| b.0 == le).map(|b| b.1)
    }
}

/// Sample-name suffixes that belong to a family of a shorter name.
const SUFFIXES: &[&str] = &[
    "_total", "_bucket", "_count", "_sum", "_created", "_info", "_gcount", "_gsum",
];

fn matches(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
}

impl Scrape {
    /// Parses an OpenMetrics or Prometheus text exposition (see the module docs).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut me = Self::default();
        let mut seen = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if me.eof {
                if line.is_empty() {
                    continue;
                }
                return Err(format!("line {n}: {line:?} after # EOF"));
            }
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                me.comment(rest.trim_start())
                    .map_err(|e| format!("line {n}: {e}: {line:?}"))?;
                continue;
            }
            let sample = parse_sample(line).map_err(|e| format!("line {n}: {e}: {line:?}"))?;
            if !seen.insert((sample.name.clone(), sample.labels.clone())) {
                return Err(format!(
                    "line {n}: a second sample of the same series: {line:?}"
                ));
            }
            me.samples.push(sample);
        }
        Ok(me)
    }

    fn comment(&mut self, rest: &str) -> Result<(), String> {
        if rest.trim_end() == "EOF" {
            self.eof = true;
            return Ok(());
        }
        let (keyword, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (family, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let map = match keyword {
            "TYPE" => &mut self.types,
            "HELP" => &mut self.help,
            "UNIT" => &mut self.units,
            _ => return Ok(()), // a plain comment (Prometheus text format)
        };
        if !valid_name(family) {
            return Err(format!("# {keyword} without a valid metric name"));
        }
        let text = if keyword == "HELP" {
            unescape(text)?
        } else {
            text.trim().to_string()
        };
        if map.insert(family.to_string(), text).is_some() {
            return Err(format!("a second # {keyword} for {family}"));
        }
        Ok(())
    }

    /// Every sample named exactly `name` (`…_total`, `…_bucket`, …), with its labels.
    pub fn samples(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| (&s.labels, s.value))
            .collect()
    }

    /// The value of the one sample named `name` whose labels include every pair of `labels`
    /// (it may have more). `None` when no sample or more than one matches: use [`Scrape::sum`]
    /// for a total across series.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && matches(s, labels));
        let first = found.next()?;
        match found.next() {
            None => Some(first.value),
            Some(_) => None,
        }
    }

    /// The sum of every sample named `name` whose labels include every pair of `labels`
    /// (0 when none matches).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && matches(s, labels))
            .map(|s| s.value)
            .sum()
    }

    /// How many samples named `name` have labels including every pair of `labels`.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.samples
            .iter()
            .filter(|s| s.name == name && matches(s, labels))
            .count()
    }

    /// The histogram `base` (family name, without `_bucket`/`_count`/`_sum`) over every series
    /// whose labels include every pair of `labels`: `_count`, `_sum` and each bucket's
    /// cumulative count are summed across those series (so the result is the histogram of all
    /// their observations together, as `sum by (le)` would give in PromQL). `None` when no
    /// `_bucket` sample matches, or when the matching series do not all have the same `le`
    /// bounds (their sum would mean nothing).
    pub fn histogram(&self, base: &str, labels: &[(&str, &str)]) -> Option<Histogram> {
        let bucket_name = format!("{base}_bucket");
        // Series (labels without le) → its le bounds, in order.
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<f64>> = BTreeMap::new();
        let mut per_le: Vec<(f64, f64)> = Vec::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.name == bucket_name && matches(s, labels))
        {
            let le = parse_value(s.labels.get("le")?).ok()?;
            let mut key = s.labels.clone();
            key.remove("le");
            series.entry(key).or_default().push(le);
            match per_le.iter_mut().find(|(b, _)| *b == le) {
                Some(entry) => entry.1 += s.value,
                None => per_le.push((le, s.value)),
            }
        }
        let mut bounds = series.into_values().map(|mut les| {
            les.sort_by(f64::total_cmp);
            les
        });
        let first = bounds.next()?;
        if bounds.any(|les| les != first) {
            return None;
        }
        per_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram {
            count: self.sum(&format!("{base}_count"), labels),
            sum: self.sum(&format!("{base}_sum"), labels),
            buckets: per_le,
        })
    }

    /// The family names: every name a `# TYPE` line declares, plus the name of every sample
    /// that belongs to no declared family (the name itself, suffix and all).
    pub fn families(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.types.keys().cloned().collect();
        for s in &self.samples {
            out.insert(self.family_of(&s.name).to_string());
        }
        out
    }

    /// The declared family a sample name belongs to (`x_total` → `x` when `# TYPE x` exists),
    /// else the name itself.
    pub fn family_of<'a>(&self, sample: &'a str) -> &'a str {
        if self.types.contains_key(sample) {
            return sample;
        }
        SUFFIXES
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|base| self.types.contains_key(*base))
            .unwrap_or(sample)
    }

    /// The declared type of `family` (`counter`, `histogram`, …).
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }
}

impl std::str::FromStr for Scrape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("not a number: {s:?}")),
    }
}

/// `\\`, `\"` and `\n` (the only escapes either format has).
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// `name{label="value",…} value [timestamp] [# {exemplar labels} value [timestamp]]`
fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .unwrap_or(line.len());
    let name = &line[..end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after)?;
        labels = parsed;
        rest = after;
    }
    // Exemplar: everything from " # " on.
    let rest = rest.split_once(" # ").map_or(rest, |(r, _)| r);
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    let timestamp = fields.next().map(parse_value).transpose()?;
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp,
    })
}

/// Parses `k="v",k2="v2"}` (after the `{`); returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if !valid_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key}: value not quoted"))?;
        // The closing quote: the first '"' not escaped by a backslash.
        let mut close = None;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(|| format!("label {key}: unterminated value"))?;
        let value = unescape(&s[..close])?;
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        s = s[close + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// An HTTP response read to the end.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked when the server sent it chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path HTTP/1.1` with `Connection: close` on a std `TcpStream`; connect, write and the
/// whole read are each bounded by [`TIMEOUT`]. Any status is returned.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("{addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("GET {path} to {addr}: {e}"))?;
    let deadline = Instant::now() + TIMEOUT;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "GET {path} from {addr}: response not complete within {TIMEOUT:?}"
            ));
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("GET {path} from {addr}: reading: {e}")),
        }
    }
    parse_response(&raw).map_err(|e| format!("GET {path} from {addr}: {e}"))
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", raw.len()))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "headers not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let body = &raw[head_end + 4..];
    response.body = if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)?
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if body.len() < len {
            return Err(format!("body {} bytes, Content-Length {len}", body.len()));
        }
        body[..len].to_vec()
    } else {
        body.to_vec()
    };
    Ok(response)
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// GETs `/metrics` from `addr` (see [`http_get`]), requires status 200 and parses the body.
pub fn scrape(addr: SocketAddr) -> Result<Scrape, String> {
    let response = http_get(addr, "/metrics")?;
    let body = String::from_utf8(response.body.clone())
        .map_err(|_| format!("GET /metrics from {addr}: body not UTF-8"))?;
    if response.status != 200 {
        return Err(format!(
            "GET /metrics from {addr}: status {}: {}",
            response.status,
            body.chars().take(500).collect::<String>()
        ));
    }
    let mut parsed = Scrape::parse(&body).map_err(|e| format!("/metrics from {addr}: {e}"))?;
    parsed.content_type = response.header("content-type").map(str::to_string);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In the shape prometheus-client 0.24 encodes a registry with the prefix `brokerscope`.
    const EXPOSITION: &str = r#"# HELP brokerscope_messages_published Messages published.
# TYPE brokerscope_messages_published counter
brokerscope_messages_published_total{system="amqp",destination="latency"} 200
brokerscope_messages_published_total{system="mqtt",destination="latency/t"} 201
brokerscope_messages_published_total{system="mqtt",destination="card/{i}/x"} 10000
# HELP brokerscope_confirm_latency_seconds Publish to confirm, at the broker.
# TYPE brokerscope_confirm_latency_seconds histogram
# UNIT brokerscope_confirm_latency_seconds seconds
brokerscope_confirm_latency_seconds_sum{system="amqp",destination="latency"} 0.03
brokerscope_confirm_latency_seconds_count{system="amqp",destination="latency"} 200
brokerscope_confirm_latency_seconds_bucket{le="0.0001",system="amqp",destination="latency"} 20
brokerscope_confirm_latency_seconds_bucket{le="0.001",system="amqp",destination="latency"} 180
brokerscope_confirm_latency_seconds_bucket{le="0.01",system="amqp",destination="latency"} 200
brokerscope_confirm_latency_seconds_bucket{le="+Inf",system="amqp",destination="latency"} 200
brokerscope_confirm_latency_seconds_sum{system="mqtt",destination="latency/t"} 0.01
brokerscope_confirm_latency_seconds_count{system="mqtt",destination="latency/t"} 100
brokerscope_confirm_latency_seconds_bucket{le="0.0001",system="mqtt",destination="latency/t"} 60
brokerscope_confirm_latency_seconds_bucket{le="0.001",system="mqtt",destination="latency/t"} 100
brokerscope_confirm_latency_seconds_bucket{le="0.01",system="mqtt",destination="latency/t"} 100
brokerscope_confirm_latency_seconds_bucket{le="+Inf",system="mqtt",destination="latency/t"} 100
# HELP brokerscope_connections Open connections.
# TYPE brokerscope_connections gauge
brokerscope_connections{system="nats"} 3
# HELP brokerscope_events_lost Events lost.
# TYPE brokerscope_events_lost counter
brokerscope_events_lost_total 0
# EOF
"#;

    fn parsed() -> Scrape {
        Scrape::parse(EXPOSITION).unwrap()
    }

    #[test]
    fn counters_by_exact_labels_and_totals() {
        let s = parsed();
        assert!(s.eof);
        let name = "brokerscope_messages_published_total";
        assert_eq!(
            s.value(name, &[("system", "amqp"), ("destination", "latency")]),
            Some(200.0)
        );
        assert_eq!(s.value(name, &[("system", "amqp")]), Some(200.0));
        // Two mqtt series: not one value, but a sum.
        assert_eq!(s.value(name, &[("system", "mqtt")]), None);
        assert_eq!(s.sum(name, &[("system", "mqtt")]), 10201.0);
        assert_eq!(s.sum(name, &[]), 10401.0);
        assert_eq!(s.count(name, &[("system", "mqtt")]), 2);
        assert_eq!(s.value(name, &[("system", "kafka")]), None);
        assert_eq!(s.sum(name, &[("system", "kafka")]), 0.0);
        // The family name is not a sample name.
        assert_eq!(s.value("brokerscope_messages_published", &[]), None);
        assert_eq!(s.value("brokerscope_events_lost_total", &[]), Some(0.0));
        assert_eq!(s.value("brokerscope_connections", &[]), Some(3.0));
        let samples = s.samples(name);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2].0["destination"], "card/{i}/x");
        assert_eq!(samples[2].1, 10000.0);
    }

    #[test]
    fn metadata_and_families() {
        let s = parsed();
        let families: Vec<_> = s.families().into_iter().collect();
        assert_eq!(
            families,
            [
                "brokerscope_confirm_latency_seconds",
                "brokerscope_connections",
                "brokerscope_events_lost",
                "brokerscope_messages_published",
            ]
        );
        assert_eq!(s.kind("brokerscope_messages_published"), Some("counter"));
        assert_eq!(
            s.kind("brokerscope_confirm_latency_seconds"),
            Some("histogram")
        );
        assert_eq!(
            s.units["brokerscope_confirm_latency_seconds"].as_str(),
            "seconds"
        );
        assert_eq!(s.help["brokerscope_connections"], "Open connections.");
        assert_eq!(
            s.family_of("brokerscope_confirm_latency_seconds_bucket"),
            "brokerscope_confirm_latency_seconds"
        );
        // Samples without a # TYPE are families of their own.
        let s = Scrape::parse("up 1\nfoo_total{a=\"b\"} 2\n").unwrap();
        assert!(!s.eof);
        assert_eq!(
            s.families().into_iter().collect::<Vec<_>>(),
            ["foo_total", "up"]
        );
    }

    #[test]
    fn histogram_of_one_series_and_summed() {
        let s = parsed();
        let base = "brokerscope_confirm_latency_seconds";
        let h = s.histogram(base, &[("system", "amqp")]).unwrap();
        assert_eq!(h.count, 200.0);
        assert_eq!(h.sum, 0.03);
        assert_eq!(
            h.buckets,
            [
                (0.0001, 20.0),
                (0.001, 180.0),
                (0.01, 200.0),
                (f64::INFINITY, 200.0)
            ]
        );
        assert_eq!(h.cumulative(0.001), Some(180.0));
        // Rank 100 of 200: bucket (0.0001, 0.001], 80 of its 160 observations in.
        assert!((h.quantile(0.5) - 0.00055).abs() < 1e-12);
        // Rank 10: first bucket, lower bound 0.
        assert!((h.quantile(0.05) - 0.00005).abs() < 1e-12);
        assert!((h.quantile(1.0) - 0.01).abs() < 1e-12);
        assert_eq!(h.quantile(-0.1), f64::NEG_INFINITY);
        assert_eq!(h.quantile(1.1), f64::INFINITY);

        let all = s.histogram(base, &[]).unwrap();
        assert_eq!(all.count, 300.0);
        assert!((all.sum - 0.04).abs() < 1e-12);
        assert_eq!(
            all.buckets,
            [
                (0.0001, 80.0),
                (0.001, 280.0),
                (0.01, 300.0),
                (f64::INFINITY, 300.0)
            ]
        );
        assert!(s.histogram(base, &[("system", "nats")]).is_none());
        assert!(s.histogram("brokerscope_connections", &[]).is_none());
    }

    #[test]
    fn quantile_in_the_inf_bucket_and_without_observations() {
        let h = Histogram {
            count: 10.0,
            sum: 100.0,
            buckets: vec![(1.0, 2.0), (2.0, 4.0), (f64::INFINITY, 10.0)],
        };
        assert_eq!(h.quantile(0.9), 2.0);
        assert_eq!(h.quantile(0.3), 1.5);
        let empty = Histogram {
            count: 0.0,
            sum: 0.0,
            buckets: vec![(1.0, 0.0), (f64::INFINITY, 0.0)],
        };
        assert!(empty.quantile(0.5).is_nan());
        let no_inf = Histogram {
            count: 1.0,
            sum: 0.5,
            buckets: vec![(1.0, 1.0)],
        };
        assert!(no_inf.quantile(0.5).is_nan());
    }

    #[test]
    fn histograms_with_different_bounds_are_not_summed() {
        let text = "# TYPE h histogram\n\
                    h_bucket{a=\"1\",le=\"1.0\"} 1\nh_bucket{a=\"1\",le=\"+Inf\"} 1\n\
                    h_bucket{a=\"2\",le=\"2.0\"} 1\nh_bucket{a=\"2\",le=\"+Inf\"} 1\n# EOF\n";
        let s = Scrape::parse(text).unwrap();
        assert!(s.histogram("h", &[]).is_none());
        assert_eq!(
            s.histogram("h", &[("a", "2")]).unwrap().buckets,
            [(2.0, 1.0), (f64::INFINITY, 1.0)]
        );
    }

    #[test]
    fn escapes_timestamps_exemplars_and_special_values() {
        let text = concat!(
            "# HELP x Help with \\\\ and \\n.\n",
            "# TYPE x counter\n",
            r#"x_total{d="a\"b",e="c\\d",f="l1\nl2",g="{,}= "} 1.5e3 1700000000.123"#,
            "\n",
            r#"x_total{d="z",} 2 # {trace_id="abc"} 1.0 1700000000"#,
            "\n",
            "y +Inf\nz -Inf\nw NaN\r\n",
            "# a plain comment\n",
            "# EOF\n",
        );
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.help["x"], "Help with \\ and \n.");
        let (labels, v) = s.samples("x_total")[0];
        assert_eq!(v, 1500.0);
        assert_eq!(labels["d"], "a\"b");
        assert_eq!(labels["e"], "c\\d");
        assert_eq!(labels["f"], "l1\nl2");
        assert_eq!(labels["g"], "{,}= ");
        assert_eq!(s.samples[0].timestamp, Some(1_700_000_000.123));
        assert_eq!(s.value("x_total", &[("d", "z")]), Some(2.0));
        assert_eq!(s.samples[1].timestamp, None);
        assert_eq!(s.value("y", &[]), Some(f64::INFINITY));
        assert_eq!(s.value("z", &[]), Some(f64::NEG_INFINITY));
        assert!(s.value("w", &[]).unwrap().is_nan());
        assert_eq!(s.value("x_total", &[("f", "l1\nl2")]), Some(1500.0));
    }

    #[test]
    fn refuses_what_prometheus_would() {
        for bad in [
            "a 1\na 2\n",
            "a{x=\"1\"} 1\na{x=\"1\"} 2\n",
            "a 1\n# EOF\nb 2\n",
            "a{x=1} 1\n",
            "a{x=\"1} 1\n",
            "a{x=\"\\t\"} 1\n",
            "a{x=\"1\" y=\"2\"} 1\n",
            "a{x=\"1\",x=\"2\"} 1\n",
            "a\n",
            "a one\n",
            "a 1 2 3\n",
            "1a 1\n",
            "# TYPE a counter\n# TYPE a gauge\n",
        ] {
            assert!(Scrape::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    /// Whatever prometheus-client 0.24 (the daemon's encoder) writes parses back to the same
    /// numbers.
    #[test]
    fn prometheus_client_round_trip() {
        use prometheus_client::{
            encoding::text::encode,
            metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
            registry::{Registry, Unit},
        };
        type Labels = Vec<(String, String)>;
        let labels = |system: &str, destination: &str| -> Labels {
            vec![
                ("system".into(), system.into()),
                ("destination".into(), destination.into()),
            ]
        };
        let mut registry = Registry::with_prefix("brokerscope");
        let published = Family::<Labels, Counter>::default();
        registry.register(
            "messages_published",
            "Messages published",
            published.clone(),
        );
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0001, 0.001, 0.01])
        });
        registry.register_with_unit(
            "confirm_latency",
            "Publish to confirm",
            Unit::Seconds,
            latency.clone(),
        );
        let open = Gauge::<i64>::default();
        registry.register("connections", "Open connections", open.clone());
        published
            .get_or_create(&labels("amqp", "latency"))
            .inc_by(200);
        published
            .get_or_create(&labels("mqtt", "latency/t"))
            .inc_by(7);
        for i in 0..100 {
            let v = if i < 30 { 0.00005 } else { 0.0005 };
            latency
                .get_or_create(&labels("nats", "latency.s"))
                .observe(v);
        }
        latency
            .get_or_create(&labels("kafka", "latency"))
            .observe(0.5);
        open.set(3);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();

        let s = Scrape::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(s.eof, "{text}");
        let families: Vec<_> = s.families().into_iter().collect();
        assert_eq!(
            families,
            [
                "brokerscope_confirm_latency_seconds",
                "brokerscope_connections",
                "brokerscope_messages_published",
            ],
            "{text}"
        );
        assert_eq!(s.units["brokerscope_confirm_latency_seconds"], "seconds");
        let name = "brokerscope_messages_published_total";
        assert_eq!(s.value(name, &[("system", "amqp")]), Some(200.0));
        assert_eq!(s.sum(name, &[]), 207.0);
        assert_eq!(s.value("brokerscope_connections", &[]), Some(3.0));
        let base = "brokerscope_confirm_latency_seconds";
        let h = s.histogram(base, &[("destination", "latency.s")]).unwrap();
        assert_eq!(h.count, 100.0);
        assert!((h.sum - (30.0 * 0.00005 + 70.0 * 0.0005)).abs() < 1e-9);
        assert_eq!(
            h.buckets,
            [
                (0.0001, 30.0),
                (0.001, 100.0),
                (0.01, 100.0),
                (f64::INFINITY, 100.0)
            ]
        );
        // Rank 50: 20 of the 70 in (0.0001, 0.001].
        assert!((h.quantile(0.5) - (0.0001 + 0.0009 * 20.0 / 70.0)).abs() < 1e-12);
        let all = s.histogram(base, &[]).unwrap();
        assert_eq!(all.count, 101.0);
        assert_eq!(all.buckets.last(), Some(&(f64::INFINITY, 101.0)));
        assert_eq!(all.cumulative(0.01), Some(100.0));
    }

    /// prometheus-client 0.24 writes label values as they are, unescaped: a value with `"`
    /// (or `\`, or a newline) breaks the exposition, so the daemon must escape or replace
    /// such characters itself (destinations come from the wire). If this starts passing a
    /// parse, the encoder escapes now.
    #[test]
    fn prometheus_client_does_not_escape_label_values() {
        use prometheus_client::{
            encoding::text::encode,
            metrics::{counter::Counter, family::Family},
            registry::Registry,
        };
        let mut registry = Registry::default();
        let family = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("m", "M", family.clone());
        family
            .get_or_create(&vec![("destination".into(), "a\"b".into())])
            .inc();
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("m_total{destination=\"a\"b\"} 1"), "{text}");
        assert!(Scrape::parse(&text).is_err());
    }

    #[test]
    fn http_responses() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; \
              charset=utf-8\r\nContent-Length: 7\r\n\r\n# EOF\nxx",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"# EOF\nx");
        assert!(
            r.header("Content-Type")
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na 1\n\r\n6;x=y\r\n# EOF\n\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"a 1\n# EOF\n");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, b"nope".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn scrape_over_tcp() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; \
                 charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                EXPOSITION.len()
            );
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(EXPOSITION.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        });
        let s = scrape(addr).unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /metrics HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        assert_eq!(
            s.value(
                "brokerscope_messages_published_total",
                &[("system", "amqp")]
            ),
            Some(200.0)
        );
        assert!(
            s.content_type
                .as_deref()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        // Nothing listens any more: an error, not a hang.
        assert!(scrape(addr).is_err());
    }
}
