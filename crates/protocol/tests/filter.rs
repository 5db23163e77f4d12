//! The tags filter against an independent reference: `reference_eval` reads
//! the filter as JSON (`serde_json::Value`) and compares numbers as scaled
//! integers, where `TagsFilter` works on the typed tree and compares digit
//! strings. Random filters (well-formed and not) × random tag maps must get
//! the same answer from both. Also: hostile filters through both decoders
//! never panic.

use std::collections::BTreeMap;

use herald_protocol::protobuf::decode_frame_protobuf;
use herald_protocol::{decode_frame, FilterNode, Method, TagsFilter};
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Reference evaluator (docs/protocol.md, "Tags filter"), written from the
// documented rules over JSON values.
// ---------------------------------------------------------------------------

/// `None`: the filter is invalid.
fn reference_eval(filter: &Value, tags: &BTreeMap<String, String>) -> Option<bool> {
    let field = |name: &str| filter.get(name).and_then(Value::as_str).unwrap_or("");
    let list = |name: &str| -> Vec<&Value> {
        filter
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    let children = list("nodes");
    match field("op") {
        "and" => {
            if children.is_empty() {
                return None;
            }
            let results: Option<Vec<bool>> =
                children.iter().map(|c| reference_eval(c, tags)).collect();
            Some(results?.into_iter().all(|b| b))
        }
        "or" => {
            if children.is_empty() {
                return None;
            }
            let results: Option<Vec<bool>> =
                children.iter().map(|c| reference_eval(c, tags)).collect();
            Some(results?.into_iter().any(|b| b))
        }
        "not" => match children.as_slice() {
            [only] => reference_eval(only, tags).map(|b| !b),
            _ => None,
        },
        "" => {
            let key = field("key");
            let cmp = field("cmp");
            let val = field("val");
            let vals: Vec<&str> = list("vals").iter().filter_map(|v| v.as_str()).collect();
            let tag = tags.get(key);
            let single = ["eq", "neq", "sw", "ew", "ct", "gt", "gte", "lt", "lte"];
            if single.contains(&cmp) {
                if val.is_empty() || !vals.is_empty() || key.is_empty() {
                    return None;
                }
            } else if cmp == "in" || cmp == "nin" {
                if vals.is_empty() || !val.is_empty() || key.is_empty() {
                    return None;
                }
            } else if cmp == "ex" || cmp == "nex" {
                if !val.is_empty() || !vals.is_empty() {
                    return None;
                }
            } else {
                return None;
            }
            let as_text = tag.cloned().unwrap_or_default();
            Some(match cmp {
                "eq" => tag.map(String::as_str) == Some(val),
                "neq" => tag.map(String::as_str) != Some(val),
                "in" => vals.contains(&as_text.as_str()),
                "nin" => !vals.contains(&as_text.as_str()),
                "ex" => tag.is_some(),
                "nex" => tag.is_none(),
                "sw" => tag.is_some() && as_text.find(val) == Some(0),
                "ew" => {
                    tag.is_some()
                        && as_text.len() >= val.len()
                        && as_text.rfind(val) == Some(as_text.len() - val.len())
                }
                "ct" => tag.is_some() && as_text.matches(val).next().is_some(),
                _ => match (tag.and_then(|t| scaled(t)), scaled(val)) {
                    (Some(t), Some(v)) => match cmp {
                        "gt" => t > v,
                        "gte" => t >= v,
                        "lt" => t < v,
                        _ => t <= v,
                    },
                    _ => false,
                },
            })
        }
        _ => None,
    }
}

/// A decimal as an integer count of 10^-19: only for the short numbers the
/// generators make (at most 15 digits before the point).
fn scaled(text: &str) -> Option<i128> {
    let (negative, rest) = if let Some(r) = text.strip_prefix('-') {
        (true, r)
    } else {
        (false, text.strip_prefix('+').unwrap_or(text))
    };
    let mut parts = rest.splitn(2, '.');
    let int = parts.next()?;
    let frac = parts.next();
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || int.len() > 30 {
        return None;
    }
    let mut value: i128 = int.parse().ok()?;
    let mut scale = 19;
    if let Some(frac) = frac {
        if frac.is_empty() || frac.len() > 19 || !all_digits(frac) {
            return None;
        }
        for c in frac.chars() {
            value = value * 10 + i128::from(c.to_digit(10)? as u8);
            scale -= 1;
        }
    }
    let value = value.checked_mul(10i128.checked_pow(scale)?)?;
    Some(if negative { -value } else { value })
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const KEYS: &[&str] = &["a", "b", "price", ""];
const CMPS: &[&str] = &[
    "eq", "neq", "in", "nin", "ex", "nex", "sw", "ew", "ct", "gt", "gte", "lt", "lte",
];

/// Tag values and filter values: words that overlap as prefixes and
/// suffixes, and numbers (some not numbers at all).
fn value() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "", "x", "xy", "yx", "xyz", "0", "-0", "1", "01", "1.0", "-2.5", "10", "1e3", ".5",
            "5.", "+3", "abc",
        ])
        .prop_map(String::from),
        "[+-]?[0-9]{0,15}(\\.[0-9]{0,21})?",
        "[xyz]{1,4}",
    ]
    .boxed()
}

