//! What client text shown back to people may hold, and how much of it an error message
//! quotes.

/// Quotes at most 64 characters of client input in error messages (see [`truncate_to`]).
pub(crate) fn truncate(s: &str) -> String {
    truncate_to(s, 64)
}

/// At most `max` characters of `s`, with `…` after them when `s` was longer, so that a
/// reader knows the message goes on.
pub(crate) fn truncate_to(s: &str, max: usize) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// True when `text` holds no control characters (terminal escapes among them) and no
/// bidirectional controls: what identifiers and labels shown to people may hold.
pub fn printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// True when a metadata entry may be shown to people: a key with no control characters, a
/// value with none but tab and line breaks, neither with bidirectional controls (NUL is
/// reported on its own, so it passes here).
pub fn metadata_printable(key: &str, value: &str) -> bool {
    !key.chars()
        .any(|c| (c.is_control() && c != '\0') || is_bidi_control(c))
        && !value.chars().any(|c| {
            (c.is_control() && !matches!(c, '\0' | '\t' | '\n' | '\r')) || is_bidi_control(c)
        })
}

/// Unicode's bidirectional formatting characters (marks, embeddings, overrides, isolates),
/// which can make text display in another order than it is stored ("Trojan Source",
/// CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::truncate_to;

    #[test]
    fn a_cut_quote_says_so() {
        assert_eq!(truncate_to("abcdef", 6), "abcdef");
        assert_eq!(truncate_to("abcdefg", 6), "abcdef…");
        assert_eq!(truncate_to("ééééé", 2), "éé…");
        assert_eq!(truncate_to("", 3), "");
    }
}
