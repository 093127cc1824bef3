//! Positions in text: LSP speaks (line, UTF-16 code unit); Rust strings index UTF-8 bytes; people
//! and our exported records count Unicode scalar values. This module converts between them and
//! never splits a surrogate pair or a UTF-8 sequence.

/// Line starts of a document, for converting LSP positions to byte offsets.
#[derive(Debug, Clone)]
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// Byte offset of an LSP position (0-based line, UTF-16 column). A column past the end of the
    /// line clamps to the line end; one inside a surrogate pair rounds down to the character start.
    pub fn offset_of_lsp(&self, line: u32, utf16_col: u32) -> usize {
        let Some(&start) = self.starts.get(line as usize) else {
            return self.text.len();
        };
        let end = self.starts.get(line as usize + 1).map_or(self.text.len(), |&e| e);
        let mut units = 0u32;
        for (i, ch) in self.text[start..end].char_indices() {
            let w = ch.len_utf16() as u32;
            if units + w > utf16_col || ch == '\n' {
                return start + i;
            }
            units += w;
        }
        end
    }

    /// Byte offset of (0-based line, 0-based column in Unicode scalar values), as `lean --json`
    /// reports positions; clamps like `offset_of_lsp`.
    pub fn offset_of_line_char(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.starts.get(line) else {
            return self.text.len();
        };
        let end = self.starts.get(line + 1).map_or(self.text.len(), |&e| e);
        self.text[start..end].char_indices().nth(col).map_or(end, |(i, _)| start + i)
    }

    /// (0-based line, 0-based column in Unicode scalar values) of a byte offset.
    pub fn line_char_of_offset(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(l) => l,
            Err(l) => l - 1,
        };
        let mut start = self.starts[line];
        let mut end = offset;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        if start > end {
            start = end;
        }
        (line, self.text[start..end].chars().count())
    }

    /// LSP position (0-based line, UTF-16 column) of a byte offset: the inverse of `offset_of_lsp`.
    pub fn lsp_of_offset(&self, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.starts.binary_search(&offset) {
            Ok(l) => l,
            Err(l) => l - 1,
        };
        let start = self.starts[line].min(offset);
        let units: usize = self.text[start..offset].chars().map(char::len_utf16).sum();
        (line as u32, units as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_bmp_character_counts_two_utf16_units_and_one_char() {
        // 𝔽 is U+1D53D: 4 UTF-8 bytes, 2 UTF-16 units, 1 char.
        let text = "a\nx 𝔽 y\n";
        let idx = LineIndex::new(text);
        let off = idx.offset_of_lsp(1, 5); // after "x 𝔽 " = 1+1+2+1 units
        assert_eq!(&text[off..off + 1], "y");
        assert_eq!(idx.line_char_of_offset(off), (1, 4));
        assert_eq!(idx.lsp_of_offset(off), (1, 5));
    }

    #[test]
    fn column_inside_a_surrogate_pair_rounds_down() {
        let text = "𝔽z";
        let idx = LineIndex::new(text);
        assert_eq!(idx.offset_of_lsp(0, 1), 0);
        assert_eq!(idx.offset_of_lsp(0, 2), 4);
    }

    #[test]
    fn positions_past_the_end_clamp() {
        let text = "ab\ncd";
        let idx = LineIndex::new(text);
        assert_eq!(idx.offset_of_lsp(0, 99), 2);
        assert_eq!(idx.offset_of_lsp(9, 0), text.len());
        assert_eq!(idx.line_char_of_offset(999), (1, 2));
    }
}
