//! ARM template expressions (`"[format('{0}', parameters('x'))]"`) parsed into a tree, so the
//! tests can ask what a value calls and what type it yields without evaluating it.

use serde_json::Value;

/// One node of an ARM expression. Function names are kept lower-case: ARM's are
/// case-insensitive.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Str(String),
    Int(i64),
    Call(String, Vec<Expr>),
    /// `base.name`
    Member(Box<Expr>, String),
    /// `base[index]`
    Index(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// The call's arguments if this is a call to `name`.
    pub fn call(&self, name: &str) -> Option<&[Expr]> {
        match self {
            Expr::Call(n, args) if n == name => Some(args),
            _ => None,
        }
    }

    /// The literal string, if this is one.
    pub fn str(&self) -> Option<&str> {
        match self {
            Expr::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `parameters('x')` → `x`.
    pub fn parameter(&self) -> Option<&str> {
        self.call("parameters")?.first()?.str()
    }

    /// Every node of the tree, this one first.
    pub fn walk<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        out.push(self);
        match self {
            Expr::Str(_) | Expr::Int(_) => {}
            Expr::Call(_, args) => args.iter().for_each(|a| a.walk(out)),
            Expr::Member(base, _) => base.walk(out),
            Expr::Index(base, index) => {
                base.walk(out);
                index.walk(out);
            }
        }
    }
}

/// The expression a JSON string holds, `None` for a plain string (ARM's `[[` escape
/// included), `Some(Err)` for an expression that does not parse.
pub fn parse_value(value: &str) -> Option<Result<Expr, String>> {
    let inner = value.strip_prefix('[')?.strip_suffix(']')?;
    if inner.starts_with('[') {
        return None;
    }
    Some(parse(inner).map_err(|e| format!("{e} in {value}")))
}

/// Parses the text between the brackets.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut p = Parser {
        s: text.chars().collect(),
        i: 0,
    };
    let e = p.expr()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected `{}` at {}", p.s[p.i], p.i));
    }
    Ok(e)
}

struct Parser {
    s: Vec<char>,
    i: usize,
}

impl Parser {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
            self.i += 1;
        }
        self.s[start..self.i].iter().collect()
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if self.eat('.') {
                let name = self.ident();
                if name.is_empty() {
                    return Err(format!("a member name expected at {}", self.i));
                }
                e = Expr::Member(Box::new(e), name);
            } else if self.eat('[') {
                let index = self.expr()?;
                if !self.eat(']') {
                    return Err(format!("`]` expected at {}", self.i));
                }
                e = Expr::Index(Box::new(e), Box::new(index));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.ws();
        match self.s.get(self.i) {
            Some('\'') => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    match self.s.get(self.i) {
                        None => return Err("unterminated string".into()),
                        Some('\'') if self.s.get(self.i + 1) == Some(&'\'') => {
                            out.push('\'');
                            self.i += 2;
                        }
                        Some('\'') => {
                            self.i += 1;
                            return Ok(Expr::Str(out));
                        }
                        Some(c) => {
                            out.push(*c);
                            self.i += 1;
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || *c == '-' => {
                let start = self.i;
                self.i += 1;
                while self.s.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
                let digits: String = self.s[start..self.i].iter().collect();
                digits.parse().map(Expr::Int).map_err(|e| format!("{digits}: {e}"))
            }
            _ => {
                let name = self.ident();
                if name.is_empty() {
                    return Err(format!("a function name expected at {}", self.i));
                }
                if !self.eat('(') {
                    return Err(format!("`(` expected after {name}"));
                }
                let mut args = Vec::new();
                if !self.eat(')') {
                    loop {
                        args.push(self.expr()?);
                        if self.eat(')') {
                            break;
                        }
                        if !self.eat(',') {
                            return Err(format!("`,` or `)` expected at {}", self.i));
                        }
                    }
                }
                Ok(Expr::Call(name.to_ascii_lowercase(), args))
            }
        }
    }
}

/// Every expression in a JSON value (object keys included), with the JSON path it sits
/// at. Errors for expressions that do not parse.
pub fn expressions(value: &Value, path: &str, out: &mut Vec<(String, Expr)>) -> Vec<String> {
    let mut errors = Vec::new();
    visit(value, path, out, &mut errors);
    errors
}

fn visit(value: &Value, path: &str, out: &mut Vec<(String, Expr)>, errors: &mut Vec<String>) {
    let mut visit_str = |s: &str, at: String| match parse_value(s) {
        Some(Ok(e)) => out.push((at, e)),
        Some(Err(e)) => errors.push(format!("{at}: {e}")),
        None => {}
    };
    match value {
        Value::String(s) => visit_str(s, path.to_string()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                visit(item, &format!("{path}[{i}]"), out, errors);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let at = format!("{path}.{key}");
                match parse_value(key) {
                    Some(Ok(e)) => out.push((format!("{at} (key)"), e)),
                    Some(Err(e)) => errors.push(format!("{at} (key): {e}")),
                    None => {}
                }
                visit(item, &at, out, errors);
            }
        }
        _ => {}
    }
}

/// What an expression yields, as far as the template shows without deploying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    String,
    Integer,
    Boolean,
    Object,
    Array,
    /// `reference(...)` and other run-time values.
    Unknown,
}

impl Ty {
    /// The type of a JSON value, as the specs name it.
    pub fn of(value: &Value) -> Ty {
        match value {
            Value::String(_) => Ty::String,
            Value::Number(n) if n.is_i64() || n.is_u64() => Ty::Integer,
            Value::Number(_) => Ty::Unknown,
            Value::Bool(_) => Ty::Boolean,
            Value::Object(_) => Ty::Object,
            Value::Array(_) => Ty::Array,
            Value::Null => Ty::Unknown,
        }
    }

    /// An ARM parameter type (`int`, `securestring`, ...).
    pub fn of_parameter(kind: &str) -> Ty {
        match kind.to_ascii_lowercase().as_str() {
            "string" | "securestring" => Ty::String,
            "int" => Ty::Integer,
            "bool" => Ty::Boolean,
            "object" | "secureobject" => Ty::Object,
            "array" => Ty::Array,
            _ => Ty::Unknown,
        }
    }

    /// Whether a value of this type fits a spec `type`.
    pub fn fits(self, spec_type: &str) -> bool {
        matches!(
            (self, spec_type),
            (Ty::Unknown, _)
                | (Ty::String, "string")
                | (Ty::Integer, "integer" | "number")
                | (Ty::Boolean, "boolean")
                | (Ty::Object, "object")
                | (Ty::Array, "array")
        )
    }
}

/// ARM functions this template may call: a misspelled one is caught here rather than at
/// deployment.
pub const KNOWN_FUNCTIONS: &[&str] = &[
    "parameters",
    "variables",
    "resourceid",
    "subscriptionresourceid",
    "extensionresourceid",
    "reference",
    "resourcegroup",
    "subscription",
    "uniquestring",
    "guid",
    "format",
    "concat",
    "tolower",
    "toupper",
    "take",
    "replace",
    "if",
    "equals",
    "greater",
    "createarray",
    "createobject",
];
