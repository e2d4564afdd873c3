//! Unit tests for every operator and error message, and property tests that printing then
//! parsing is the identity and that matching agrees with a naive reference.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn parse(s: &str) -> LabelSelector {
    match parse_label_selector(s) {
        Ok(sel) => sel,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn parse_err(s: &str) -> String {
    match parse_label_selector(s) {
        Ok(sel) => panic!("{s:?} should not parse, got {sel}"),
        Err(e) => e.to_string(),
    }
}

const QNAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

#[test]
fn equality_operators() {
    let sel = parse("app=kubia");
    assert_eq!(sel.to_string(), "app=kubia");
    assert!(sel.matches(&labels(&[("app", "kubia"), ("x", "y")])));
    assert!(!sel.matches(&labels(&[("app", "other")])));
    assert!(!sel.matches(&labels(&[])));

    let sel = parse("app==kubia");
    assert_eq!(sel.to_string(), "app==kubia");
    assert_eq!(sel.requirements()[0].operator(), Operator::DoubleEquals);
    assert!(sel.matches(&labels(&[("app", "kubia")])));

    let sel = parse("app!=kubia");
    assert_eq!(sel.to_string(), "app!=kubia");
    assert!(!sel.matches(&labels(&[("app", "kubia")])));
    assert!(sel.matches(&labels(&[("app", "other")])));
    assert!(sel.matches(&labels(&[])), "!= matches a missing key");

    let sel = parse("app=");
    assert_eq!(sel.to_string(), "app=");
    assert!(sel.matches(&labels(&[("app", "")])));
    assert!(!sel.matches(&labels(&[])));
}

#[test]
fn set_operators() {
    let sel = parse("env in (prod, dev)");
    assert_eq!(sel.to_string(), "env in (dev,prod)");
    assert_eq!(sel.requirements()[0].values(), ["dev", "prod"]);
    assert!(sel.matches(&labels(&[("env", "dev")])));
    assert!(!sel.matches(&labels(&[("env", "qa")])));
    assert!(!sel.matches(&labels(&[])));

    let sel = parse("env notin (prod)");
    assert_eq!(sel.to_string(), "env notin (prod)");
    assert!(sel.matches(&labels(&[("env", "dev")])));
    assert!(sel.matches(&labels(&[])), "notin matches a missing key");
    assert!(!sel.matches(&labels(&[("env", "prod")])));

    let sel = parse("x in (foo,,baz),y,z notin ()");
    assert_eq!(sel.to_string(), "x in (,baz,foo),y,z notin ()");
    assert!(sel.matches(&labels(&[("x", ""), ("y", "1")])));
    assert!(!sel.matches(&labels(&[("x", ""), ("y", "1"), ("z", "")])));

    // in/notin are identifiers where a key or a value is expected.
    let sel = parse("in in (in,notin)");
    assert_eq!(sel.to_string(), "in in (in,notin)");
    assert!(sel.matches(&labels(&[("in", "notin")])));
}

#[test]
fn existence_operators() {
    let sel = parse("app");
    assert_eq!(sel.to_string(), "app");
    assert_eq!(sel.requirements()[0].operator(), Operator::Exists);
    assert!(sel.matches(&labels(&[("app", "")])));
    assert!(!sel.matches(&labels(&[("other", "x")])));

    let sel = parse("!app");
    assert_eq!(sel.to_string(), "!app");
    assert_eq!(sel.requirements()[0].operator(), Operator::DoesNotExist);
    assert!(!sel.matches(&labels(&[("app", "")])));
    assert!(sel.matches(&labels(&[])));

    let sel = parse("! app , tier");
    assert_eq!(sel.to_string(), "!app,tier");
}

#[test]
fn numeric_operators() {
    let sel = parse("replicas>5");
    assert_eq!(sel.to_string(), "replicas>5");
    assert!(sel.matches(&labels(&[("replicas", "6")])));
    assert!(!sel.matches(&labels(&[("replicas", "5")])));
    assert!(!sel.matches(&labels(&[("replicas", "many")])));
    let sel = parse("replicas<5");
    assert_eq!(sel.to_string(), "replicas<5");
    assert!(sel.matches(&labels(&[("replicas", "4")])));
    assert!(!sel.matches(&labels(&[])));
}

#[test]
fn whitespace_commas_and_order() {
    let sel = parse("  tier  in ( b , a ) ,\tapp = kubia\n");
    assert_eq!(sel.to_string(), "app=kubia,tier in (a,b)");
    let sel = parse("z=1,a=2,m");
    assert_eq!(sel.to_string(), "a=2,m,z=1");
    let sel = parse("");
    assert!(sel.is_empty());
    assert_eq!(sel.to_string(), "");
    assert!(sel.matches(&labels(&[])));
    assert!(parse("   ").is_empty());
    let sel = parse("example.com/app=kubia");
    assert_eq!(sel.requirements()[0].key(), "example.com/app");
}

#[test]
fn syntax_errors() {
    let cases = [
        ("a in", "unable to parse requirement: found '' expected: '('"),
        ("a in (", "unable to parse requirement: found '', expected: ',', ')' or identifier"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a in (b,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a (", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
        ("!,a", "unable to parse requirement: found ',', expected: identifier"),
        ("a=(", "unable to parse requirement: found '(', expected: identifier"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
    ];
    for (input, want) in cases {
        assert_eq!(parse_err(input), want, "for {input:?}");
    }
}

#[test]
fn validation_errors() {
    assert_eq!(
        parse_err("A@b=c"),
        format!("unable to parse requirement: <nil>: Invalid value: \"A@b\": name part {QNAME_RULE}")
    );
    assert_eq!(
        parse_err("app=a/b"),
        format!("unable to parse requirement: values[0][app]: Invalid value: \"a/b\": {VALUE_RULE}")
    );
    assert_eq!(
        parse_err("a>b"),
        "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"
    );
    assert_eq!(
        parse_err("a<-1"),
        format!("unable to parse requirement: values[0][a]: Invalid value: \"-1\": {VALUE_RULE}")
    );
    assert_eq!(
        parse_err("Example.com/a"),
        "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    assert_eq!(
        parse_err("/a"),
        "unable to parse requirement: <nil>: Invalid value: \"/a\": prefix part must be non-empty"
    );
    assert_eq!(
        parse_err("a/"),
        format!(
            "unable to parse requirement: <nil>: Invalid value: \"a/\": name part must be non-empty; name part {QNAME_RULE}"
        )
    );
    assert_eq!(
        parse_err("a/b/c"),
        format!(
            "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name {QNAME_RULE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )
    );
    let long = "k".repeat(64);
    assert_eq!(
        parse_err(&long),
        format!(
            "unable to parse requirement: <nil>: Invalid value: \"{long}\": name part must be no more than 63 characters"
        )
    );
    let long_value = format!("a={}", "v".repeat(64));
    assert_eq!(
        parse_err(&long_value),
        format!(
            "unable to parse requirement: values[0][a]: Invalid value: \"{}\": must be no more than 63 characters",
            "v".repeat(64)
        )
    );
    // Several problems with one requirement are aggregated.
    assert_eq!(
        parse_err("a>b/c"),
        format!(
            "unable to parse requirement: [values[0]: Invalid value: \"b/c\": for 'Gt', 'Lt' operators, the value must be an integer, values[0][a]: Invalid value: \"b/c\": {VALUE_RULE}]"
        )
    );
    match parse_label_selector("a in") {
        Err(SelectorError::InvalidLabelSelector { selector, .. }) => assert_eq!(selector, "a in"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn matches_json_labels() {
    let sel = parse("app=kubia,!canary");
    let obj = json!({"metadata": {"labels": {"app": "kubia", "n": 1}}});
    assert!(sel.matches_json(obj["metadata"]["labels"].as_object()));
    assert!(!sel.matches_json(None));
    assert!(parse("!app").matches_json(None));
    assert!(parse("").matches_json(None));
}

fn k8s_selector(value: serde_json::Value) -> metav1::LabelSelector {
    let labels = value
        .get("matchLabels")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect());
    let exprs = value.get("matchExpressions").and_then(|e| e.as_array()).map(|a| {
        a.iter()
            .map(|e| metav1::LabelSelectorRequirement {
                key: e["key"].as_str().unwrap_or_default().to_string(),
                operator: e["operator"].as_str().unwrap_or_default().to_string(),
                values: e
                    .get("values")
                    .and_then(|v| v.as_array())
                    .map(|v| v.iter().map(|s| s.as_str().unwrap_or_default().to_string()).collect()),
            })
            .collect()
    });
    metav1::LabelSelector { match_labels: labels, match_expressions: exprs }
}

#[test]
fn from_k8s_selector() {
    let sel = LabelSelector::from_k8s(&k8s_selector(json!({
        "matchLabels": {"app": "kubia"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "Exists"}
        ]
    })));
    let sel = match sel {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(sel.to_string(), "app=kubia,!canary,env notin (prod),tier in (a,b),zone");
    assert!(sel.matches(&labels(&[("app", "kubia"), ("tier", "a"), ("zone", "z")])));
    assert!(!sel.matches(&labels(&[("app", "kubia"), ("tier", "a")])));

    // Empty matches everything, null matches nothing; both print as "".
    let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default());
    assert_eq!(empty, Ok(LabelSelector::everything()));
    let null = LabelSelector::from_k8s_opt(None);
    assert_eq!(null, Ok(LabelSelector::nothing()));
    assert!(!LabelSelector::nothing().matches(&labels(&[])));
    assert!(LabelSelector::everything().matches(&labels(&[])));
    assert_eq!(LabelSelector::nothing().to_string(), "");

    let err = |v: serde_json::Value| match LabelSelector::from_k8s(&k8s_selector(v)) {
        Ok(s) => panic!("should fail, got {s}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err(json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})),
        "\"Foo\" is not a valid label selector operator"
    );
    assert_eq!(
        err(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})),
        "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
    );
    assert_eq!(
        err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x", "y"]}]})),
        "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
    );
    assert_eq!(
        err(json!({"matchLabels": {"a b": "c"}})),
        format!("key: Invalid value: \"a b\": name part {QNAME_RULE}")
    );
    assert_eq!(
        err(json!({"matchLabels": {"a": "c d"}})),
        format!("values[0][a]: Invalid value: \"c d\": {VALUE_RULE}")
    );
}

#[test]
fn from_map_and_format_labels() {
    let sel = LabelSelector::from_map(&labels(&[("b", "2"), ("a", "1")]));
    assert_eq!(sel.to_string(), "a=1,b=2");
    assert!(sel.matches(&labels(&[("a", "1"), ("b", "2")])));
    assert_eq!(format_labels([("app", "kubia")]), "app=kubia");
    assert_eq!(format_labels(std::iter::empty()), "<none>");
    // Sorted as "key=value" strings, like labels.Set.String.
    assert_eq!(format_labels([("a", "x"), ("a.b", "y")]), "a.b=y,a=x");
}

fn fparse(s: &str) -> FieldSelector {
    match parse_field_selector(s) {
        Ok(sel) => sel,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn fparse_err(s: &str) -> String {
    match parse_field_selector(s) {
        Ok(sel) => panic!("{s:?} should not parse, got {sel}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn field_selector_operators() {
    let sel = fparse("metadata.name=kubia");
    assert_eq!(sel.to_string(), "metadata.name=kubia");
    assert_eq!(sel.requires_exact_match("metadata.name"), Some("kubia"));
    let sel = fparse("metadata.name==kubia");
    assert_eq!(sel.to_string(), "metadata.name=kubia");
    let sel = fparse("metadata.name!=kubia");
    assert_eq!(sel.to_string(), "metadata.name!=kubia");
    assert_eq!(sel.requires_exact_match("metadata.name"), None);
    let sel = fparse("status.phase=Running,metadata.namespace!=default");
    assert_eq!(sel.to_string(), "metadata.namespace!=default,status.phase=Running");
    let sel = fparse("a=b\\,c\\=d\\\\");
    assert_eq!(sel.terms()[0].value, "b,c=d\\");
    assert_eq!(sel.to_string(), "a=b\\,c\\=d\\\\");
    let sel = fparse("a=");
    assert_eq!(sel.terms()[0].value, "");
    assert!(fparse("").is_empty());
    assert!(fparse(",").is_empty());
}

#[test]
fn field_selector_errors() {
    assert_eq!(fparse_err("foo"), "invalid selector: 'foo'; can't understand 'foo'");
    assert_eq!(fparse_err("a=b,foo"), "invalid selector: 'a=b,foo'; can't understand 'foo'");
    assert_eq!(fparse_err("a=b=c"), "invalid field selector: unescaped character in value: 61");
    assert_eq!(fparse_err("a=b\\x"), "invalid field selector: invalid escape sequence: \\x");
    assert_eq!(fparse_err("a=b\\"), "invalid field selector: invalid escape sequence: \\");
}

#[test]
fn field_selector_support() {
    let check = |kind: &str, s: &str| check_supported(kind, &fparse(s)).map_err(|e| e.to_string());
    assert_eq!(check("Pod", "spec.nodeName=n1,status.phase=Running"), Ok(()));
    assert_eq!(check("Pod", "foo=bar"), Err("field label not supported: foo".to_string()));
    assert_eq!(check("Service", "metadata.name=a,metadata.namespace=b"), Ok(()));
    assert_eq!(
        check("Ingress", "foo.bar=baz"),
        Err("\"foo.bar\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"".to_string())
    );
    assert_eq!(check("Event", "message=whatever"), Err("field label not supported: message".to_string()));
    assert_eq!(
        check(
            "Event",
            "involvedObject.name=kubia,involvedObject.kind=Pod,reason=x,reportingComponent=y,source=z,type=Normal"
        ),
        Ok(())
    );
    assert_eq!(check("Secret", "type=Opaque"), Ok(()));
    assert_eq!(check("Node", "spec.unschedulable=true,metadata.name=n"), Ok(()));
    assert_eq!(check("Node", "metadata.namespace=x"), Err("field label not supported: metadata.namespace".to_string()));
    assert_eq!(check("Namespace", "status.phase=Active"), Ok(()));
    assert_eq!(check("ReplicaSet", "status.replicas=3"), Ok(()));
    // The first unsupported term (in sorted order) is the one reported.
    assert_eq!(check("Pod", "z=1,b=2"), Err("field label not supported: b".to_string()));
    match check_supported("Pod", &fparse("x=1")) {
        Err(SelectorError::UnsupportedField { kind, field, .. }) => {
            assert_eq!((kind.as_str(), field.as_str()), ("Pod", "x"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn field_selector_matching() {
    let pod = json!({
        "kind": "Pod",
        "metadata": {"name": "kubia", "namespace": "default"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "serviceAccountName": "default"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}
    });
    let m = |s: &str| fparse(s).matches("Pod", &pod);
    assert!(m("metadata.name=kubia,metadata.namespace=default"));
    assert!(m("spec.nodeName=n1"));
    assert!(m("spec.host=n1"));
    assert!(m("spec.hostNetwork=false"));
    assert!(m("status.podIP=10.0.0.5"));
    assert!(m("status.phase!=Pending"));
    assert!(!m("status.phase=Pending"));
    assert!(m("spec.schedulerName="), "missing fields read as empty");
    assert!(m(""));

    let event = json!({
        "metadata": {"name": "e1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "kubia", "namespace": "default", "uid": "u1"},
        "reason": "Started", "type": "Normal", "reportingComponent": "kubelet", "source": {}
    });
    let me = |s: &str| fparse(s).matches("Event", &event);
    assert!(me("involvedObject.kind=Pod,involvedObject.name=kubia,involvedObject.uid=u1"));
    assert!(me("source=kubelet"), "source falls back to reportingComponent");
    assert!(me("reason=Started,type=Normal,reportingComponent=kubelet"));

    assert!(fparse("type=Opaque").matches("Secret", &json!({"type": "Opaque"})));
    assert!(fparse("spec.unschedulable=false").matches("Node", &json!({"spec": {}})));
    assert!(fparse("spec.unschedulable=true").matches("Node", &json!({"spec": {"unschedulable": true}})));
    assert!(fparse("status.phase=Active").matches("Namespace", &json!({"status": {"phase": "Active"}})));
    assert!(fparse("status.replicas=3").matches("ReplicaSet", &json!({"status": {"replicas": 3}})));
    assert!(fparse("status.replicas=0").matches("ReplicaSet", &json!({"status": {}})));
    assert_eq!(escape_value("a,b=c\\"), "a\\,b\\=c\\\\");
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("in".to_string()),
        Just("notin".to_string()),
        "[a-zA-Z0-9]",
        "[a-zA-Z0-9][-a-zA-Z0-9_.]{0,6}[a-zA-Z0-9]",
    ]
}

fn label_key() -> impl Strategy<Value = String> {
    (prop::option::of("[a-z0-9]{1,3}(\\.[a-z0-9]{1,3})?"), key_name()).prop_map(|(p, n)| match p {
        Some(p) => format!("{p}/{n}"),
        None => n,
    })
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("in".to_string()),
        Just("notin".to_string()),
        "[a-zA-Z0-9]",
        "[a-zA-Z0-9][-a-zA-Z0-9_.]{0,5}[a-zA-Z0-9]",
    ]
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let ops = prop::sample::select(vec![
        Operator::Equals,
        Operator::DoubleEquals,
        Operator::NotEquals,
        Operator::In,
        Operator::NotIn,
        Operator::Exists,
        Operator::DoesNotExist,
        Operator::GreaterThan,
        Operator::LessThan,
    ]);
    (label_key(), ops, prop::collection::vec(label_value(), 1..4), 0u32..1000).prop_filter_map(
        "valid requirement",
        |(key, op, mut values, n)| {
            let values = match op {
                Operator::In | Operator::NotIn => {
                    values.sort();
                    values.dedup();
                    values
                }
                Operator::Exists | Operator::DoesNotExist => Vec::new(),
                Operator::GreaterThan | Operator::LessThan => vec![n.to_string()],
                _ => vec![values.swap_remove(0)],
            };
            Requirement::new(&key, op, values).ok()
        },
    )
}

fn naive_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.requirements().iter().all(|r| {
        let got = labels.get(r.key());
        match r.operator() {
            Operator::Equals | Operator::DoubleEquals => got == Some(&r.values()[0]),
            Operator::NotEquals => got != Some(&r.values()[0]),
            Operator::In => got.is_some_and(|v| r.values().contains(v)),
            Operator::NotIn => !got.is_some_and(|v| r.values().contains(v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let want: i64 = r.values()[0].parse().unwrap_or(i64::MIN);
                match got.map(|g| g.parse::<i64>()) {
                    Some(Ok(g)) if r.operator() == Operator::GreaterThan => g > want,
                    Some(Ok(g)) => g < want,
                    _ => false,
                }
            }
        }
    })
}

fn field_term() -> impl Strategy<Value = FieldTerm> {
    ("[a-z]{1,4}(\\.[a-zA-Z]{1,5}){0,2}", prop::bool::ANY, "[a-z0-9!=,\\\\ ./-]{0,6}").prop_map(
        |(field, neg, value)| FieldTerm {
            field,
            operator: if neg { FieldOperator::NotEquals } else { FieldOperator::Equals },
            value,
        },
    )
}

proptest! {
    #[test]
    fn label_selector_round_trips(reqs in prop::collection::vec(requirement(), 0..5)) {
        let sel = LabelSelector::from_requirements(reqs);
        let printed = sel.to_string();
        let reparsed = parse_label_selector(&printed);
        prop_assert_eq!(reparsed.as_ref(), Ok(&sel), "printed as {:?}", printed);
        prop_assert_eq!(reparsed.map(|s| s.to_string()), Ok(printed));
    }

    #[test]
    fn label_matching_agrees_with_reference(
        reqs in prop::collection::vec(requirement(), 0..4),
        set in prop::collection::btree_map(
            prop_oneof![label_key(), Just("in".to_string()), Just("a".to_string())],
            prop_oneof![label_value(), "[0-9]{1,3}"],
            0..5,
        ),
    ) {
        let sel = LabelSelector::from_requirements(reqs);
        prop_assert_eq!(sel.matches(&set), naive_matches(&sel, &set));
        let json: serde_json::Map<String, serde_json::Value> =
            set.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        prop_assert_eq!(sel.matches_json(Some(&json)), sel.matches(&set));
    }

    #[test]
    fn field_selector_round_trips(mut terms in prop::collection::vec(field_term(), 0..5)) {
        terms.sort_by_key(|t| t.to_string());
        let sel = FieldSelector::from_terms(terms);
        let printed = sel.to_string();
        let reparsed = parse_field_selector(&printed);
        prop_assert_eq!(reparsed.as_ref(), Ok(&sel), "printed as {:?}", printed);
    }

    #[test]
    fn field_matching_agrees_with_reference(
        terms in prop::collection::vec(field_term(), 0..4),
        name in "[a-z0-9!=,]{0,3}",
    ) {
        let terms: Vec<FieldTerm> = terms
            .into_iter()
            .map(|t| FieldTerm { field: "metadata.name".to_string(), ..t })
            .collect();
        let want = terms.iter().all(|t| match t.operator {
            FieldOperator::Equals => t.value == name,
            FieldOperator::NotEquals => t.value != name,
        });
        let obj = json!({"metadata": {"name": name}});
        prop_assert_eq!(FieldSelector::from_terms(terms).matches("Service", &obj), want);
    }
}
