//! containerd's filter syntax (`filters` in List requests and event subscriptions):
//! `labels."a.b"==x,name~=^foo` is one filter (all selectors must match); several filters in a
//! request are alternatives (any may match). A selector is a field path, optionally followed by
//! `==`, `!=` or `~=` (a regular expression) and a value, bare or quoted ("..." or /.../).

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
    Re(regex::Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed list of filters: matches when any filter matches (or when there are none).
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Vec<Selector>>);

impl Filters {
    /// Parses the `filters` of a request.
    pub fn parse(filters: &[String]) -> Result<Filters> {
        let mut out = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                continue;
            }
            out.push(
                parse_one(f)
                    .map_err(|e| Error::InvalidArgument(format!("invalid filter {f:?}: {e}")))?,
            );
        }
        Ok(Filters(out))
    }

    /// Whether an object matches; `field` answers a field path (`["labels", "a.b"]`) with the
    /// object's value there, or None when it has none.
    pub fn matches(&self, field: impl Fn(&[String]) -> Option<String>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        self.0.iter().any(|sels| {
            sels.iter().all(|s| {
                let v = field(&s.path);
                match &s.op {
                    Op::Present => v.is_some(),
                    Op::Eq(x) => v.as_deref() == Some(x.as_str()),
                    Op::Ne(x) => v.as_deref() != Some(x.as_str()),
                    Op::Re(re) => v.is_some_and(|v| re.is_match(&v)),
                }
            })
        })
    }
}

/// Answers `labels.KEY` from a label map.
pub fn label<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    path: &[String],
) -> Option<String> {
    match path {
        [l, key] if l == "labels" => labels
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

fn parse_one(s: &str) -> std::result::Result<Vec<Selector>, String> {
    let mut p = Parser {
        c: s.chars().collect(),
        i: 0,
    };
    let mut sels = Vec::new();
    loop {
        p.skip_spaces();
        let mut path = vec![p.field()?];
        while p.peek() == Some('.') {
            p.i += 1;
            path.push(p.field()?);
        }
        p.skip_spaces();
        let op = if p.eat("==") {
            Op::Eq(p.value()?)
        } else if p.eat("!=") {
            Op::Ne(p.value()?)
        } else if p.eat("~=") {
            let v = p.value()?;
            Op::Re(regex::Regex::new(&v).map_err(|e| e.to_string())?)
        } else {
            Op::Present
        };
        sels.push(Selector { path, op });
        match p.peek() {
            None => return Ok(sels),
            Some(',') => p.i += 1,
            Some(c) => return Err(format!("unexpected {c:?} at {}", p.i)),
        }
    }
}

struct Parser {
    c: Vec<char>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }
    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        let t: Vec<char> = t.chars().collect();
        if self.c[self.i..].starts_with(&t) {
            self.i += t.len();
            true
        } else {
            false
        }
    }
    fn quoted(&mut self, q: char) -> std::result::Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == q {
                return Ok(out);
            }
            if c == '\\' {
                if let Some(n) = self.peek() {
                    self.i += 1;
                    out.push(n);
                    continue;
                }
            }
            out.push(c);
        }
        Err("unterminated quote".into())
    }
    fn field(&mut self) -> std::result::Result<String, String> {
        match self.peek() {
            Some('"') => self.quoted('"'),
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c.is_alphanumeric() || c == '_' || c == '-' || c == '/' {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                if self.i == start {
                    return Err(format!("expected a field name at {start}"));
                }
                Ok(self.c[start..self.i].iter().collect())
            }
        }
    }
    fn value(&mut self) -> std::result::Result<String, String> {
        self.skip_spaces();
        let v = self.value_raw()?;
        self.skip_spaces();
        Ok(v)
    }
    fn value_raw(&mut self) -> std::result::Result<String, String> {
        match self.peek() {
            Some(q @ ('"' | '/' | '|')) => self.quoted(q),
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c == ',' {
                        break;
                    }
                    self.i += 1;
                }
                Ok(self.c[start..self.i]
                    .iter()
                    .collect::<String>()
                    .trim_end()
                    .to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn obj(name: &str, labels: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
        (
            name.into(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn m(filters: &[&str], o: &(String, BTreeMap<String, String>)) -> bool {
        let f = Filters::parse(&filters.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        f.matches(|p| match p {
            [n] if n == "name" => Some(o.0.clone()),
            _ => label(&o.1, p),
        })
    }

    #[test]
    fn containerd_syntax() {
        let o = obj(
            "docker.io/library/busybox:latest",
            &[("a.b", "1"), ("c", "x y")],
        );
        assert!(m(&[], &o));
        assert!(m(&["name==docker.io/library/busybox:latest"], &o));
        assert!(!m(&["name!=docker.io/library/busybox:latest"], &o));
        assert!(m(&["labels.\"a.b\"==1"], &o));
        assert!(m(&["labels.c==\"x y\""], &o));
        assert!(m(&["labels.c"], &o));
        assert!(!m(&["labels.d"], &o));
        assert!(m(&["name~=busybox"], &o));
        assert!(m(&["name~=/^docker/"], &o));
        assert!(!m(&["name~=^busy"], &o));
        // a comma is AND, separate filters are OR
        assert!(!m(&["labels.c,labels.d"], &o));
        assert!(m(&["labels.d", "labels.c"], &o));
        // ctr 2.x writes `a==x, b==y`
        assert!(m(&["labels.c, name~=busybox"], &o));
        assert!(m(&["labels.\"a.b\" == 1 , labels.c"], &o));
        assert!(Filters::parse(&["name==\"x".into()]).is_err());
        assert!(Filters::parse(&["==x".into()]).is_err());
    }
}