fn tag_map() -> BoxedStrategy<BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(String::from),
        value(),
        0..4,
    )
    .boxed()
}

/// Well-formed filters: the shapes the SDKs' builders make.
fn well_formed() -> BoxedStrategy<FilterNode> {
    let leaf = (
        prop::sample::select(&KEYS[..3]),
        prop::sample::select(CMPS),
        value().prop_filter("val set", |v| !v.is_empty()),
        prop::collection::vec(value(), 1..4),
    )
        .prop_map(|(key, cmp, val, vals)| {
            let mut node = FilterNode {
                key: key.into(),
                cmp: cmp.into(),
                ..Default::default()
            };
            match cmp {
                "in" | "nin" => node.vals = vals,
                "ex" | "nex" => {}
                _ => node.val = val,
            }
            node
        });
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|nodes| FilterNode {
                op: "and".into(),
                nodes,
                ..Default::default()
            }),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|nodes| FilterNode {
                op: "or".into(),
                nodes,
                ..Default::default()
            }),
            inner.prop_map(|n| FilterNode {
                op: "not".into(),
                nodes: vec![n],
                ..Default::default()
            }),
        ]
    })
    .boxed()
}

/// Any shape: wrong fields for the cmp, unknown ops and cmps, bad arity.
fn any_shape() -> BoxedStrategy<FilterNode> {
    let op = prop::sample::select(vec!["", "", "and", "or", "not", "xor", "AND"]);
    let cmp = prop::sample::select(vec![
        "", "eq", "neq", "in", "nin", "ex", "nex", "sw", "ew", "ct", "gt", "gte", "lt", "lte", "zz",
    ]);
    let leaf = (
        op.clone(),
        prop::sample::select(KEYS),
        cmp,
        value(),
        prop::collection::vec(value(), 0..3),
    )
        .prop_map(|(op, key, cmp, val, vals)| FilterNode {
            op: op.into(),
            key: key.into(),
            cmp: cmp.into(),
            val,
            vals,
            nodes: Vec::new(),
        });
    leaf.prop_recursive(4, 40, 4, move |inner| {
        (op.clone(), prop::collection::vec(inner, 0..4)).prop_map(|(op, nodes)| FilterNode {
            op: op.into(),
            nodes,
            ..Default::default()
        })
    })
    .boxed()
}

fn agree(filter: &FilterNode, tags: &BTreeMap<String, String>) -> Result<(), TestCaseError> {
    let json = serde_json::to_value(filter).expect("a filter is JSON");
    let want = reference_eval(&json, tags);
    let got = TagsFilter::new(filter).ok().map(|f| f.matches(tags));
    prop_assert_eq!(got, want, "filter {} tags {:?}", json, tags);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn well_formed_filters_match_the_reference(filter in well_formed(), tags in tag_map()) {
        prop_assert!(TagsFilter::new(&filter).is_ok(), "{:?}", filter);
        agree(&filter, &tags)?;
    }

    #[test]
    fn any_filter_is_judged_like_the_reference(filter in any_shape(), tags in tag_map()) {
        agree(&filter, &tags)?;
    }

    /// Numbers alone: every numeric cmp between two random decimals.
    #[test]
    fn numeric_comparisons_match_scaled_integers(
        a in "[+-]?[0-9]{1,15}(\\.[0-9]{1,19})?",
        b in "[+-]?[0-9]{1,15}(\\.[0-9]{1,19})?",
    ) {
        let tags = BTreeMap::from([("n".to_string(), a.clone())]);
        for cmp in ["gt", "gte", "lt", "lte"] {
            let filter = FilterNode { key: "n".into(), cmp: cmp.into(), val: b.clone(), ..Default::default() };
            agree(&filter, &tags)?;
        }
    }

    /// A subscribe's `tf` of any shape decodes from both formats or is
    /// refused, never panics, and checking it never panics.
    #[test]
    fn hostile_filters_decode_or_refuse(filter in any_shape(), junk in prop::collection::vec(any::<u8>(), 0..64)) {
        let json = serde_json::json!({"id": 1, "subscribe": {"channel": "c", "tf": filter}});
        let commands = decode_frame(json.to_string().as_bytes()).expect("a valid command");
        let Method::Subscribe(req) = &commands[0].method else { panic!("not a subscribe") };
        prop_assert_eq!(req.tf.as_ref(), Some(&filter));
        let _ = TagsFilter::new(&filter);
        // The same bytes with junk appended: an error or commands, no panic.
        let mut bytes = json.to_string().into_bytes();
        bytes.extend_from_slice(&junk);
        let _ = decode_frame(&bytes);
        let _ = decode_frame_protobuf(&bytes);
    }
}

