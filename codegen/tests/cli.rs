//! The `celerity-codegen` command line, run as a user runs it: each subcommand's output
//! and exit status, and `breaking --against` on a real git history.

#[path = "../../runtime/tests/support/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shop_schema() -> PathBuf {
    manifest_dir().join("../schemas/tasks.yaml")
}

/// Runs `celerity-codegen <args>` in `dir`.
fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celerity-codegen"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the command runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_prints_the_builds_diagnostics_and_fails() {
    let fixtures = manifest_dir().join("tests/fixtures");
    let ok = run(&fixtures, &["check", "ok/enums.yaml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(stdout(&ok), "ok/enums.yaml: ok\n");

    let bad = run(
        &fixtures,
        &["check", "errors/unknown_type.yaml", "ok/enums.yaml"],
    );
    assert_eq!(bad.status.code(), Some(1));
    let source =
        std::fs::read_to_string(fixtures.join("errors/unknown_type.yaml")).expect("a fixture");
    let build = celerity_codegen::generate_str(&source, "errors/unknown_type.yaml")
        .expect_err("the build refuses it");
    assert_eq!(stderr(&bad), format!("{build}\n"));
    assert_eq!(stdout(&bad), "ok/enums.yaml: ok\n");
}

#[test]
fn python_writes_the_generated_module() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let schema = shop_schema();
    let output = run(
        dir.path(),
        &["python", &schema.to_string_lossy(), "-o", "shop_tasks.py"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let written =
        std::fs::read_to_string(dir.path().join("shop_tasks.py")).expect("the module is written");
    let source = std::fs::read_to_string(&schema).expect("the shop schema");
    assert_eq!(
        written,
        celerity_codegen::generate_python_str(&source, "tasks.yaml").expect("it generates")
    );

    let printed = run(dir.path(), &["python", &schema.to_string_lossy()]);
    assert_eq!(stdout(&printed), written);
}

#[test]
fn json_schema_writes_the_languages_schema_and_with_tasks_each_tasks() {
    let output = run(manifest_dir(), &["json-schema"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), celerity_codegen::json_schema());

    let tasks = run(
        manifest_dir(),
        &["json-schema", "--tasks", "../schemas/tasks.yaml"],
    );
    assert_eq!(tasks.status.code(), Some(0), "{}", stderr(&tasks));
    let source = std::fs::read_to_string(shop_schema()).expect("the shop schema");
    assert_eq!(
        stdout(&tasks),
        celerity_codegen::tasks_json_schema_str(&source, "../schemas/tasks.yaml")
            .expect("it generates")
    );
}

#[test]
fn breaking_fails_on_a_breaking_change_and_passes_on_warnings() {
    let fixtures = manifest_dir().join("tests/fixtures/breaking");
    let breaking = run(
        &fixtures,
        &[
            "breaking",
            "argument_retyped/old.yaml",
            "argument_retyped/new.yaml",
        ],
    );
    assert_eq!(breaking.status.code(), Some(1));
    assert!(
        stdout(&breaking).starts_with("error[ARGUMENT_RETYPED]: argument `to` of task `tasks.send_email` changed type from `EmailAddress` to `string`\n  --> argument_retyped/new.yaml:10:11\n"),
        "{}",
        stdout(&breaking)
    );

    let warned = run(
        &fixtures,
        &[
            "breaking",
            "queue_changed/old.yaml",
            "queue_changed/new.yaml",
        ],
    );
    assert_eq!(warned.status.code(), Some(0), "{}", stdout(&warned));
    assert!(stdout(&warned).starts_with("warning[QUEUE_CHANGED]"));
}

#[test]
fn a_wrong_command_line_exits_with_2_and_says_why() {
    let output = run(manifest_dir(), &["breaking", "only-one.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "error: `breaking` needs the old and the new schema file, or `--against <ref>` and one schema file\n\nRun `celerity-codegen --help` for the commands.\n"
    );
    let missing = run(manifest_dir(), &["check", "no-such.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).starts_with("error: could not read `no-such.yaml`: "));
    let help = run(manifest_dir(), &["--help"]);
    assert!(stdout(&help).starts_with("Usage: celerity-codegen <command> [options]\n"));
}

/// Runs git in `dir` with an identity of its own, or skips when there is no git.
fn git(dir: &Path, args: &[&str]) -> Option<()> {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Celerity",
            "-c",
            "user.email=ci@celerity.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output();
    match output {
        Ok(output) if output.status.success() => Some(()),
        Ok(output) => panic!("git {args:?} failed:\n{}", stderr(&output)),
        Err(e) => skip::skip(format_args!("git cannot run ({e})")),
    }
}

/// The shop schema with the argument `to` of `tasks.send_email` re-typed, as in a pull
/// request.
fn retyped_shop() -> String {
    let shop = std::fs::read_to_string(shop_schema()).expect("the shop schema");
    let retyped = shop.replacen(
        "    args:\n      to: EmailAddress\n      subject: string\n",
        "    args:\n      to: string\n      subject: string\n",
        1,
    );
    assert_ne!(retyped, shop, "the shop schema's send_email changed shape");
    retyped
}

#[test]
fn breaking_against_a_git_revision_reads_the_old_schema_from_history() {
    let repo = tempfile::tempdir().expect("a temporary directory");
    let schemas = repo.path().join("schemas");
    std::fs::create_dir(&schemas).expect("a schemas directory");
    let schema = schemas.join("tasks.yaml");
    std::fs::copy(shop_schema(), &schema).expect("the shop schema");
    let Some(()) = git(repo.path(), &["init", "--quiet"]) else {
        return;
    };
    git(repo.path(), &["add", "."]);
    git(
        repo.path(),
        &["commit", "--quiet", "-m", "The shop's tasks"],
    );
    std::fs::write(&schema, retyped_shop()).expect("a writable schema");
    git(
        repo.path(),
        &["commit", "--quiet", "-am", "Send email to a bare address"],
    );

    let output = run(
        repo.path(),
        &["breaking", "--against", "HEAD~1", "schemas/tasks.yaml"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    insta::assert_snapshot!("breaking_against_head_1", stdout(&output));

    // From another directory, the path leads to the repository, and `HEAD` is current.
    let elsewhere = run(
        manifest_dir(),
        &["breaking", "--against", "HEAD", &schema.to_string_lossy()],
    );
    assert_eq!(elsewhere.status.code(), Some(0), "{}", stderr(&elsewhere));
    assert!(
        stdout(&elsewhere).starts_with("no breaking change from `HEAD:"),
        "{}",
        stdout(&elsewhere)
    );

    let unknown = run(
        repo.path(),
        &["breaking", "--against", "v9", "schemas/tasks.yaml"],
    );
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown)
            .starts_with("error: could not read `schemas/tasks.yaml` at `v9` from git: "),
        "{}",
        stderr(&unknown)
    );
}
