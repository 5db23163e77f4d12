use super::*;

fn leaf(key: &str, cmp: &str, val: &str) -> FilterNode {
    FilterNode {
        key: key.into(),
        cmp: cmp.into(),
        val: val.into(),
        ..Default::default()
    }
}

fn set(key: &str, cmp: &str, vals: &[&str]) -> FilterNode {
    FilterNode {
        key: key.into(),
        cmp: cmp.into(),
        vals: vals.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

fn logical(op: &str, nodes: Vec<FilterNode>) -> FilterNode {
    FilterNode {
        op: op.into(),
        nodes,
        ..Default::default()
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn matches(filter: &FilterNode, t: &BTreeMap<String, String>) -> bool {
    TagsFilter::new(filter).expect("valid filter").matches(t)
}

/// Centrifugo's documented example publication.
fn stock() -> BTreeMap<String, String> {
    tags(&[
        ("ticker", "AAPL"),
        ("source", "NASDAQ"),
        ("price", "150.25"),
        ("category", "tech"),
        ("volume", "1000"),
    ])
}

#[test]
fn each_comparison_against_present_and_missing_tags() {
    let t = stock();
    let none = tags(&[]);
    // (filter, on the stock tags, on no tags)
    let cases = [
        (leaf("ticker", "eq", "AAPL"), true, false),
        (leaf("ticker", "eq", "MSFT"), false, false),
        (leaf("source", "neq", "TEST"), true, true),
        (leaf("source", "neq", "NASDAQ"), false, true),
        (set("category", "in", &["tech", "finance"]), true, false),
        (set("category", "in", &["finance"]), false, false),
        // A missing tag reads as "" for in/nin (Centrifugo's map zero value).
        (set("category", "in", &["", "x"]), false, true),
        (set("ticker", "nin", &["MSFT", "GOOGL"]), true, true),
        (set("ticker", "nin", &["AAPL"]), false, true),
        (set("ticker", "nin", &[""]), true, false),
        (leaf("price", "ex", ""), true, false),
        (leaf("internal_id", "ex", ""), false, false),
        (leaf("internal_id", "nex", ""), true, true),
        (leaf("price", "nex", ""), false, true),
        (leaf("ticker", "sw", "AA"), true, false),
        (leaf("ticker", "sw", "PL"), false, false),
        (leaf("source", "ew", "DAQ"), true, false),
        (leaf("source", "ew", "NAS"), false, false),
        (leaf("category", "ct", "ec"), true, false),
        (leaf("category", "ct", "xx"), false, false),
        (leaf("price", "gt", "100"), true, false),
        (leaf("price", "gt", "150.25"), false, false),
        (leaf("volume", "gte", "1000"), true, false),
        (
            leaf("volume", "gte", "1000.0000000000000000001"),
            false,
            false,
        ),
        (leaf("price", "lt", "200"), true, false),
        (leaf("price", "lt", "150.250"), false, false),
        (leaf("volume", "lte", "1000"), true, false),
        (leaf("volume", "lte", "999.99"), false, false),
        // Non-numeric tag or val: every numeric comparison is false.
        (leaf("ticker", "gt", "0"), false, false),
        (leaf("ticker", "lte", "0"), false, false),
        (leaf("price", "gt", "abc"), false, false),
        (leaf("price", "lt", "1e9"), false, false),
    ];
    for (i, (filter, on_stock, on_none)) in cases.iter().enumerate() {
        assert_eq!(
            matches(filter, &t),
            *on_stock,
            "case {i} on stock: {filter:?}"
        );
        assert_eq!(
            matches(filter, &none),
            *on_none,
            "case {i} on none: {filter:?}"
        );
    }
}

#[test]
fn logical_operators() {
    let t = stock();
    let yes = leaf("ticker", "eq", "AAPL");
    let no = leaf("ticker", "eq", "MSFT");
    let cases = [
        (logical("and", vec![yes.clone(), yes.clone()]), true),
        (logical("and", vec![yes.clone(), no.clone()]), false),
        (logical("and", vec![yes.clone()]), true),
        (logical("or", vec![no.clone(), yes.clone()]), true),
        (logical("or", vec![no.clone(), no.clone()]), false),
        (logical("not", vec![no.clone()]), true),
        (logical("not", vec![yes.clone()]), false),
        // not over a numeric comparison on a non-numeric tag is true.
        (logical("not", vec![leaf("ticker", "gt", "1")]), true),
        (
            logical(
                "or",
                vec![
                    no.clone(),
                    logical("and", vec![yes.clone(), leaf("price", "gte", "150")]),
                ],
            ),
            true,
        ),
    ];
    for (i, (filter, want)) in cases.iter().enumerate() {
        assert_eq!(matches(filter, &t), *want, "case {i}: {filter:?}");
    }
}

#[test]
fn invalid_filters_and_why() {
    let mut with_vals = leaf("k", "eq", "v");
    with_vals.vals = vec!["x".into()];
    let mut in_with_val = set("k", "in", &["a"]);
    in_with_val.val = "b".into();
    let mut ex_with_vals = leaf("k", "ex", "");
    ex_with_vals.vals = vec!["x".into()];
    let cases = [
        (
            logical("xor", vec![leaf("k", "eq", "v")]),
            FilterError::UnknownOp,
        ),
        (leaf("k", "like", "v"), FilterError::UnknownCmp),
        (leaf("k", "", "v"), FilterError::MissingCmp),
        (FilterNode::default(), FilterError::MissingCmp),
        (leaf("", "eq", "v"), FilterError::MissingKey),
        (leaf("", "gt", "1"), FilterError::MissingKey),
        (set("", "in", &["a"]), FilterError::MissingKey),
        (leaf("k", "eq", ""), FilterError::MissingVal),
        (leaf("k", "lte", ""), FilterError::MissingVal),
        (set("k", "in", &[]), FilterError::MissingVals),
        (set("k", "nin", &[]), FilterError::MissingVals),
        (with_vals, FilterError::UnexpectedVals),
        (in_with_val, FilterError::UnexpectedVal),
        (leaf("k", "ex", "v"), FilterError::UnexpectedVal),
        (ex_with_vals, FilterError::UnexpectedVals),
        (logical("and", vec![]), FilterError::NoNodes),
        (logical("or", vec![]), FilterError::NoNodes),
        (logical("not", vec![]), FilterError::NotArity),
        (
            logical("not", vec![leaf("k", "ex", ""), leaf("k", "ex", "")]),
            FilterError::NotArity,
        ),
        // An invalid child makes the whole filter invalid.
        (
            logical("and", vec![leaf("k", "ex", ""), leaf("k", "zz", "v")]),
            FilterError::UnknownCmp,
        ),
        // Ops and cmps are case-sensitive, as on the wire.
        (leaf("k", "EQ", "v"), FilterError::UnknownCmp),
        (
            logical("AND", vec![leaf("k", "ex", "")]),
            FilterError::UnknownOp,
        ),
    ];
    for (i, (filter, want)) in cases.iter().enumerate() {
        assert_eq!(
            TagsFilter::new(filter),
            Err(want.clone()),
            "case {i}: {filter:?}"
        );
    }
}

#[test]
fn accepted_quirks_of_centrifugo() {
    // ex/nex may name the empty key.
    assert!(matches(&leaf("", "nex", ""), &stock()));
    assert!(matches(&leaf("", "ex", ""), &tags(&[("", "x")])));
    // A numeric val that is no number is valid and never matches.
    assert!(!matches(&leaf("price", "gt", "lots"), &stock()));
    // Fields the node's kind does not use are ignored.
    let mut leaf_with_nodes = leaf("ticker", "eq", "AAPL");
    leaf_with_nodes.nodes = vec![FilterNode::default()];
    assert!(matches(&leaf_with_nodes, &stock()));
    let mut and_with_key = logical("and", vec![leaf("ticker", "ex", "")]);
    and_with_key.key = "ignored".into();
    and_with_key.cmp = "nonsense".into();
    assert!(matches(&and_with_key, &stock()));
}

fn chain(depth: usize) -> FilterNode {
    let mut node = leaf("k", "ex", "");
    for _ in 1..depth {
        node = logical("not", vec![node]);
    }
    node
}

#[test]
fn limits() {
    assert!(TagsFilter::new(&chain(MAX_FILTER_DEPTH)).is_ok());
    assert_eq!(
        TagsFilter::new(&chain(MAX_FILTER_DEPTH + 1)),
        Err(FilterError::TooDeep)
    );
    let wide = |n: usize| logical("or", (0..n).map(|_| leaf("k", "ex", "")).collect());
    assert!(TagsFilter::new(&wide(MAX_FILTER_NODES - 1)).is_ok());
    assert_eq!(
        TagsFilter::new(&wide(MAX_FILTER_NODES)),
        Err(FilterError::TooManyNodes)
    );
    let vals: Vec<String> = (0..MAX_FILTER_VALS).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
    assert!(TagsFilter::new(&set("k", "in", &refs)).is_ok());
    let split = logical(
        "and",
        vec![set("k", "in", &refs), set("k", "nin", &["one more"])],
    );
    assert_eq!(TagsFilter::new(&split), Err(FilterError::TooManyVals));
    // Depth 32 of `not` over `not`...: evaluation alternates correctly.
    assert!(!TagsFilter::new(&chain(MAX_FILTER_DEPTH))
        .unwrap()
        .matches(&tags(&[("k", "1")])));
}

#[test]
fn decimal_grammar() {
    let numbers = [
        "0",
        "-0",
        "+0",
        "00",
        "1",
        "+1",
        "-1",
        "007",
        "1.5",
        "-1.50",
        "0.0000000000000000001",
        "123456789012345678901234567890",
        "1.1234567890123456789",
    ];
    for n in numbers {
        assert!(Decimal::parse(n).is_some(), "{n} is a number");
    }
    let long_int = "9".repeat(MAX_DECIMAL_LEN);
    assert!(Decimal::parse(&long_int).is_some());
    let too_long = "9".repeat(MAX_DECIMAL_LEN + 1);
    let not_numbers = [
        "",
        "+",
        "-",
        ".",
        ".5",
        "-.5",
        "5.",
        "1.2.3",
        "1e5",
        "1E5",
        " 1",
        "1 ",
        "--1",
        "+-1",
        "0x10",
        "1_000",
        "1,5",
        "NaN",
        "inf",
        "١",
        "1.12345678901234567890",
        &too_long,
    ];
    for n in not_numbers {
        assert!(Decimal::parse(n).is_none(), "{n:?} is not a number");
    }
}

#[test]
fn decimal_order() {
    let ordered = [
        "-1000",
        "-999.5",
        "-2",
        "-1.5",
        "-1.05",
        "-1",
        "-0.5",
        "0",
        "0.00001",
        "0.1",
        "0.5",
        "0.51",
        "1",
        "1.0000000000000000001",
        "2",
        "10",
        "99.99",
        "100",
        "123456789012345678901234567890",
    ];
    for (i, a) in ordered.iter().enumerate() {
        for (j, b) in ordered.iter().enumerate() {
            let (x, y) = (Decimal::parse(a).unwrap(), Decimal::parse(b).unwrap());
            assert_eq!(x.cmp(&y), i.cmp(&j), "{a} vs {b}");
        }
    }
    let equal = [
        ("0", "-0.000"),
        ("1", "001.000"),
        ("-2.5", "-02.50"),
        ("+3", "3"),
    ];
    for (a, b) in equal {
        assert_eq!(
            Decimal::parse(a).unwrap().cmp(&Decimal::parse(b).unwrap()),
            Ordering::Equal,
            "{a} == {b}"
        );
    }
}
