//! Calico's label selector syntax, for `IPPool.nodeSelector`: `all()`, `has(k)`,
//! `k == 'v'`, `k != 'v'`, `k in {'a', 'b'}`, `k not in {...}`, `!`, `&&`, `||` and
//! parentheses. An empty selector means `all()`.

use std::collections::BTreeMap;

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Has(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Not(Box<Selector>),
    And(Box<Selector>, Box<Selector>),
    Or(Box<Selector>, Box<Selector>),
}

/// A selector that does not parse: where (byte offset) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector \"{input}\": at position {position}: {problem}")]
pub struct SelectorError {
    pub input: String,
    pub position: usize,
    pub problem: String,
}

impl Selector {
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        // The default of every pool, parsed on every assignment: no parser needed.
        if input == "all()" {
            return Ok(Selector::All);
        }
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed == "all()" {
            return Ok(Selector::All);
        }
        let mut parser = Parser { input, position: 0 };
        let selector = parser.or()?;
        parser.skip_space();
        if parser.position < input.len() {
            return Err(parser.error("unexpected text after the end of the selector"));
        }
        Ok(selector)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::All => true,
            Selector::Has(key) => labels.contains_key(key),
            Selector::Equals(key, value) => labels.get(key) == Some(value),
            Selector::NotEquals(key, value) => labels.get(key) != Some(value),
            Selector::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Selector::NotIn(key, values) => !labels.get(key).is_some_and(|v| values.contains(v)),
            Selector::Not(inner) => !inner.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    position: usize,
}

impl Parser<'_> {
    fn error(&self, problem: &str) -> SelectorError {
        SelectorError {
            input: self.input.to_string(),
            position: self.position,
            problem: problem.to_string(),
        }
    }

    fn rest(&self) -> &str {
        &self.input[self.position..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.position = self.input.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.position += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), SelectorError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{token}`")))
        }
    }

    fn or(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Selector::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, SelectorError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Selector::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, SelectorError> {
        self.skip_space();
        if self.rest().starts_with("!=") {
            return Err(self.error("expected a label name before `!=`"));
        }
        if self.eat("!") {
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        if self.eat("all()") {
            return Ok(Selector::All);
        }
        if self.eat("has(") {
            let key = self.identifier()?;
            self.expect(")")?;
            return Ok(Selector::Has(key));
        }
        let key = self.identifier()?;
        if self.eat("==") {
            return Ok(Selector::Equals(key, self.string()?));
        }
        if self.eat("!=") {
            return Ok(Selector::NotEquals(key, self.string()?));
        }
        if self.eat("not in") {
            return Ok(Selector::NotIn(key, self.set()?));
        }
        if self.eat("in") {
            return Ok(Selector::In(key, self.set()?));
        }
        Err(self.error(&format!(
            "expected `==`, `!=`, `in` or `not in` after label `{key}`"
        )))
    }

    fn identifier(&mut self) -> Result<String, SelectorError> {
        self.skip_space();
        let length = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
            .unwrap_or(self.rest().len());
        if length == 0 {
            return Err(self.error("expected a label name, `all()`, `has(...)`, `!` or `(`"));
        }
        let identifier = self.rest()[..length].to_string();
        self.position += length;
        Ok(identifier)
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        self.skip_space();
        let quote = match self.rest().chars().next() {
            Some(quote @ ('\'' | '"')) => quote,
            _ => return Err(self.error("expected a quoted value ('...' or \"...\")")),
        };
        self.position += 1;
        let Some(end) = self.rest().find(quote) else {
            return Err(self.error("unterminated quoted value"));
        };
        let value = self.rest()[..end].to_string();
        self.position += end + 1;
        Ok(value)
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect("{")?;
        let mut values = Vec::new();
        if self.eat("}") {
            return Ok(values);
        }
        loop {
            values.push(self.string()?);
            if self.eat("}") {
                return Ok(values);
            }
            self.expect(",")?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn evaluates_calico_forms() {
        let node = labels(&[("zone", "a"), ("kubernetes.io/os", "linux")]);
        for (text, expected) in [
            ("", true),
            ("all()", true),
            ("has(zone)", true),
            ("!has(zone)", false),
            ("zone == 'a'", true),
            ("zone != 'a'", false),
            ("zone in {'b', 'a'}", true),
            ("zone not in {'a'}", false),
            ("missing not in {'a'}", true),
            ("kubernetes.io/os == \"linux\" && zone == 'b'", false),
            ("zone == 'b' || (has(kubernetes.io/os) && !has(gpu))", true),
        ] {
            assert_eq!(
                Selector::parse(text).unwrap().matches(&node),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn errors_say_where() {
        let error = Selector::parse("zone = 'a'").unwrap_err();
        assert_eq!(error.position, 5);
        assert!(error.to_string().contains("after label `zone`"), "{error}");
        assert!(
            Selector::parse("zone == 'a")
                .unwrap_err()
                .problem
                .contains("unterminated")
        );
        assert!(Selector::parse("has(zone").is_err());
        assert!(Selector::parse("all() extra").is_err());
    }
}
