//! The `CUSTOM` operation's expressions, as exp4j (the library ThingsBoard's `TbMathNode` builds
//! them with, `implicitMultiplication(true)`) reads them: numbers (`1.5`, `2e3`), the arguments'
//! names, `+ - * / % ^` (`^` right-associative and binding tighter than a unary minus, so `-2^2`
//! is `-4`), parentheses, implicit multiplication (`2x`, `2(x+1)`, `(a)(b)`), the constants `pi`,
//! `π`, `e`, `φ`, and exp4j's built-in functions (`sin`, `cos`, `tan`, `cot`, `log` (natural),
//! `log2`, `log10`, `log1p`, `abs`, `acos`, `asin`, `atan`, `cbrt`, `floor`, `ceil`, `sinh`,
//! `cosh`, `tanh`, `sqrt`, `exp`, `expm1`, `signum`, `pow(x, y)`, `csc`, `sec`, `csch`, `sech`,
//! `coth`, `toradian`, `todegree`). Division or modulo by zero is an error, as in exp4j.
//!
//! Parsed once at load; an expression that does not parse, or names a variable that is no
//! argument, is a config error.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Var(usize),
    Neg(Box<Expr>),
    Bin(char, Box<Expr>, Box<Expr>),
    Call(&'static str, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Name(String),
    Op(char),
    Open,
    Close,
    Comma,
}

/// exp4j's built-in functions and how many arguments each takes.
const FUNCTIONS: &[(&str, usize)] = &[
    ("sin", 1),
    ("cos", 1),
    ("tan", 1),
    ("cot", 1),
    ("log", 1),
    ("log2", 1),
    ("log10", 1),
    ("log1p", 1),
    ("abs", 1),
    ("acos", 1),
    ("asin", 1),
    ("atan", 1),
    ("cbrt", 1),
    ("floor", 1),
    ("ceil", 1),
    ("sinh", 1),
    ("cosh", 1),
    ("tanh", 1),
    ("sqrt", 1),
    ("exp", 1),
    ("expm1", 1),
    ("signum", 1),
    ("pow", 2),
    ("csc", 1),
    ("sec", 1),
    ("csch", 1),
    ("sech", 1),
    ("coth", 1),
    ("toradian", 1),
    ("todegree", 1),
];

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            // An exponent: `e` followed by digits (optionally signed), as exp4j reads `2e3`.
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                }
            }
            let literal: String = chars[start..i].iter().collect();
            let value = literal.parse::<f64>().map_err(|_| format!("`{literal}` is not a number"))?;
            out.push(Tok::Num(value));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(chars[start..i].iter().collect()));
        } else {
            out.push(match c {
                '+' | '-' | '*' | '/' | '%' | '^' => Tok::Op(c),
                '(' => Tok::Open,
                ')' => Tok::Close,
                ',' => Tok::Comma,
                other => return Err(format!("unexpected `{other}`")),
            });
            i += 1;
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    vars: &'a HashMap<String, usize>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Whether the next token starts an operand that implicit multiplication joins on.
    fn operand_follows(&self) -> bool {
        matches!(self.peek(), Some(Tok::Num(_) | Tok::Name(_) | Tok::Open))
    }

    // sum := product (('+' | '-') product)*
    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        while let Some(Tok::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            left = Expr::Bin(op, Box::new(left), Box::new(self.product()?));
        }
        Ok(left)
    }

    // product := unary (('*' | '/' | '%' | implicit) unary)*
    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            match self.peek().cloned() {
                Some(Tok::Op(op @ ('*' | '/' | '%'))) => {
                    self.pos += 1;
                    left = Expr::Bin(op, Box::new(left), Box::new(self.unary()?));
                }
                _ if self.operand_follows() => left = Expr::Bin('*', Box::new(left), Box::new(self.unary()?)),
                _ => return Ok(left),
            }
        }
    }

    // unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Op('-')) => {
                self.pos += 1;
                Ok(Expr::Neg(Box::new(self.unary()?)))
            }
            Some(Tok::Op('+')) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    // power := atom ('^' unary)?   (right-associative; `2^-1` allowed)
    fn power(&mut self) -> Result<Expr, String> {
        let base = self.atom()?;
        if let Some(Tok::Op('^')) = self.peek() {
            self.pos += 1;
            return Ok(Expr::Bin('^', Box::new(base), Box::new(self.unary()?)));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Open) => {
                let inner = self.sum()?;
                match self.next() {
                    Some(Tok::Close) => Ok(inner),
                    _ => Err("missing `)`".into()),
                }
            }
            Some(Tok::Name(name)) => {
                if let Some(&index) = self.vars.get(&name) {
                    return Ok(Expr::Var(index));
                }
                if let Some(&(f, arity)) = FUNCTIONS.iter().find(|(f, _)| *f == name) {
                    if self.next() != Some(Tok::Open) {
                        return Err(format!("function `{f}` needs `(`"));
                    }
                    let mut args = vec![self.sum()?];
                    while self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                        args.push(self.sum()?);
                    }
                    if self.next() != Some(Tok::Close) {
                        return Err(format!("missing `)` after the arguments of `{f}`"));
                    }
                    if args.len() != arity {
                        return Err(format!("`{f}` takes {arity} argument(s), not {}", args.len()));
                    }
                    return Ok(Expr::Call(f, args));
                }
                match name.as_str() {
                    "pi" | "π" => Ok(Expr::Num(std::f64::consts::PI)),
                    "e" => Ok(Expr::Num(std::f64::consts::E)),
                    "φ" => Ok(Expr::Num(1.618_033_988_749_895)),
                    _ => Err(format!("unknown variable or function `{name}`")),
                }
            }
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("the expression ends too early".into()),
        }
    }
}

