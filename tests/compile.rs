//! Compile checks, in one test binary so trybuild builds every case in one project:
//!
//! - the code generated for every codegen fixture compiles with warnings denied;
//! - a caller written against a schema still compiles once its tasks gain arguments with
//!   defaults (`tests/evolution`);
//! - well-typed workflows (chain, group, chord, immutable steps, link and link_error) built
//!   from a generated client compile (`tests/canvas`);
//! - the mistakes users make with generated code fail to compile, with the messages in
//!   `tests/ui/*.stderr`.

use std::path::{Path, PathBuf};

/// Generates each schema of `dir` and wraps it in a crate that denies warnings, with
/// `caller` (a file of code using the generated module) included beside it.
fn generated_crates(dir: &str, out: &str, caller: Option<&str>) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join(dir);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    std::fs::create_dir_all(&out).expect("a writable target directory");
    let mut schemas: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("the codegen fixtures")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    schemas.sort();
    let files = celerity_codegen::Generator::new()
        .out_dir(&out)
        .schema_files(&schemas)
        .generate()
        .unwrap_or_else(|error| panic!("fixtures must generate:\n{error}"));
    files
        .iter()
        .map(|file| {
            let name = file
                .path
                .file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let wrapper = out.join(format!("compile_{name}.rs"));
            let caller = caller.map_or_else(String::new, |file| {
                format!("include!({:?});\n", root.join(file).display().to_string())
            });
            let text = format!(
                "// Compiles the code generated from {dir}/{name}.yaml.\n\
                 #![deny(warnings, missing_docs)]\n\
                 // A binary does not export its items, so unused generated items would be\n\
                 // dead code here; in a user's library they are the public API.\n\
                 #![allow(dead_code)]\n\
                 //! Generated-code compile check.\n\
                 /// The generated module.\n\
                 pub mod generated {{\n    include!({path:?});\n}}\n\
                 {caller}\
                 fn main() {{}}\n",
                path = file.path.display().to_string(),
            );
            std::fs::write(&wrapper, text).expect("a writable wrapper");
            wrapper
        })
        .collect()
}

#[test]
fn generated_code_compiles_and_misuse_does_not() {
    let cases = trybuild::TestCases::new();
    for wrapper in generated_crates("codegen/tests/fixtures/ok", "generated-fixtures", None) {
        cases.pass(wrapper);
    }
    let caller = Some("tests/evolution/caller.rs");
    for wrapper in generated_crates("tests/evolution", "generated-evolution", caller) {
        cases.pass(wrapper);
    }
    let caller = Some("tests/canvas/caller.rs");
    for wrapper in generated_crates("tests/canvas", "generated-canvas", caller) {
        cases.pass(wrapper);
    }
    cases.compile_fail("tests/ui/*.rs");
}
