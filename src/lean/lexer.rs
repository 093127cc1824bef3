//! A lexer for Lean 4 source, close enough to Lean's own tokenizer for what subgoal needs: finding
//! declarations and their names, splitting the import header from the body, and (for the
//! soundness gates) telling code from comments and string literals.
//!
//! It follows Lean's character classes (`isIdFirst`, `isIdRest`, `isLetterLike`,
//! `isSubScriptAlnum`), nested block comments, `«escaped»` identifiers, string/char/name literals.
//! It never fails: unknown characters become one-character symbols.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An identifier or keyword, possibly dotted (`Nat.succ`, `theorem`, `«my name»`).
    Ident,
    /// A `#`-command keyword such as `#print`, `#eval`, `#exit`.
    HashCommand,
    Number,
    Str,
    Char,
    /// A `` `name `` or ``` ``name ``` literal.
    NameLit,
    Symbol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// Byte range in the source.
    pub span: Range<usize>,
}

impl Token {
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        &src[self.span.clone()]
    }
}

/// Lean's `isLetterLike`: Greek (but λ, Π, Σ), Coptic, polytonic Greek, the letterlike block, and
/// the mathematical alphanumeric letters.
pub fn is_letter_like(c: char) -> bool {
    let u = c as u32;
    (0x3b1..=0x3c9).contains(&u) && u != 0x3bb
        || (0x391..=0x3a9).contains(&u) && u != 0x3a0 && u != 0x3a3
        || (0x3ca..=0x3fb).contains(&u)
        || (0x1f00..=0x1ffe).contains(&u)
        || (0x2100..=0x214f).contains(&u)
        || (0x1d49c..=0x1d59f).contains(&u)
}

/// Lean's `isSubScriptAlnum`.
pub fn is_subscript_alnum(c: char) -> bool {
    let u = c as u32;
    (0x2080..=0x2089).contains(&u) || (0x2090..=0x209c).contains(&u) || (0x1d62..=0x1d6a).contains(&u) || u == 0x2c7c
}

pub fn is_id_first(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || is_letter_like(c)
}

pub fn is_id_rest(c: char) -> bool {
    is_id_first(c) || c.is_ascii_digit() || c == '\'' || c == '!' || c == '?' || is_subscript_alnum(c)
}

