//! Kubernetes label selectors in their string syntax (`app=web,tier!=db,env in (a,b),!legacy`),
//! parsed strictly into requirements that match a set of labels the way the API server does.
//!
//! The grammar is apimachinery's (`k8s.io/apimachinery/pkg/labels/selector.go`): requirements
//! separated by commas, each `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (v1,v2)` or `key notin (v1,v2)`. Keys are an optional DNS-subdomain prefix and `/`
//! plus a name of at most 63 characters; values are at most 63 characters (empty allowed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Label names and values: at most 63 characters (apimachinery's `validation.LabelValueMaxLength`).
const NAME_MAX: usize = 63;
/// A key's prefix is a DNS subdomain: at most 253 characters.
const PREFIX_MAX: usize = 253;

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// Every requirement must hold; no requirement (the empty selector) matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// Sorted by key, then operator, so equal selectors compare (and digest) equal whatever the
    /// order they were written in.
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
}

impl LabelSelector {
    /// # Errors
    /// Anything outside the grammar above, naming where it went wrong.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut parser = Parser { text, position: 0 };
        let mut requirements = Vec::new();
        parser.skip_spaces();
        if parser.at_end() {
            return Ok(Self::default());
        }
        loop {
            requirements.push(parser.requirement()?);
            parser.skip_spaces();
            if parser.at_end() {
                break;
            }
            parser.expect(',')?;
        }
        requirements.sort();
        requirements.dedup();
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement. As in Kubernetes, `!=` and `notin` match an
    /// object without the label.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|requirement| {
            let value = labels.get(&requirement.key);
            match &requirement.operator {
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
                Operator::Equals(expected) => value == Some(expected),
                Operator::NotEquals(unwanted) => value != Some(unwanted),
                Operator::In(values) => value.is_some_and(|v| values.contains(v)),
                Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Sorted (see the field); for writing the selector out in a structured form.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl Requirement {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> &Operator {
        &self.operator
    }
}

/// The canonical spelling: requirements sorted, values sorted, `=` for equality.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, Requirement { key, operator }) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let set = |values: &BTreeSet<String>| values.iter().map(String::as_str).collect::<Vec<_>>().join(",");
            match operator {
                Operator::Exists => write!(f, "{key}")?,
                Operator::DoesNotExist => write!(f, "!{key}")?,
                Operator::Equals(value) => write!(f, "{key}={value}")?,
                Operator::NotEquals(value) => write!(f, "{key}!={value}")?,
                Operator::In(values) => write!(f, "{key} in ({})", set(values))?,
                Operator::NotIn(values) => write!(f, "{key} notin ({})", set(values))?,
            }
        }
        Ok(())
    }
}

