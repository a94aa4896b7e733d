//! Destination label values: templated (so per-message names collapse into one series) and
//! capped (so a flood of names cannot grow the metrics without bound).
//!
//! Templating, in order:
//! 1. user rules (`[metrics] destination_rules`), first match wins;
//! 2. whole-name patterns: `amq.gen-…` → `amq.gen-*`, `_INBOX.…` → `_INBOX.*`,
//!    `$JS.ACK.…` → `$JS.ACK.*`;
//! 3. per segment (split on `.`, `/`, `:`), a segment that is a number → `{n}`, a UUID →
//!    `{uuid}`, a long hex or random-looking token (≥ 12 characters mixing digits and letters,
//!    or ≥ 8 hex digits with a digit) → `{id}`.
//!
//! Capping: the first `max` distinct templated values are kept; later new values become
//! [`OVERFLOW`] and are counted.
use std::collections::HashSet;

/// The label value every destination beyond the cap shares.
pub const OVERFLOW: &str = "__overflow__";

/// A user's rewrite rule: `pattern` segments separated by `.` or `/`, where `*` matches one
/// segment and `**` (last only) the rest; on a match the name becomes `replacement`.
pub trait Rule {
    fn apply(&self, name: &str) -> Option<String>;
}

pub struct Labeler {
    rules: Vec<Box<dyn Rule + Send + Sync>>,
    seen: HashSet<String>,
    max: usize,
    /// Label uses that went to [`OVERFLOW`].
    pub overflowed: u64,
}

impl Labeler {
    pub fn new(max: usize, rules: Vec<Box<dyn Rule + Send + Sync>>) -> Self {
        Self {
            rules,
            seen: HashSet::new(),
            max: max.max(1),
            overflowed: 0,
        }
    }

    /// Distinct values handed out (the overflow value not included).
    pub fn distinct(&self) -> usize {
        self.seen.len()
    }

    /// The label value for a destination name.
    pub fn label(&mut self, name: &str) -> String {
        let templated = clean(
            &self
                .rules
                .iter()
                .find_map(|r| r.apply(name))
                .unwrap_or_else(|| template(name)),
        );
        if self.seen.contains(&templated) {
            return templated;
        }
        if self.seen.len() >= self.max {
            self.overflowed += 1;
            return OVERFLOW.to_owned();
        }
        self.seen.insert(templated.clone());
        templated
    }
}

/// A label value safe to write unescaped (prometheus-client writes label values as they are):
/// quotes, backslashes and control characters become `_`; at most 256 bytes.
pub fn clean(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if out.len() > 256 {
        let mut end = 256;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The built-in templating (rules 2 and 3 of the module doc).
pub fn template(name: &str) -> String {
    for prefix in ["amq.gen-", "_INBOX.", "$JS.ACK."] {
        if name.starts_with(prefix) && name.len() > prefix.len() {
            return format!("{prefix}*");
        }
    }
    let mut out = String::with_capacity(name.len());
    let mut segment_start = 0;
    for (i, c) in name.char_indices() {
        if matches!(c, '.' | '/' | ':') {
            push_segment(&mut out, &name[segment_start..i]);
            out.push(c);
            segment_start = i + c.len_utf8();
        }
    }
    push_segment(&mut out, &name[segment_start..]);
    out
}

fn push_segment(out: &mut String, s: &str) {
    out.push_str(match classify(s) {
        Some(placeholder) => placeholder,
        None => s,
    });
}

fn classify(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        return Some("{n}");
    }
    if is_uuid(b) {
        return Some("{uuid}");
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let hex = b.iter().all(u8::is_ascii_hexdigit);
    if hex && b.len() >= 8 && digits > 0 {
        return Some("{id}");
    }
    let token = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_');
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    if token && b.len() >= 12 && digits >= 2 && letters > 0 {
        return Some("{id}");
    }
    None
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_collapse_per_message_names() {
        let cases = [
            ("orders", "orders"),
            ("orders.created", "orders.created"),
            ("amq.gen-JzTY20BRgKO-HjmUJj0wLg", "amq.gen-*"),
            ("_INBOX.abc123XYZ.7", "_INBOX.*"),
            ("$JS.ACK.ORDERS.c.1.2.3.4.5", "$JS.ACK.*"),
            ("user/42/events", "user/{n}/events"),
            (
                "session.3f2504e0-4f89-11d3-9a0c-0305e82c3301.state",
                "session.{uuid}.state",
            ),
            ("cache:deadbeef01", "cache:{id}"),
            ("job.k8Hq3ZpL0x2vRt.done", "job.{id}.done"),
            // Words and short mixed tokens stay: they name things, not messages.
            ("sensor/v2/temp", "sensor/v2/temp"),
            ("eu-west-1.orders", "eu-west-1.orders"),
            ("card/t1234x", "card/t1234x"),
            ("", ""),
        ];
        for (name, want) in cases {
            assert_eq!(template(name), want, "{name}");
        }
    }

    #[test]
    fn label_values_need_no_escaping() {
        assert_eq!(clean("a\"b\\c\nd"), "a_b_c_d");
        assert_eq!(clean(&"é".repeat(200)).len(), 256);
        let mut l = Labeler::new(10, Vec::new());
        assert_eq!(l.label("x\"y"), "x_y");
    }

    struct Prefix;
    impl Rule for Prefix {
        fn apply(&self, name: &str) -> Option<String> {
            name.starts_with("tenant-").then(|| "tenant-*".to_owned())
        }
    }

    #[test]
    fn cap_overflows_into_one_value_and_counts() {
        let mut l = Labeler::new(3, vec![Box::new(Prefix)]);
        assert_eq!(l.label("a"), "a");
        assert_eq!(l.label("tenant-x"), "tenant-*");
        assert_eq!(l.label("tenant-y"), "tenant-*");
        assert_eq!(l.label("q/1"), "q/{n}");
        assert_eq!(l.label("b"), OVERFLOW);
        assert_eq!(l.label("c"), OVERFLOW);
        assert_eq!(l.label("a"), "a", "known values stay");
        assert_eq!(l.label("q/77"), "q/{n}");
        assert_eq!(l.overflowed, 2);
        assert_eq!(l.distinct(), 3);
    }
}
