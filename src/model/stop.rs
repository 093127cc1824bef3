//! Stop strings over text that arrives token by token: a stop string may span several tokens, so
//! each check looks back far enough for a match that ends in the newest text.

/// The stop strings of one request.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    longest: usize,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> StopMatcher {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        StopMatcher { stops, longest }
    }

    /// Bytes of the longest stop string (text that could still grow into one is held back).
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// The byte offset where `text` must be cut: the start of the earliest stop string that
    /// ends after byte `old_len` (text before it was checked already).
    pub fn cut(&self, text: &str, old_len: usize) -> Option<usize> {
        if self.stops.is_empty() {
            return None;
        }
        let mut from = old_len.saturating_sub(self.longest.saturating_sub(1)).min(text.len());
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        self.stops.iter().filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i)).min()
    }
}

/// Text of a growing token sequence, decoded incrementally: a token that ends inside a UTF-8
/// sequence (byte-level BPE splits characters such as `𝔽`) shows up only once the character is
/// complete, so no replacement characters leak into the text.
#[derive(Debug, Clone, Default)]
pub struct Detokenizer {
    pub ids: Vec<u32>,
    pub text: String,
    prefix_offset: usize,
    read_offset: usize,
}

impl Detokenizer {
    /// Appends `id`; `decode` turns ids into text. Returns the length of `text` before the push.
    pub fn push(&mut self, id: u32, decode: impl Fn(&[u32]) -> String) -> usize {
        let old_len = self.text.len();
        self.ids.push(id);
        let prefix = decode(&self.ids[self.prefix_offset..self.read_offset]);
        let full = decode(&self.ids[self.prefix_offset..]);
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
            self.text.push_str(&full[prefix.len()..]);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        old_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_string_spanning_two_pushes_is_found_at_its_start() {
        let m = StopMatcher::new(&["```\n".to_string()]);
        assert_eq!(m.cut("proof ``", 0), None);
        assert_eq!(m.cut("proof ```\nmore", 8), Some(6));
    }

    #[test]
    fn the_earliest_stop_wins() {
        let m = StopMatcher::new(&["b".to_string(), "ab".to_string()]);
        assert_eq!(m.cut("xxab", 0), Some(2));
    }

    #[test]
    fn old_text_is_not_searched_again() {
        let m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.cut("END and more", 12), None);
    }

    #[test]
    fn partial_utf8_is_held_back_until_complete() {
        // A fake byte-level decoder: ids are bytes; invalid UTF-8 decodes lossily.
        let decode =
            |ids: &[u32]| String::from_utf8_lossy(&ids.iter().map(|&b| b as u8).collect::<Vec<_>>()).into_owned();
        let mut d = Detokenizer::default();
        for b in "a𝔽".bytes() {
            d.push(b as u32, decode);
            assert!(!d.text.contains('\u{FFFD}'), "{:?}", d.text);
        }
        assert_eq!(d.text, "a𝔽");
    }
}
