//! Bytes → lines: split on `\n` and on `\r` (a redrawn progress bar is one line per redraw),
//! drop empty lines and ANSI escape sequences, decode UTF-8 lossily. A partial line waits for
//! the next bytes.

#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

/// Longest line kept whole; longer output is cut so a child that never prints a newline cannot
/// grow our memory.
const MAX_LINE: usize = 64 * 1024;

impl LineSplitter {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.flush_into(&mut lines);
            } else {
                self.pending.push(b);
                if self.pending.len() >= MAX_LINE {
                    self.flush_into(&mut lines);
                }
            }
        }
        lines
    }

    pub fn finish(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        self.flush_into(&mut lines);
        lines.pop()
    }

    fn flush_into(&mut self, lines: &mut Vec<String>) {
        let text = strip_ansi(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
        let trimmed = text.trim_end();
        if !trimmed.is_empty() {
            lines.push(trimmed.to_string());
        }
    }
}

/// Removes CSI sequences (`ESC [ … final byte`, e.g. colours and `\x1b[K`) and other two-byte
/// escapes.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                // OSC: up to BEL or ESC \.
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_both_line_ends_and_keeps_partial_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed(b"a\nb\r\nc"), ["a", "b"]);
        assert_eq!(s.feed(b"d\r"), ["cd"]);
        assert_eq!(s.feed(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_redrawn_progress_bar_is_one_line_per_redraw() {
        // stable-diffusion.cpp's bar: "\r" + bar + " %i/%i - %s" + "\033[K".
        let mut s = LineSplitter::default();
        let out =
            s.feed(b"\r  |=====>    | 1/2 - 0.50s/it\x1b[K\r  |==========| 2/2 - 0.40s/it\x1b[K\n");
        assert_eq!(
            out,
            ["|=====>    | 1/2 - 0.50s/it", "|==========| 2/2 - 0.40s/it"]
                .map(|l| format!("  {l}"))
        );
    }

    #[test]
    fn ansi_escapes_are_removed() {
        assert_eq!(strip_ansi("\x1b[1;32mok\x1b[0m done\x1b[K"), "ok done");
        assert_eq!(strip_ansi("\x1b]0;title\x07text"), "text");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn endless_lines_are_cut() {
        let mut s = LineSplitter::default();
        let out = s.feed(&vec![b'x'; MAX_LINE * 2 + 10]);
        assert_eq!(out.len(), 2);
        assert_eq!(s.finish().unwrap().len(), 10);
    }
}
