//! Small text formatting helpers shared by subcommands.

pub use observer::render::rfc3339;

/// "10 2a 00 04 …  |.*..|" preview of at most `max` bytes.
pub fn hex_preview(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut hex = String::with_capacity(shown.len() * 3);
    for (i, b) in shown.iter().enumerate() {
        if i > 0 {
            hex.push(' ');
        }
        hex.push_str(&format!("{b:02x}"));
    }
    let ascii: String = shown
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    let more = if bytes.len() > max { " …" } else { "" };
    format!("{hex}{more}  |{ascii}|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_bytes() {
        assert_eq!(hex_preview(b"\x10MQ", 8), "10 4d 51  |.MQ|");
        assert_eq!(hex_preview(b"abcdef", 2), "61 62 …  |ab|");
    }
}
