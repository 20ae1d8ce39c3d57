//! Matches the name patterns of the specs (`^[A-Za-z0-9]{1,60}$`,
//! `^(?=.{1,60}$)[A-Za-z0-9]+(-[A-Za-z0-9]+)*$`) without a regex dependency: a small
//! backtracking matcher for classes, groups, alternation, the usual quantifiers, anchors
//! and look-ahead, which is all the specs' path parameters use.

#[derive(Debug)]
enum Node {
    Start,
    End,
    Any,
    Char(char),
    Class { negated: bool, items: Vec<(char, char)> },
    Group(Vec<Vec<Node>>),
    LookAhead(Vec<Vec<Node>>),
    Repeat { node: Box<Node>, min: usize, max: usize },
}

/// Whether `text` contains a match of `pattern` (anchors make it a whole match).
pub fn is_match(pattern: &str, text: &str) -> Result<bool, String> {
    let mut p = Parser {
        s: pattern.chars().collect(),
        i: 0,
    };
    let alts = p.alternatives()?;
    if p.i != p.s.len() {
        return Err(format!("unexpected `{}`", p.s[p.i]));
    }
    let text: Vec<char> = text.chars().collect();
    let root = Node::Group(alts);
    Ok((0..=text.len()).any(|start| node(&root, start, &text, &mut |_| true)))
}

struct Parser {
    s: Vec<char>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn alternatives(&mut self) -> Result<Vec<Vec<Node>>, String> {
        let mut alts = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.i += 1;
            alts.push(self.sequence()?);
        }
        Ok(alts)
    }

    fn sequence(&mut self) -> Result<Vec<Node>, String> {
        let mut seq = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            seq.push(self.quantified(atom)?);
        }
        Ok(seq)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let c = self.peek().ok_or("unexpected end")?;
        self.i += 1;
        Ok(match c {
            '^' => Node::Start,
            '$' => Node::End,
            '.' => Node::Any,
            '[' => self.class()?,
            '(' => {
                let look_ahead = self.s[self.i..].starts_with(&['?', '=']);
                if look_ahead || self.s[self.i..].starts_with(&['?', ':']) {
                    self.i += 2;
                }
                let alts = self.alternatives()?;
                if self.peek() != Some(')') {
                    return Err("`)` expected".into());
                }
                self.i += 1;
                if look_ahead {
                    Node::LookAhead(alts)
                } else {
                    Node::Group(alts)
                }
            }
            '\\' => {
                let e = self.peek().ok_or("dangling `\\`")?;
                self.i += 1;
                escape(e)
            }
            c => Node::Char(c),
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.i += 1;
        }
        let mut items = Vec::new();
        loop {
            let c = self.peek().ok_or("unterminated class")?;
            self.i += 1;
            match c {
                ']' => break,
                '\\' => {
                    let e = self.peek().ok_or("dangling `\\`")?;
                    self.i += 1;
                    match escape(e) {
                        Node::Class { items: more, .. } => items.extend(more),
                        Node::Char(c) => items.push((c, c)),
                        _ => return Err(format!("`\\{e}` in a class")),
                    }
                }
                c if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|n| *n != ']') => {
                    let end = self.s[self.i + 1];
                    self.i += 2;
                    items.push((c, end));
                }
                c => items.push((c, c)),
            }
        }
        Ok(Node::Class { negated, items })
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('?') => (0, 1),
            Some('{') => {
                let close = self.s[self.i..]
                    .iter()
                    .position(|c| *c == '}')
                    .ok_or("unterminated `{`")?;
                let body: String = self.s[self.i + 1..self.i + close].iter().collect();
                self.i += close;
                let number = |s: &str| s.trim().parse::<usize>().map_err(|e| format!("{{{body}}}: {e}"));
                match body.split_once(',') {
                    None => (number(&body)?, number(&body)?),
                    Some((a, "")) => (number(a)?, usize::MAX),
                    Some((a, b)) => (number(a)?, number(b)?),
                }
            }
            _ => return Ok(atom),
        };
        self.i += 1;
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }
}

fn escape(e: char) -> Node {
    let class = |items: &[(char, char)]| Node::Class {
        negated: false,
        items: items.to_vec(),
    };
    match e {
        'd' => class(&[('0', '9')]),
        'w' => class(&[('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')]),
        's' => class(&[(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')]),
        c => Node::Char(c),
    }
}

fn one(n: &Node, c: char) -> bool {
    match n {
        Node::Any => c != '\n',
        Node::Char(x) => *x == c,
        Node::Class { negated, items } => items.iter().any(|(a, b)| (*a..=*b).contains(&c)) != *negated,
        _ => false,
    }
}

fn seq(nodes: &[Node], pos: usize, s: &[char], k: &mut dyn FnMut(usize) -> bool) -> bool {
    match nodes.split_first() {
        None => k(pos),
        Some((first, rest)) => node(first, pos, s, &mut |p| seq(rest, p, s, k)),
    }
}

fn node(n: &Node, pos: usize, s: &[char], k: &mut dyn FnMut(usize) -> bool) -> bool {
    match n {
        Node::Start => pos == 0 && k(pos),
        Node::End => pos == s.len() && k(pos),
        Node::Group(alts) => alts.iter().any(|alt| seq(alt, pos, s, k)),
        Node::LookAhead(alts) => alts.iter().any(|alt| seq(alt, pos, s, &mut |_| true)) && k(pos),
        Node::Repeat { node: inner, min, max } => repeat(inner, *min, *max, 0, pos, s, k),
        single => pos < s.len() && one(single, s[pos]) && k(pos + 1),
    }
}

/// Greedy repetition with backtracking; an iteration that consumes nothing ends it.
fn repeat(
    n: &Node,
    min: usize,
    max: usize,
    count: usize,
    pos: usize,
    s: &[char],
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if count < max && node(n, pos, s, &mut |p| p != pos && repeat(n, min, max, count + 1, p, s, k)) {
        return true;
    }
    count >= min && k(pos)
}
