//! Small formatting helpers for findings.

/// Sizes and durations are written by tej-core's one formatting.
pub use tej_core::fmt::{bytes as human_bytes, duration as human_duration};

/// Cuts `text` to at most `max` characters, adding `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(truncate("select  1\n from x", 8), "select 1…");
        assert_eq!(truncate("abc", 8), "abc");
    }
}
