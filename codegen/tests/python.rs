//! The Python module generated from a schema: snapshots of it for each feature fixture
//! and the reference schema, and, with a Python that has Celery, mypy and ruff
//! (`CELERITY_PYTHON`, else the workspace's `.venv`), proof that it imports, passes
//! `mypy --strict` and `ruff check`, types a user's correct script and refuses a wrong
//! one. Review snapshot changes with `cargo insta review`.

#[path = "../../runtime/tests/support/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every feature fixture, and the reference shop schema, by the module name each becomes.
fn schemas() -> Vec<(String, PathBuf)> {
    let dir = manifest_dir().join("tests/fixtures/ok");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let stem = path.file_stem().expect("a file name").to_string_lossy();
            (format!("fixture_{stem}"), path)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files.push((
        "shop_tasks".into(),
        manifest_dir().join("../schemas/tasks.yaml"),
    ));
    files
}

fn generate(path: &Path) -> String {
    let source = std::fs::read_to_string(path).expect("a readable schema");
    let name = path.file_name().expect("a file name").to_string_lossy();
    celerity_codegen::generate_python_str(&source, &name)
        .unwrap_or_else(|e| panic!("{} should generate Python:\n{e}", path.display()))
}

#[test]
fn generated_python_for_each_feature() {
    for (module, path) in schemas() {
        insta::assert_snapshot!(module, generate(&path));
    }
}

#[test]
fn python_generation_is_deterministic() {
    for (_, path) in schemas() {
        assert_eq!(generate(&path), generate(&path), "{}", path.display());
    }
}

#[test]
fn a_schema_the_build_rejects_generates_no_python_and_says_why_as_the_build_does() {
    let path = manifest_dir().join("tests/fixtures/errors/unknown_type.yaml");
    let source = std::fs::read_to_string(&path).expect("a readable fixture");
    let python = celerity_codegen::generate_python_str(&source, "unknown_type.yaml")
        .expect_err("an unknown type is refused");
    let build = celerity_codegen::generate_str(&source, "unknown_type.yaml")
        .expect_err("an unknown type is refused");
    assert_eq!(python.to_string(), build.to_string());
}

#[test]
fn names_only_python_reserves_are_reported_where_they_are_written() {
    let source = "version: 1\ntypes:\n  Sig: {enum: [Ab, AB]}\ntasks:\n  options: {}\n  ping: {}\n  ping_sig: {}\n";
    let error = celerity_codegen::generate_python_str(source, "names.yaml")
        .expect_err("names the Python module already uses")
        .to_string();
    for expected in [
        "error: type `Sig` collides with `Sig`, which the generated Python module defines\n --> names.yaml:3:3",
        "error: enum values `Ab` and `AB` both become the Python member `AB`\n --> names.yaml:3:20",
        "error: task `options` would become the method `TasksRegistry.options` of the Python client, which already has it: it sets per-call options\n --> names.yaml:5:3",
        "error: task `ping` generates the method `TasksRegistry.ping_sig` of the Python client, its signature, which collides with the method of task `ping_sig`\n --> names.yaml:6:3",
    ] {
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
    // The Rust build accepts the schema: these names are only taken in Python.
    assert!(celerity_codegen::check_str(source, "names.yaml").is_ok());
}

/// A directory holding every generated module, and the services written with the shop's.
fn modules() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (module, path) in schemas() {
        std::fs::write(dir.path().join(format!("{module}.py")), generate(&path))
            .expect("a writable temporary directory");
    }
    // The reference application's Python worker and client, which its contract tests
    // run against Celerity, are services written with the module too.
    for script in [
        "tests/python/uses_shop.py",
        "tests/python/misuses_shop.py",
        "tests/python/wire_forms.py",
        "../tests/python/shop_worker.py",
        "../tests/python/shop_client.py",
    ] {
        let from = manifest_dir().join(script);
        let name = from.file_name().expect("a file name");
        std::fs::copy(&from, dir.path().join(name)).expect("a copied script");
    }
    dir
}

/// Runs `python -m <args>` in `dir`, with no cache left behind in the repository.
fn python(interpreter: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(interpreter)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("MYPY_CACHE_DIR", dir.join(".mypy_cache"))
        .env("RUFF_CACHE_DIR", dir.join(".ruff_cache"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", interpreter.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn module_files(dir: &Path) -> Vec<String> {
    schemas()
        .into_iter()
        .map(|(module, _)| {
            dir.join(format!("{module}.py"))
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn every_generated_module_imports_and_passes_mypy_strict_and_ruff() {
    let Some(interpreter) = skip::python_with_type_checkers() else {
        return;
    };
    let dir = modules();
    let files = module_files(dir.path());
    let imports: Vec<String> = schemas().into_iter().map(|(module, _)| module).collect();
    let import = python(
        &interpreter,
        dir.path(),
        &["-c", &format!("import {}", imports.join(", "))],
    );
    assert!(import.status.success(), "{}", text(&import));

    let mut mypy = vec!["-m", "mypy", "--strict"];
    mypy.extend(files.iter().map(String::as_str));
    let checked = python(&interpreter, dir.path(), &mypy);
    assert!(
        checked.status.success(),
        "mypy --strict:\n{}",
        text(&checked)
    );

    // `--isolated`: ruff's own defaults, whatever configuration surrounds the directory.
    let mut ruff = vec!["-m", "ruff", "check", "--isolated"];
    ruff.extend(files.iter().map(String::as_str));
    let linted = python(&interpreter, dir.path(), &ruff);
    assert!(linted.status.success(), "ruff check:\n{}", text(&linted));
}

#[test]
fn mypy_accepts_a_service_using_the_module_and_refuses_wrong_types() {
    let Some(interpreter) = skip::python_with_type_checkers() else {
        return;
    };
    let dir = modules();
    let good = python(
        &interpreter,
        dir.path(),
        &[
            "-m",
            "mypy",
            "--strict",
            "uses_shop.py",
            "shop_worker.py",
            "shop_client.py",
            "shop_tasks.py",
        ],
    );
    assert!(good.status.success(), "mypy --strict:\n{}", text(&good));

    let bad = python(
        &interpreter,
        dir.path(),
        &["-m", "mypy", "--strict", "misuses_shop.py", "shop_tasks.py"],
    );
    let report = text(&bad);
    assert!(!bad.status.success(), "misuses_shop.py passed:\n{report}");
    for expected in [
        r#"misuses_shop.py:18: error: Argument 1 to "send_email" of "TasksRegistry" has incompatible type "str"; expected "EmailAddress"  [arg-type]"#,
        r#"misuses_shop.py:21: error: Incompatible types in assignment (expression has type "str", variable has type "int")  [assignment]"#,
        r#"misuses_shop.py:25: error: Unsupported operand types for | ("Sig[OrderSummary]" and "PartialSig[EmailAddress, EmailReceipt]")  [operator]"#,
        r#"misuses_shop.py:29: error: Argument 1 to "email_summary" of "TasksWorker" has incompatible type "Callable[[str, EmailAddress], EmailReceipt]"; expected "Callable[[OrderSummary, EmailAddress], EmailReceipt]"  [arg-type]"#,
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    assert!(report.contains("Found 4 errors in 1 file"), "{report}");
}

#[test]
fn the_module_reads_every_scalar_as_either_side_writes_it() {
    let Some(interpreter) = skip::python_with_type_checkers() else {
        return;
    };
    let dir = modules();
    let output = python(&interpreter, dir.path(), &["wire_forms.py"]);
    assert!(output.status.success(), "wire_forms.py:\n{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
}