// ---------------------------------------------------------------------------
// Hostile depth
// ---------------------------------------------------------------------------

#[test]
fn deep_json_filter_is_refused_without_overflow() {
    for depth in [40usize, 100, 5_000, 100_000] {
        let tf = format!(
            "{}{}{}",
            r#"{"op":"not","nodes":["#.repeat(depth - 1),
            r#"{"key":"k","cmp":"ex"}"#,
            "]}".repeat(depth - 1)
        );
        let frame = format!(r#"{{"id":1,"subscribe":{{"channel":"c","tf":{tf}}}}}"#);
        match decode_frame(frame.as_bytes()) {
            // serde_json's recursion limit refuses the frame.
            Err(_) => assert!(depth > 40, "depth {depth} should decode"),
            // Decoded: the filter check refuses it (deeper than the limit).
            Ok(commands) => {
                let Method::Subscribe(req) = &commands[0].method else {
                    panic!("not a subscribe")
                };
                assert!(TagsFilter::new(req.tf.as_ref().unwrap()).is_err());
            }
        }
    }
}

/// Protobuf `FilterNode{nodes=6: FilterNode{...}}` nested `depth` times.
fn nested_protobuf_filter(depth: usize) -> Vec<u8> {
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    fn field(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        varint(body.len(), &mut out);
        out.extend_from_slice(body);
        out
    }
    // Leaf: key=2 "k", cmp=3 "ex".
    let mut node = vec![0x12, 1, b'k', 0x1a, 2, b'e', b'x'];
    for _ in 1..depth {
        let mut parent = vec![0x0a, 3, b'n', b'o', b't'];
        parent.extend(field(0x32, &node));
        node = parent;
    }
    // SubscribeRequest{channel=1 "c", tf=13}, Command{id=1 1, subscribe=5}.
    let mut subscribe = vec![0x0a, 1, b'c'];
    subscribe.extend(field(0x6a, &node));
    let mut command = vec![0x08, 1];
    command.extend(field(0x2a, &subscribe));
    let mut message = Vec::new();
    varint(command.len(), &mut message);
    message.extend(command);
    message
}

#[test]
fn deep_protobuf_filter_is_refused_without_overflow() {
    // Decodes: a shallow one, field numbers as in client.proto.
    let commands = decode_frame_protobuf(&nested_protobuf_filter(2)).expect("decodes");
    let Method::Subscribe(req) = &commands[0].method else {
        panic!("not a subscribe")
    };
    let tf = req.tf.as_ref().expect("tf");
    assert_eq!(tf.op, "not");
    assert_eq!(tf.nodes[0].key, "k");
    assert_eq!(tf.nodes[0].cmp, "ex");
    assert!(TagsFilter::new(tf).is_ok());
    for depth in [33usize, 90, 200, 3_000] {
        match decode_frame_protobuf(&nested_protobuf_filter(depth)) {
            Err(_) => assert!(depth > 90, "depth {depth} should decode"),
            Ok(commands) => {
                let Method::Subscribe(req) = &commands[0].method else {
                    panic!("not a subscribe")
                };
                assert!(TagsFilter::new(req.tf.as_ref().unwrap()).is_err());
            }
        }
    }
}

#[test]
fn centrifuge_js_subscribe_with_tf_decodes() {
    // As centrifuge-js 5.8 sends it (its `tagsFilter` option copied to `tf`).
    let frame = br#"{"id":2,"subscribe":{"channel":"market:stocks","tf":{"op":"and","nodes":[{"key":"ticker","cmp":"eq","val":"AAPL"},{"key":"source","cmp":"in","vals":["NASDAQ","NYSE"]}]}}}"#;
    let commands = decode_frame(frame).expect("decodes");
    let Method::Subscribe(req) = &commands[0].method else {
        panic!("not a subscribe")
    };
    let filter = TagsFilter::new(req.tf.as_ref().unwrap()).expect("valid");
    let tags = |t: &str, s: &str| {
        BTreeMap::from([
            ("ticker".to_string(), t.to_string()),
            ("source".to_string(), s.to_string()),
        ])
    };
    assert!(filter.matches(&tags("AAPL", "NYSE")));
    assert!(!filter.matches(&tags("AAPL", "LSE")));
    assert!(!filter.matches(&tags("MSFT", "NYSE")));
}