struct Parser<'a> {
    text: &'a str,
    position: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.position..]
    }

    fn at_end(&self) -> bool {
        self.position >= self.text.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_spaces(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t']);
        self.position = self.text.len() - trimmed.len();
    }

    fn error(&self, what: impl fmt::Display) -> ParseError {
        ParseError(format!("{what} at position {} of {:?}", self.position, self.text))
    }

    fn expect(&mut self, wanted: char) -> Result<(), ParseError> {
        self.skip_spaces();
        if self.peek() == Some(wanted) {
            self.position += wanted.len_utf8();
            Ok(())
        } else {
            Err(self.error(format_args!("expected {wanted:?}")))
        }
    }

    /// A run of characters that may appear in keys and values.
    fn word(&mut self) -> &str {
        let start = self.position;
        let length = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
            .unwrap_or(self.rest().len());
        self.position += length;
        &self.text[start..start + length]
    }

    fn requirement(&mut self) -> Result<Requirement, ParseError> {
        self.skip_spaces();
        if self.peek() == Some('!') {
            self.position += 1;
            self.skip_spaces();
            let key = self.key()?;
            return Ok(Requirement { key, operator: Operator::DoesNotExist });
        }
        let key = self.key()?;
        self.skip_spaces();
        let rest = self.rest();
        let operator = if rest.is_empty() || rest.starts_with(',') {
            Operator::Exists
        } else if let Some(after) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            self.position = self.text.len() - after.len();
            Operator::Equals(self.value()?)
        } else if let Some(after) = rest.strip_prefix("!=") {
            self.position = self.text.len() - after.len();
            Operator::NotEquals(self.value()?)
        } else {
            match self.word() {
                "in" => Operator::In(self.set()?),
                "notin" => Operator::NotIn(self.set()?),
                _ => return Err(self.error("expected one of =, ==, !=, in, notin, ',' or the end")),
            }
        };
        Ok(Requirement { key, operator })
    }

    fn key(&mut self) -> Result<String, ParseError> {
        let key = self.word().to_owned();
        if key.is_empty() {
            return Err(self.error("expected a label key"));
        }
        let (prefix, name) = match key.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, key.as_str()),
        };
        if let Some(prefix) = prefix {
            let valid = !prefix.is_empty()
                && prefix.len() <= PREFIX_MAX
                && prefix.split('.').all(|label| {
                    !label.is_empty()
                        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !valid {
                return Err(self.error(format_args!("label key {key:?} has an invalid prefix (a DNS subdomain)")));
            }
        }
        if name.is_empty() || !valid_name(name) {
            return Err(self.error(format_args!(
                "label key {key:?} is invalid (a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            )));
        }
        Ok(key)
    }

    fn value(&mut self) -> Result<String, ParseError> {
        self.skip_spaces();
        let value = self.word().to_owned();
        if !value.is_empty() && !valid_name(&value) {
            return Err(self.error(format_args!(
                "label value {value:?} is invalid (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            )));
        }
        Ok(value)
    }

    fn set(&mut self) -> Result<BTreeSet<String>, ParseError> {
        self.expect('(')?;
        let mut values = BTreeSet::new();
        loop {
            values.insert(self.value()?);
            self.skip_spaces();
            match self.peek() {
                Some(',') => self.position += 1,
                Some(')') => {
                    self.position += 1;
                    return Ok(values);
                }
                _ => return Err(self.error("expected ',' or ')' in a value set")),
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() <= NAME_MAX
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}")).matches(&labels(pairs))
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let web = [("app", "web"), ("tier", "front")];
        assert!(selects("", &web));
        assert!(selects("app", &web));
        assert!(!selects("!app", &web));
        assert!(selects("!legacy", &web));
        assert!(selects("app=web", &web) && selects("app==web", &web));
        assert!(!selects("app=db", &web));
        assert!(selects("app!=db", &web));
        assert!(selects("legacy!=yes", &web), "!= matches an object without the label");
        assert!(selects("tier in (front, back)", &web));
        assert!(!selects("tier in (back)", &web));
        assert!(!selects("missing in (x)", &web));
        assert!(selects("tier notin (back)", &web));
        assert!(selects("missing notin (x)", &web), "notin matches an object without the label");
        assert!(!selects("tier notin (front)", &web));
        assert!(selects("app=web, tier in (front), !legacy", &web));
        assert!(!selects("app=web,tier=back", &web));
        assert!(selects("example.com/team=a", &[("example.com/team", "a")]));
        assert!(selects("app=", &[("app", "")]), "an empty value is a value");
    }

    #[test]
    fn bad_selectors_are_rejected_with_where() {
        for bad in [
            ",",
            "app=web,",
            "=web",
            "app=web x",
            "app in",
            "app in (a",
            "app in a",
            "app notin ()x",
            "app=-bad",
            "app>1",
            "Bad.Prefix/app",
            "/app",
            "a/",
            "!",
            "app in (a,,)x",
            "app=a b",
        ] {
            let error = LabelSelector::parse(bad).expect_err(bad);
            assert!(error.to_string().contains("position"), "{bad}: {error}");
        }
        assert!(LabelSelector::parse(&"a".repeat(64)).is_err());
        assert!(LabelSelector::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn equal_selectors_have_one_canonical_spelling() {
        let a = LabelSelector::parse("tier in (b, a), app==web, !old").unwrap();
        let b = LabelSelector::parse("!old,app=web,tier in (a,b)").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "app=web,!old,tier in (a,b)");
        assert_eq!(LabelSelector::parse(&a.to_string()).unwrap(), a, "the canonical form round-trips");
    }
}
