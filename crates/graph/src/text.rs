//! Text made safe for an SVG, a DOT file or a terminal, and measured in monospace columns.

/// Removes what must not reach an SVG, a DOT file or a terminal: control characters (newlines and tabs
/// become spaces), bidirectional overrides and the non-characters U+FFFE/U+FFFF (not allowed in XML). The
/// rule is [`iommu_pci::text::is_unsafe_char`], the one rule iommuctl has.
///
/// ```
/// assert_eq!(iommu_graph::clean("a\nb\u{1b}[1m\u{202e}"), "a b[1m");
/// ```
pub fn clean(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if iommu_pci::text::is_unsafe_char(c) => None,
            c => Some(c),
        })
        .collect()
}

/// Escapes text for XML content and attribute values (after [`clean`]).
///
/// ```
/// assert_eq!(iommu_graph::xml_escape("<a & 'b'>"), "&lt;a &amp; &apos;b&apos;&gt;");
/// ```
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in clean(s).chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes text for a double-quoted DOT string (after [`clean`]). Backslashes are doubled so that
/// Graphviz's escapes (`\N`, `\l`, `\G`, ...) cannot be smuggled in through a name.
///
/// ```
/// assert_eq!(iommu_graph::dot_escape(r#"a "b" \N"#), r#"a \"b\" \\N"#);
/// ```
pub fn dot_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in clean(s).chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            c => o.push(c),
        }
    }
    o
}

/// Display columns of a character in a monospace font: 2 for East Asian wide and emoji ranges, else 1.
pub(crate) fn char_cols(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115f
        | 0x2e80..=0xa4cf
        | 0xac00..=0xd7a3
        | 0xf900..=0xfaff
        | 0xfe30..=0xfe4f
        | 0xff00..=0xff60
        | 0xffe0..=0xffe6
        | 0x1f300..=0x1faff
        | 0x20000..=0x3fffd => 2,
        _ => 1,
    }
}

/// Display columns of a string in a monospace font (East Asian wide characters and emoji count 2).
///
/// ```
/// assert_eq!(iommu_graph::cols("漢字a"), 5);
/// ```
pub fn cols(s: &str) -> usize {
    s.chars().map(char_cols).sum()
}

/// Cuts `s` to at most `max` columns, ending in `…` when cut.
pub(crate) fn truncate_cols(s: &str, max: usize) -> String {
    if cols(s) <= max {
        return s.to_string();
    }
    let mut o = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_cols(c);
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        o.push(c);
    }
    o.push('…');
    o
}
