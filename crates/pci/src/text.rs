//! Text that came from the system or a user, made safe to show: one sanitizer for every terminal line and
//! one rule for cutting long input in messages.

/// Whether a character must not reach a terminal as it is: every control character (newline and tab
/// included: inside a name they would forge lines or columns), the bidirectional overrides, embeddings,
/// isolates and marks that reorder what is shown (U+202A..U+202E, U+2066..U+2069, U+200E, U+200F,
/// U+061C), and the non-characters U+FFFE and U+FFFF.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
        || matches!(c, '\u{fffe}' | '\u{ffff}')
}

/// Replaces every unsafe character (see [`is_unsafe_char`]) with `?`, so text from sysfs, a journal, a
/// snapshot or pci.ids cannot drive the terminal, forge an output line or reorder one.
///
/// ```
/// assert_eq!(iommu_pci::text::sanitize("nvme\nIOMMU group 9\u{202e}"), "nvme?IOMMU group 9?");
/// ```
pub fn sanitize(s: &str) -> String {
    if !s.chars().any(is_unsafe_char) {
        return s.to_string();
    }
    s.chars().map(|c| if is_unsafe_char(c) { '?' } else { c }).collect()
}

/// `s` cut to at most `max` characters, saying how long it was when cut: a 10 KB bad argument must not be
/// echoed whole into an error message.
///
/// ```
/// assert_eq!(iommu_pci::text::clip("abcdef", 3), "abc... (6 bytes in all)");
/// assert_eq!(iommu_pci::text::clip("abc", 3), "abc");
/// ```
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((at, _)) => format!("{}... ({} bytes in all)", &s[..at], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_and_bidi_character_is_replaced() {
        for c in ['\n', '\r', '\t', '\x1b', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200f}', '\u{61c}'] {
            assert_eq!(sanitize(&format!("a{c}b")), "a?b", "{:?}", c);
        }
        assert_eq!(sanitize("Intel Corporation \u{e9}"), "Intel Corporation \u{e9}");
    }

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("\u{e9}\u{e9}\u{e9}", 2), "\u{e9}\u{e9}... (6 bytes in all)");
    }
}
