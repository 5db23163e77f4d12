//! The tags filter of a subscribe (`SubscribeRequest.tf`, docs/protocol.md,
//! "Tags filter"): checking a wire `FilterNode` once, at subscribe, into a
//! `TagsFilter`, and evaluating that against a publication's `tags` without
//! allocating, for every publication and every filtering subscriber.
//!
//! The semantics are Centrifugo's (centrifuge `internal/filter`): which
//! shapes are valid, what a missing tag means to each comparison, and the
//! decimal grammar of the numeric ones. The size limits are herald's own:
//! Centrifugo has none beyond the message size.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::command::FilterNode;

/// Deepest accepted filter; the root is at depth 1.
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most nodes (logical and comparison) in one filter.
pub const MAX_FILTER_NODES: usize = 256;
/// Most `vals` entries over all `in`/`nin` nodes of one filter.
pub const MAX_FILTER_VALS: usize = 1024;

/// Why a `FilterNode` is not a valid filter (answered with error 107).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown op")]
    UnknownOp,
    #[error("unknown cmp")]
    UnknownCmp,
    #[error("a comparison needs cmp")]
    MissingCmp,
    #[error("a comparison needs key")]
    MissingKey,
    #[error("this cmp needs val")]
    MissingVal,
    #[error("in and nin need vals")]
    MissingVals,
    #[error("this cmp takes no val")]
    UnexpectedVal,
    #[error("this cmp takes no vals")]
    UnexpectedVals,
    #[error("and and or need at least one node")]
    NoNodes,
    #[error("not needs exactly one node")]
    NotArity,
    #[error("filter deeper than {MAX_FILTER_DEPTH}")]
    TooDeep,
    #[error("filter with more than {MAX_FILTER_NODES} nodes")]
    TooManyNodes,
    #[error("filter with more than {MAX_FILTER_VALS} vals")]
    TooManyVals,
}

/// A checked tags filter. Cheap to evaluate: no allocation, at most
/// `MAX_FILTER_NODES` node visits and `MAX_FILTER_VALS` string comparisons
/// for `in`/`nin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagsFilter {
    root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Leaf { key: String, test: Test },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Eq(String),
    Neq(String),
    In(Vec<String>),
    Nin(Vec<String>),
    Exists,
    NotExists,
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    /// `gt`, `gte`, `lt`, `lte`: the tag compared with `val`, true when the
    /// ordering is one of `accept`. `val` is kept as sent: one that is not a
    /// number is valid and never matches (Centrifugo's rule).
    Numeric {
        val: String,
        accept: &'static [Ordering],
    },
}

const GT: &[Ordering] = &[Ordering::Greater];
const GTE: &[Ordering] = &[Ordering::Greater, Ordering::Equal];
const LT: &[Ordering] = &[Ordering::Less];
const LTE: &[Ordering] = &[Ordering::Less, Ordering::Equal];

/// What a check has used up so far.
#[derive(Default)]
struct Budget {
    nodes: usize,
    vals: usize,
}

impl TagsFilter {
    /// Checks a wire filter. Fields a node's kind does not use (`nodes` of
    /// a comparison, `key`/`cmp`/`val`/`vals` of a logical node) are
    /// ignored, as Centrifugo does.
    pub fn new(node: &FilterNode) -> Result<Self, FilterError> {
        let mut budget = Budget::default();
        let root = check(node, 1, &mut budget)?;
        Ok(Self { root })
    }

    /// Whether a publication with these tags passes the filter.
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        eval(&self.root, tags)
    }
}

fn check(node: &FilterNode, depth: usize, budget: &mut Budget) -> Result<Node, FilterError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(FilterError::TooDeep);
    }
    budget.nodes += 1;
    if budget.nodes > MAX_FILTER_NODES {
        return Err(FilterError::TooManyNodes);
    }
    let children = |budget: &mut Budget| -> Result<Vec<Node>, FilterError> {
        node.nodes
            .iter()
            .map(|child| check(child, depth + 1, budget))
            .collect()
    };
    match node.op.as_str() {
        "" => check_leaf(node, budget),
        "and" | "or" => {
            if node.nodes.is_empty() {
                return Err(FilterError::NoNodes);
            }
            let nodes = children(budget)?;
            Ok(if node.op == "and" {
                Node::And(nodes)
            } else {
                Node::Or(nodes)
            })
        }
        "not" => {
            if node.nodes.len() != 1 {
                return Err(FilterError::NotArity);
            }
            let mut nodes = children(budget)?;
            match nodes.pop() {
                Some(only) => Ok(Node::Not(Box::new(only))),
                None => Err(FilterError::NotArity),
            }
        }
        _ => Err(FilterError::UnknownOp),
    }
}