/// Tokenizes `src`, dropping whitespace and comments.
pub fn tokenize(src: &str) -> Vec<Token> {
    Lexer { src, pos: 0 }.run()
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }
    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn run(mut self) -> Vec<Token> {
        let mut out = Vec::new();
        loop {
            self.skip_trivia();
            if self.pos >= self.src.len() {
                return out;
            }
            if let Some(t) = self.next_token() {
                out.push(t);
            }
        }
    }

    fn skip_trivia(&mut self) {
        loop {
            if self.skip_comment() {
                continue;
            }
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                _ => return,
            }
        }
    }

    /// Skips one comment if one starts here.
    fn skip_comment(&mut self) -> bool {
        if self.rest().starts_with("--") {
            match self.rest().find('\n') {
                Some(i) => self.pos += i,
                None => self.pos = self.src.len(),
            }
            return true;
        }
        if self.rest().starts_with("/-") {
            self.pos += 2;
            // Lean consumes one more character after `/-` before it looks for `-/` or a nested
            // `/-`: `/--` and `/-!` open doc comments, and in `/-/- -/` the second `/` is skipped,
            // so that text is one whole comment.
            self.bump();
            let mut depth = 1usize;
            while depth > 0 && self.pos < self.src.len() {
                if self.rest().starts_with("/-") {
                    depth += 1;
                    self.pos += 2;
                } else if self.rest().starts_with("-/") {
                    depth -= 1;
                    self.pos += 2;
                } else {
                    self.bump();
                }
            }
            return true;
        }
        false
    }

    fn next_token(&mut self) -> Option<Token> {
        let start = self.pos;
        let c = self.peek()?;
        let kind = if c == '"' {
            self.bump();
            self.string_body();
            TokenKind::Str
        } else if c == 'r' && (self.peek_at(1) == Some('"') || self.peek_at(1) == Some('#')) && self.raw_string() {
            TokenKind::Str
        } else if c == '\'' && self.peek_at(1) != Some('\'') && self.char_literal() {
            TokenKind::Char
        } else if c == '`' && self.name_literal() {
            TokenKind::NameLit
        } else if c == '#' && self.peek_at(1).is_some_and(is_id_first) {
            self.bump();
            while self.peek().is_some_and(is_id_rest) {
                self.bump();
            }
            TokenKind::HashCommand
        } else if c.is_ascii_digit() {
            self.number();
            TokenKind::Number
        } else if is_id_first(c) || c == '«' {
            self.ident();
            TokenKind::Ident
        } else {
            // `<-` is one token to Lean: in `<--` the `--` does not start a comment.
            for sym in [":=", "@[", "..", "=>", "<;>", "<|>", "<-", "←", "→"] {
                if self.rest().starts_with(sym) {
                    self.pos += sym.len();
                    return Some(Token { kind: TokenKind::Symbol, span: start..self.pos });
                }
            }
            self.bump();
            TokenKind::Symbol
        };
        Some(Token { kind, span: start..self.pos })
    }

    fn string_body(&mut self) {
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.bump();
                }
                '"' => return,
                _ => {}
            }
        }
    }

    fn raw_string(&mut self) -> bool {
        let save = self.pos;
        self.bump(); // r
        let mut hashes = 0;
        while self.peek() == Some('#') {
            hashes += 1;
            self.bump();
        }
        if self.peek() != Some('"') {
            self.pos = save;
            return false;
        }
        self.bump();
        let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
        match self.rest().find(&close) {
            Some(i) => self.pos += i + close.len(),
            None => self.pos = self.src.len(),
        }
        true
    }

    /// Lean's `charLitFnAux`: `'`, then an escape (`\\x` + 2 hex, `\\u` + 4 hex, or `\\` + one
    /// character) or any single character (a newline included), then `'`. The caller has checked
    /// that the next character is not another `'` (Lean reads `''` differently).
    fn char_literal(&mut self) -> bool {
        let save = self.pos;
        self.bump(); // '
        if self.bump() == Some('\\') {
            match self.bump() {
                Some('x') => self.hex_digits(2),
                Some('u') => self.hex_digits(4),
                _ => {}
            }
        }
        if self.peek() == Some('\'') {
            self.bump();
            return true;
        }
        self.pos = save;
        false
    }

    fn hex_digits(&mut self, n: usize) {
        for _ in 0..n {
            if self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                self.bump();
            }
        }
    }

    fn name_literal(&mut self) -> bool {
        let save = self.pos;
        self.bump();
        if self.peek() == Some('`') {
            self.bump();
        }
        if self.peek().is_some_and(|c| is_id_first(c) || c == '«') {
            self.ident();
            return true;
        }
        self.pos = save;
        false
    }

    /// Lean's number literals: `0x`/`0b`/`0o` prefixed digits, or decimal digits with an optional
    /// fraction and exponent. What follows (`0theorem` is `0` then `theorem` to Lean) is a new
    /// token.
    fn number(&mut self) {
        let radix = match (self.peek(), self.peek_at(1)) {
            (Some('0'), Some('x' | 'X')) => Some(16),
            (Some('0'), Some('b' | 'B')) => Some(2),
            (Some('0'), Some('o' | 'O')) => Some(8),
            _ => None,
        };
        // Digits may be separated by `_` (Lean 4.35 reads `1_000` as 1000).
        if let Some(r) = radix {
            if self.peek_at(2).is_some_and(|c| c.is_digit(r) || c == '_') {
                self.pos += 2;
                while self.peek().is_some_and(|c| c.is_digit(r) || c == '_') {
                    self.bump();
                }
                return;
            }
        }
        let digits = |l: &mut Self| {
            while l.peek().is_some_and(|c| c.is_ascii_digit())
                || l.peek() == Some('_') && l.peek_at(1).is_some_and(|c| c.is_ascii_digit())
            {
                l.bump();
            }
        };
        // After a `.` a number is a field index (`h.1.1`): no fraction.
        let field_index = self.src[..self.pos].ends_with('.');
        digits(self);
        if field_index {
            return;
        }
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            digits(self);
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.peek_at(1), Some('+' | '-')));
            if self.peek_at(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1 + sign;
                digits(self);
            }
        }
    }

    /// A dotted identifier: parts separated by `.`, each plain or `«escaped»`.
    fn ident(&mut self) {
        loop {
            if self.peek() == Some('«') {
                self.bump();
                while let Some(c) = self.bump() {
                    if c == '»' {
                        break;
                    }
                }
            } else {
                while self.peek().is_some_and(is_id_rest) {
                    self.bump();
                }
            }
            if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| is_id_first(c) || c == '«') {
                self.bump();
            } else {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<&str> {
        tokenize(src).iter().map(|t| t.text(src)).collect()
    }

    #[test]
    fn comments_and_strings_are_not_code() {
        let src = "theorem t : True := -- no sorry here\n /- axiom /- nested -/ sorry -/ True.intro \"sorry\"";
        assert_eq!(texts(src), vec!["theorem", "t", ":", "True", ":=", "True.intro", "\"sorry\""]);
    }

    #[test]
    fn char_literals_with_escaped_quotes_and_raw_newlines_stay_in_step_with_lean() {
        // Each of these once made the lexer read the `#check` as part of a string.
        for src in ["⟨'\\'','\"'⟩\n#check Nat -- \"", "⟨'\n','\"'⟩\n#check Nat -- \""] {
            let toks = tokenize(src);
            assert!(
                toks.iter().any(|t| t.kind == TokenKind::HashCommand && t.text(src) == "#check"),
                "{src:?}: {:?}",
                toks.iter().map(|t| t.text(src)).collect::<Vec<_>>()
            );
        }
        assert_eq!(texts("'\\x41' '\\u00e9' 'a'"), vec!["'\\x41'", "'\\u00e9'", "'a'"]);
    }

    #[test]
    fn a_keyword_glued_to_a_number_is_its_own_token() {
        assert_eq!(texts("0theorem 0x1F 1.5e-3 2e"), vec!["0", "theorem", "0x1F", "1.5e-3", "2", "e"]);
        assert_eq!(texts("1_000_000 0x_ff"), vec!["1_000_000", "0x_ff"]);
        assert_eq!(texts("h.1.1"), vec!["h", ".", "1", ".", "1"]);
    }

    #[test]
    fn a_doc_comment_opener_is_three_characters() {
        assert_eq!(texts("/--/ x -/ y"), vec!["y"]);
        assert_eq!(texts("/-!/ x -/ y"), vec!["y"]);
        assert_eq!(texts("/-/ x -/ y"), vec!["y"]);
        // Lean skips the character after `/-`: this is one comment, and `x` is code.
        assert_eq!(texts("/-/- -/ x -- -/ y"), vec!["x"]);
        assert_eq!(texts("h <-- axiom"), vec!["h", "<-", "-", "axiom"]);
    }

    #[test]
    fn identifiers_follow_lean_character_classes() {
        let src = "h₁' x✝ α.β 𝔽 «my name».x axiom_free_bound";
        assert_eq!(texts(src), vec!["h₁'", "x", "✝", "α.β", "𝔽", "«my name».x", "axiom_free_bound"]);
    }

    #[test]
    fn hash_commands_and_name_literals() {
        let src = "#print axioms t\n#eval `foo ``Nat.succ 'a' h'";
        let toks = tokenize(src);
        assert_eq!(toks[0].kind, TokenKind::HashCommand);
        assert_eq!(toks[4].kind, TokenKind::NameLit);
        assert_eq!(toks[5].kind, TokenKind::NameLit);
        assert_eq!(toks[6].kind, TokenKind::Char);
        assert_eq!(toks[7].text(src), "h'");
    }

    #[test]
    fn never_panics_on_unterminated_input() {
        for src in ["\"abc", "/- open", "'", "`", "«abc", "r#\"x", "#", "0x", "'\\"] {
            let _ = tokenize(src);
        }
    }
}