/// Parses `text` with the variables `names` (an argument's index is its position).
pub fn parse(text: &str, names: &[String]) -> Result<Expr, String> {
    let vars: HashMap<String, usize> = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
    let mut parser = Parser { toks: tokens(text)?, pos: 0, vars: &vars };
    let expr = parser.sum()?;
    match parser.peek() {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected {t:?} after the expression")),
    }
}

impl Expr {
    pub fn eval(&self, vars: &[f64]) -> Result<f64, String> {
        Ok(match self {
            Expr::Num(n) => *n,
            Expr::Var(i) => vars.get(*i).copied().ok_or("no such variable")?,
            Expr::Neg(e) => -e.eval(vars)?,
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval(vars)?, b.eval(vars)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    '/' if b == 0.0 => return Err("Division by zero!".into()),
                    '/' => a / b,
                    '%' if b == 0.0 => return Err("Division by zero!".into()),
                    '%' => a % b,
                    _ => a.powf(b),
                }
            }
            Expr::Call(f, args) => {
                let x = args[0].eval(vars)?;
                match *f {
                    "sin" => x.sin(),
                    "cos" => x.cos(),
                    "tan" => x.tan(),
                    "cot" => {
                        let t = x.tan();
                        if t == 0.0 {
                            return Err("Division by zero in cotangent!".into());
                        }
                        1.0 / t
                    }
                    "log" => x.ln(),
                    "log2" => x.log2(),
                    "log10" => x.log10(),
                    "log1p" => x.ln_1p(),
                    "abs" => x.abs(),
                    "acos" => x.acos(),
                    "asin" => x.asin(),
                    "atan" => x.atan(),
                    "cbrt" => x.cbrt(),
                    "floor" => x.floor(),
                    "ceil" => x.ceil(),
                    "sinh" => x.sinh(),
                    "cosh" => x.cosh(),
                    "tanh" => x.tanh(),
                    "sqrt" => x.sqrt(),
                    "exp" => x.exp(),
                    "expm1" => x.exp_m1(),
                    "signum" => super::signum(x),
                    "pow" => x.powf(args[1].eval(vars)?),
                    "csc" => 1.0 / x.sin(),
                    "sec" => 1.0 / x.cos(),
                    "csch" => 1.0 / x.sinh(),
                    "sech" => 1.0 / x.cosh(),
                    "coth" => x.cosh() / x.sinh(),
                    "toradian" => x.to_radians(),
                    _ => x.to_degrees(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, names: &[&str], vals: &[f64]) -> f64 {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        parse(text, &names).unwrap().eval(vals).unwrap()
    }

    #[test]
    fn precedence_and_implicit_multiplication() {
        assert_eq!(eval("(x - 32) / 1.8", &["x"], &[212.0]), 100.0);
        assert_eq!(eval("-2^2", &[], &[]), -4.0);
        assert_eq!(eval("2^3^2", &[], &[]), 512.0);
        assert_eq!(eval("2x + 1", &["x"], &[3.0]), 7.0);
        assert_eq!(eval("2(x+1)", &["x"], &[3.0]), 8.0);
        assert_eq!(eval("(a)(b)", &["a", "b"], &[3.0, 4.0]), 12.0);
        assert_eq!(eval("7 % 4 * 2", &[], &[]), 6.0);
        assert_eq!(eval("pow(x, 2) + sqrt(16) + log(e)", &["x"], &[3.0]), 14.0);
        assert_eq!(eval("1.5e2 + 1", &[], &[]), 151.0);
    }

    #[test]
    fn errors() {
        let names = vec!["x".to_string()];
        assert!(parse("y + 1", &names).unwrap_err().contains("`y`"));
        assert!(parse("(x + 1", &names).is_err());
        assert!(parse("x +", &names).is_err());
        assert!(parse("pow(x)", &names).is_err());
        assert_eq!(parse("x / 0", &names).unwrap().eval(&[1.0]).unwrap_err(), "Division by zero!");
    }
}
