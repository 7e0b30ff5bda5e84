//! Input echoed back in messages, bounded: an error names what was wrong, but a pod author's
//! megabyte attribute or thousand names never become a megabyte gRPC status, log line or Event
//! on every kubelet retry.

/// Bytes of one echoed value kept (cut at a character boundary).
pub const VALUE_MAX: usize = 200;
/// Names listed before "and N more".
pub const NAMES_MAX: usize = 10;
/// The longest message that leaves the driver (a gRPC status, an Event): the last guard for a
/// message that echoes more than one bounded value.
pub const MESSAGE_MAX: usize = 2048;

/// `text` itself when short, else its first [`VALUE_MAX`] bytes and how long it was.
pub fn value(text: &str) -> String {
    cut(text, VALUE_MAX)
}

/// `text` cut to `max` bytes (at a character boundary) and marked so, when longer.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// At most [`NAMES_MAX`] of `names`, each bounded, joined by ", ", then "and N more": a
/// message or log line stays a line when it names a thousand objects or specs.
pub fn names<T: std::fmt::Display>(names: impl IntoIterator<Item = T>) -> String {
    let mut shown = Vec::new();
    let mut more = 0usize;
    for name in names {
        if shown.len() < NAMES_MAX {
            shown.push(value(&name.to_string()));
        } else {
            more += 1;
        }
    }
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_character_boundary_and_say_how_long_they_were() {
        assert_eq!(value("short"), "short");
        let long = "é".repeat(1000);
        let echoed = value(&long);
        assert!(echoed.len() < VALUE_MAX + 40, "{}", echoed.len());
        assert!(echoed.ends_with("… (2000 bytes in all)"), "{echoed}");
        assert_eq!(cut("abcdef", 3), "abc… (6 bytes in all)");
    }

    #[test]
    fn a_long_list_shows_ten_names_and_counts_the_rest() {
        let many: Vec<String> = (0..1000).map(|i| format!("ca-{i}")).collect();
        let echoed = names(&many);
        assert!(echoed.starts_with("ca-0, ca-1,"), "{echoed}");
        assert!(echoed.ends_with("ca-9 and 990 more"), "{echoed}");
        assert_eq!(names(["a", "b"]), "a, b");
        assert_eq!(names(Vec::<String>::new()), "");
        assert!(names(0..25).ends_with("9 and 15 more"), "any Display");
    }
}
