//! JSON string escaping (RFC 8259 section 7) for log lines. Most of what a line carries (paths,
//! routes, ids, agents, field names) needs no escaping, so the text is scanned eight bytes at a
//! time (the last few padded with spaces, so short strings take one test too) and copied in
//! runs; only a word that holds a byte to escape is looked at byte by byte.

use std::fmt;

/// A JSON string of whatever `write` writes, escaped as it goes.
pub(super) fn quoted(out: &mut Vec<u8>, write: impl FnOnce(&mut Escaped<'_>) -> fmt::Result) {
    out.push(b'"');
    // Writing into a Vec cannot fail; a Display impl that fails leaves what it wrote.
    let _ = write(&mut Escaped(out));
    out.push(b'"');
}

/// Appends `"text"`, escaped.
pub fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape(out, text);
    out.push(b'"');
}

/// Escapes text for a JSON string into the buffer.
pub(super) struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is a control character, `"` or `\\` (the bytes JSON escapes).
/// Bytes of 0x80 and above (UTF-8 sequences) never count.
fn needs_escape(word: u64) -> bool {
    let zero_in = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    below_space
        | zero_in(word ^ (ONES * u64::from(b'"')))
        | zero_in(word ^ (ONES * u64::from(b'\\')))
        != 0
}

/// Appends `text` escaped (without quotes): runs of plain text at once, an escape where needed.
fn escape(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let mut plain = 0;
    let mut words = bytes.chunks_exact(8);
    for (n, chunk) in words.by_ref().enumerate() {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if needs_escape(u64::from_le_bytes(word)) {
            plain = escape_bytes(out, bytes, plain, n * 8);
        }
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Spaces never need escaping: they pad the last, short word.
        let mut word = [b' '; 8];
        word[..tail.len()].copy_from_slice(tail);
        if needs_escape(u64::from_le_bytes(word)) {
            plain = escape_bytes(out, bytes, plain, bytes.len() - tail.len());
        }
    }
    out.extend_from_slice(&bytes[plain..]);
}

/// Escapes what needs it among the (up to) eight bytes at `at`, after copying the plain text
/// from `plain` on; returns where the plain text now starts.
#[cold]
fn escape_bytes(out: &mut Vec<u8>, bytes: &[u8], mut plain: usize, at: usize) -> usize {
    let end = (at + 8).min(bytes.len());
    for (i, &b) in bytes.iter().enumerate().take(end).skip(at) {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        plain = i + 1;
    }
    plain
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn escaping_matches_serde_json() {
        let mut texts: Vec<String> = [
            "plain",
            "quote \" and \\",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f}\u{8}\u{c}\u{7f} !#[]",
            "é ☃ 🦀",
            "",
        ]
        .map(String::from)
        .to_vec();
        // Every ASCII character (those that need escaping and those that do not) and UTF-8
        // sequences of two and four bytes, at every place in and across the eight-byte words.
        let specials = (0..=0x7f_u8).map(char::from).chain(['é', '🦀']);
        for special in specials {
            for at in 0..20 {
                let mut text = "abcdefghijklmnopqrstuvwx".to_string();
                text.insert(at, special);
                texts.push(text);
            }
        }
        for text in texts {
            let mut out = Vec::new();
            quoted(&mut out, |w| w.write_str(&text));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&text).unwrap(),
                "{text:?}"
            );
        }
    }
}
