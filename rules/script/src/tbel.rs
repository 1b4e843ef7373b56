//! Spotting TBEL-only syntax in a body that did not compile as JavaScript, so the error can say
//! "TBEL syntax is not supported: `foreach` at line 3" instead of a bare JavaScript
//! `SyntaxError` that points at the `(` after `foreach`.
//!
//! Only run on a body that failed to compile: a construct named here is the likely reason, and
//! the JavaScript parser's own message is kept beside it.

/// A TBEL construct JavaScript does not have, and where it is (1-based line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Construct {
    pub what: &'static str,
    pub line: usize,
}

impl std::fmt::Display for Construct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at line {}", self.what, self.line)
    }
}

/// The first TBEL-only construct in `body` outside strings and comments: `[:]` (an empty map),
/// `[key: value]` (a map literal), `foreach (…)` and `def name(…)`.
pub fn find(body: &str) -> Option<Construct> {
    let code = blank_strings_and_comments(body);
    let bytes = code.as_bytes();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let word_at = |at: usize, word: &str| {
        code[at..].starts_with(word)
            && (at == 0 || !is_ident(bytes[at - 1]))
            && bytes.get(at + word.len()).is_none_or(|&b| !is_ident(b))
    };
    for (at, &b) in bytes.iter().enumerate() {
        if b == b'[' {
            let inner = code[at + 1..].trim_start();
            if inner.starts_with(':') && inner[1..].trim_start().starts_with(']') {
                return Some(Construct {
                    what: "`[:]` (an empty TBEL map; JavaScript writes `{}`)",
                    line: line_of(at),
                });
            }
            // `[key: …` or `["key": …`: a TBEL map literal (a string's text is blanked to spaces).
            let key_len = if inner.starts_with('"') || inner.starts_with('\'') {
                inner[1..].find(['"', '\'']).map(|end| end + 2)
            } else {
                Some(inner.bytes().take_while(|&c| is_ident(c)).count()).filter(|&n| n > 0)
            };
            if let Some(n) = key_len
                && inner[n..].trim_start().starts_with(':')
            {
                return Some(Construct {
                    what: "`[key: value]` (a TBEL map literal; JavaScript writes `{key: value}`)",
                    line: line_of(at),
                });
            }
        }
        if word_at(at, "foreach") && code[at + 7..].trim_start().starts_with('(') {
            return Some(Construct {
                what: "`foreach` (TBEL's loop; JavaScript writes `for (var x of list)`)",
                line: line_of(at),
            });
        }
        if word_at(at, "def") {
            let rest = code[at + 3..].trim_start();
            let name = rest.bytes().take_while(|&c| is_ident(c)).count();
            if name > 0 && rest[name..].trim_start().starts_with('(') {
                return Some(Construct {
                    what: "`def` (TBEL's function definition; JavaScript writes `function`)",
                    line: line_of(at),
                });
            }
        }
    }
    None
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// `body` with the insides of string literals and comments turned into spaces (newlines kept, so
/// line numbers stay right; quotes kept, so a string is still seen as one).
fn blank_strings_and_comments(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    if d == c {
                        out.push(c);
                        break;
                    }
                    if d == '\\' {
                        chars.next();
                        out.push_str("  ");
                        continue;
                    }
                    out.push(if d == '\n' { '\n' } else { ' ' });
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    if d == '\n' {
                        out.push('\n');
                    }
                    prev = d;
                }
            }
            c if c.is_ascii() => out.push(c),
            // Non-ASCII outside strings: a space keeps byte offsets simple (ASCII only below).
            _ => out.push(' '),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what(body: &str) -> Option<(&'static str, usize)> {
        find(body).map(|c| (c.what.split(' ').next().unwrap_or_default(), c.line))
    }

    #[test]
    fn finds_each_construct_and_its_line() {
        assert_eq!(what("var m = [:];\nreturn m;"), Some(("`[:]`", 1)));
        assert_eq!(what("var t = 0;\nforeach (x : msg.list) { t += x; }\nreturn t > 1;"), Some(("`foreach`", 2)));
        assert_eq!(what("\n\ndef twice(x) { return x * 2; }\nreturn twice(1) > 1;"), Some(("`def`", 3)));
        assert_eq!(what("var m = [\"a\": 1, 'b': 2];"), Some(("`[key:", 1)));
        assert_eq!(what("var m = [ a : 1 ];"), Some(("`[key:", 1)));
    }

    #[test]
    fn ignores_javascript_and_text_in_strings_and_comments() {
        assert_eq!(what("var a = [1, 2]; var o = {a: [3]}; return a[0] > o.a[0] ? true : false;"), None);
        assert_eq!(what("var s = \"[:] foreach (x) def f(\"; // foreach (x)\n/* def g() */ return s;"), None);
        assert_eq!(what("var define = 1; var foreachy = 2; undef(3); return [a ? b : c];"), None);
        assert_eq!(what("var é = 'ü'; return [:];"), Some(("`[:]`", 1)));
    }
}