fn check_leaf(node: &FilterNode, budget: &mut Budget) -> Result<Node, FilterError> {
    let val = || node.val.clone();
    let test = match node.cmp.as_str() {
        "" => return Err(FilterError::MissingCmp),
        "eq" | "neq" | "sw" | "ew" | "ct" | "gt" | "gte" | "lt" | "lte" => {
            if node.val.is_empty() {
                return Err(FilterError::MissingVal);
            }
            if !node.vals.is_empty() {
                return Err(FilterError::UnexpectedVals);
            }
            match node.cmp.as_str() {
                "eq" => Test::Eq(val()),
                "neq" => Test::Neq(val()),
                "sw" => Test::StartsWith(val()),
                "ew" => Test::EndsWith(val()),
                "ct" => Test::Contains(val()),
                "gt" => Test::Numeric {
                    val: val(),
                    accept: GT,
                },
                "gte" => Test::Numeric {
                    val: val(),
                    accept: GTE,
                },
                "lt" => Test::Numeric {
                    val: val(),
                    accept: LT,
                },
                _ => Test::Numeric {
                    val: val(),
                    accept: LTE,
                },
            }
        }
        "in" | "nin" => {
            if node.vals.is_empty() {
                return Err(FilterError::MissingVals);
            }
            if !node.val.is_empty() {
                return Err(FilterError::UnexpectedVal);
            }
            budget.vals += node.vals.len();
            if budget.vals > MAX_FILTER_VALS {
                return Err(FilterError::TooManyVals);
            }
            if node.cmp == "in" {
                Test::In(node.vals.clone())
            } else {
                Test::Nin(node.vals.clone())
            }
        }
        "ex" | "nex" => {
            if !node.val.is_empty() {
                return Err(FilterError::UnexpectedVal);
            }
            if !node.vals.is_empty() {
                return Err(FilterError::UnexpectedVals);
            }
            if node.cmp == "ex" {
                Test::Exists
            } else {
                Test::NotExists
            }
        }
        _ => return Err(FilterError::UnknownCmp),
    };
    // Only the existence checks may name the empty key (Centrifugo's rule).
    if node.key.is_empty() && !matches!(test, Test::Exists | Test::NotExists) {
        return Err(FilterError::MissingKey);
    }
    Ok(Node::Leaf {
        key: node.key.clone(),
        test,
    })
}

fn eval(node: &Node, tags: &BTreeMap<String, String>) -> bool {
    match node {
        Node::And(nodes) => nodes.iter().all(|n| eval(n, tags)),
        Node::Or(nodes) => nodes.iter().any(|n| eval(n, tags)),
        Node::Not(inner) => !eval(inner, tags),
        Node::Leaf { key, test } => {
            let tag = tags.get(key).map(String::as_str);
            match test {
                Test::Eq(v) => tag == Some(v.as_str()),
                Test::Neq(v) => tag != Some(v.as_str()),
                // A missing tag is the empty string here (Centrifugo reads
                // its Go map's zero value): `in` with "" among `vals` matches it.
                Test::In(vals) => vals.iter().any(|v| v == tag.unwrap_or("")),
                Test::Nin(vals) => !vals.iter().any(|v| v == tag.unwrap_or("")),
                Test::Exists => tag.is_some(),
                Test::NotExists => tag.is_none(),
                Test::StartsWith(v) => tag.is_some_and(|t| t.starts_with(v.as_str())),
                Test::EndsWith(v) => tag.is_some_and(|t| t.ends_with(v.as_str())),
                Test::Contains(v) => tag.is_some_and(|t| t.contains(v.as_str())),
                Test::Numeric { val, accept } => {
                    let ordering = tag
                        .and_then(Decimal::parse)
                        .zip(Decimal::parse(val))
                        .map(|(t, v)| t.cmp(&v));
                    ordering.is_some_and(|o| accept.contains(&o))
                }
            }
        }
    }
}

/// Longest string read as a number (Centrifugo's decimal library's limit).
const MAX_DECIMAL_LEN: usize = 200;
/// Most digits after the point (the same library's precision).
const MAX_FRACTION_DIGITS: usize = 19;

/// A decimal number borrowed from its text, normalised so that equal
/// numbers are equal: no leading zeros in `int`, no trailing zeros in
/// `frac`, and zero is never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decimal<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
}

impl<'a> Decimal<'a> {
    /// `[+-]digits[.digits]`: one optional sign, at least one digit before
    /// the point, and when there is a point at least one and at most 19
    /// digits after it; at most 200 bytes; no exponent, no spaces.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        if text.is_empty() || text.len() > MAX_DECIMAL_LEN {
            return None;
        }
        let (negative, unsigned) = match text.as_bytes()[0] {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (int, frac) = match unsigned.split_once('.') {
            Some((int, frac)) => (int, frac),
            None => (unsigned, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let has_point = int.len() < unsigned.len();
        if int.is_empty() || !digits(int) || !digits(frac) {
            return None;
        }
        if has_point && (frac.is_empty() || frac.len() > MAX_FRACTION_DIGITS) {
            return None;
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let zero = int.is_empty() && frac.is_empty();
        Some(Self {
            negative: negative && !zero,
            int,
            frac,
        })
    }

    fn cmp_magnitude(&self, other: &Self) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(other.int))
            // Without trailing zeros, digit strings after the point order
            // as the fractions they write.
            .then_with(|| self.frac.cmp(other.frac))
    }
}

impl Ord for Decimal<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests;
