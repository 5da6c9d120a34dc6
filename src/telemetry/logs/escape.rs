//! JSON string escaping (RFC 8259 section 7) for log lines. Most of what a line carries (paths,
//! routes, ids, agents) needs no escaping, so the text is scanned eight bytes at a time and
//! copied in runs; only a word that holds a byte to escape is looked at byte by byte.

use std::fmt;

/// A JSON string of whatever `write` writes, escaped as it goes.
pub(super) fn quoted(out: &mut Vec<u8>, write: impl FnOnce(&mut Escaped<'_>) -> fmt::Result) {
    out.push(b'"');
    // Writing into a Vec cannot fail; a Display impl that fails leaves what it wrote.
    let _ = write(&mut Escaped(out));
    out.push(b'"');
}

/// Escapes text for a JSON string into the buffer.
pub(super) struct Escaped<'a>(&'a mut Vec<u8>);

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is a control character, `"` or `\` (the bytes JSON escapes).
/// Bytes of 0x80 and above (UTF-8 sequences) never count.
fn needs_escape(word: u64) -> bool {
    let zero_in = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    below_space
        | zero_in(word ^ (ONES * u64::from(b'"')))
        | zero_in(word ^ (ONES * u64::from(b'\\')))
        != 0
}

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let out = &mut *self.0;
        let (mut plain, mut i) = (0, 0);
        while i < bytes.len() {
            if let Some(chunk) = bytes.get(i..i + 8) {
                let mut word = [0; 8];
                word.copy_from_slice(chunk);
                if !needs_escape(u64::from_le_bytes(word)) {
                    i += 8;
                    continue;
                }
            }
            let b = bytes[i];
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&bytes[plain..i]);
            if escape.is_empty() {
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
            } else {
                out.extend_from_slice(escape);
            }
            i += 1;
            plain = i;
        }
        out.extend_from_slice(&bytes[plain..]);
        Ok(())
    }
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
