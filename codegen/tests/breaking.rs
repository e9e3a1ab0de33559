//! The breaking-change check: one pair of schema versions per rule under
//! `tests/fixtures/breaking/<case>/{old,new}.yaml`, each with its verdict, its rules and
//! its report snapshotted. Review snapshot changes with `cargo insta review`.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// At least one breaking change: the check fails.
    Breaking,
    /// Only warnings: the check passes.
    Warned,
    /// Nothing to say.
    Compatible,
}

/// Each case, its verdict and the rules it triggers, in the order they are reported.
const CASES: &[(&str, Verdict, &[&str])] = &[
    ("task_removed", Verdict::Breaking, &["TASK_REMOVED"]),
    (
        "task_wire_name_changed",
        Verdict::Breaking,
        &["TASK_WIRE_NAME_CHANGED"],
    ),
    ("argument_removed", Verdict::Breaking, &["ARGUMENT_REMOVED"]),
    ("argument_retyped", Verdict::Breaking, &["ARGUMENT_RETYPED"]),
    (
        "argument_reordered",
        Verdict::Breaking,
        &["ARGUMENT_REORDERED", "ARGUMENT_REORDERED"],
    ),
    (
        "argument_added_required",
        Verdict::Breaking,
        &["ARGUMENT_ADDED_REQUIRED"],
    ),
    ("result_retyped", Verdict::Breaking, &["RESULT_RETYPED"]),
    (
        "enum_value_removed",
        Verdict::Breaking,
        &["ENUM_VALUE_REMOVED"],
    ),
    ("enum_value_added", Verdict::Warned, &["ENUM_VALUE_ADDED"]),
    ("field_removed", Verdict::Breaking, &["FIELD_REMOVED"]),
    ("field_retyped", Verdict::Breaking, &["FIELD_RETYPED"]),
    (
        "field_added_required",
        Verdict::Breaking,
        &["FIELD_ADDED_REQUIRED"],
    ),
    ("queue_changed", Verdict::Warned, &["QUEUE_CHANGED"]),
    ("compatible_additions", Verdict::Compatible, &[]),
];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn changes(case: &str) -> celerity_codegen::Changes {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/breaking")
        .join(case);
    celerity_codegen::breaking_changes(
        &read(&dir.join("old.yaml")),
        &format!("{case}/old.yaml"),
        &read(&dir.join("new.yaml")),
        &format!("{case}/new.yaml"),
    )
    .unwrap_or_else(|e| panic!("{case} should compare:\n{e}"))
}

#[test]
fn each_rule_has_its_verdict_and_report() {
    for (case, verdict, rules) in CASES {
        let changes = changes(case);
        let found: Vec<&str> = changes.changes().iter().map(|c| c.rule).collect();
        assert_eq!(&found, rules, "{case}:\n{changes}");
        let warned = changes
            .changes()
            .iter()
            .any(|c| c.severity == celerity_codegen::Severity::Warning);
        let actual = if changes.is_breaking() {
            Verdict::Breaking
        } else if warned {
            Verdict::Warned
        } else {
            Verdict::Compatible
        };
        assert_eq!(actual, *verdict, "{case}:\n{changes}");
        insta::assert_snapshot!(*case, changes.to_string());
    }
}

#[test]
fn every_case_has_its_fixtures_and_every_fixture_its_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breaking");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("the breaking fixtures")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(case, ..)| (*case).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn a_schema_compared_with_itself_has_no_change() {
    let shop = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/tasks.yaml"));
    let changes = celerity_codegen::breaking_changes(&shop, "a.yaml", &shop, "b.yaml")
        .expect("the shop schema is sound");
    assert!(changes.changes().is_empty(), "{changes}");
    assert_eq!(
        changes.to_string(),
        "no breaking change from `a.yaml` to `b.yaml`\n"
    );
}

#[test]
fn the_mistakes_of_both_versions_are_reported_instead_of_a_verdict() {
    let old = "version: 1\ntasks:\n  ping: {result: Strng}\n";
    let new = "version: 1\ntasks:\n  ping: {result: strin}\n";
    let error = celerity_codegen::breaking_changes(old, "old.yaml", new, "new.yaml")
        .expect_err("neither version is sound");
    let celerity_codegen::Error::Schema(files) = &error else {
        panic!("expected schema mistakes, got {error}");
    };
    let names: Vec<&str> = files.iter().map(|file| file.file.as_str()).collect();
    assert_eq!(names, ["old.yaml", "new.yaml"]);
    assert!(
        error.to_string().contains("unknown type `Strng`"),
        "{error}"
    );
}
