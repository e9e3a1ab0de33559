//! The build integration: a builder, a one-call function for `build.rs`, and file output
//! that is deterministic and only touches files whose content changed.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checked::Schema;
use crate::diagnostic::Diagnostics;
use crate::model::Model;
use crate::report::Reporter;
use crate::{lower, parse, render, validate};

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Schemas have mistakes: every mistake of every schema file, one entry per file with
    /// mistakes. The value prints them all, rustc-style.
    #[error("{}", render_all(.0))]
    Schema(Vec<Diagnostics>),
    /// A file could not be read or written.
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No output directory: neither set on the builder nor `OUT_DIR` (outside `build.rs`).
    #[error(
        "no output directory: `OUT_DIR` is not set (is this running outside build.rs?); \
         call `Generator::out_dir` to choose one"
    )]
    NoOutDir,
    /// The generator produced invalid Rust: a bug in celerity-codegen, not in the schema.
    #[error(
        "internal error in celerity-codegen while generating from `{schema}`: {message}{}\n\
         This is a bug in celerity-codegen; please report it with the schema.",
        raw.as_ref().map(|p| format!("\nthe unformatted output is in `{}`", p.display())).unwrap_or_default()
    )]
    Internal {
        /// The schema being generated.
        schema: String,
        /// What went wrong.
        message: String,
        /// Where the raw output was saved.
        raw: Option<PathBuf>,
    },
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The schema it came from.
    pub schema: PathBuf,
    /// Where it was written.
    pub path: PathBuf,
    /// Whether this run changed it (false when the content was already current).
    pub written: bool,
}

/// Configures and runs the generator.
///
/// ```no_run
/// let files = celerity_codegen::Generator::new()
///     .schema("schemas/tasks.yaml")
///     .out_dir("target/generated")
///     .generate()?;
/// # Ok::<(), celerity_codegen::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Generator {
    schemas: Vec<PathBuf>,
    out_dir: Option<PathBuf>,
    rerun_if_changed: bool,
}

impl Generator {
    /// A generator with no schemas, writing under `$OUT_DIR/celerity`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a schema file. Relative paths are resolved against `CARGO_MANIFEST_DIR` when it
    /// is set (as in `build.rs`), else against the current directory.
    pub fn schema(mut self, path: impl Into<PathBuf>) -> Self {
        self.schemas.push(path.into());
        self
    }

    /// Adds several schema files.
    pub fn schema_files<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.schemas.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Writes into `dir` instead of `$OUT_DIR/celerity`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Prints `cargo:rerun-if-changed` for each schema read (on by default in [`compile`]).
    pub fn rerun_if_changed(mut self, enabled: bool) -> Self {
        self.rerun_if_changed = enabled;
        self
    }

    /// Generates one `<stem>.rs` per schema. Every schema is checked before anything is
    /// written, so a mistake in one leaves every output as it was, and the error lists the
    /// mistakes of every schema, not only the first one's.
    ///
    /// Diagnostics name each file relative to the workspace root when `CARGO_MANIFEST_DIR`
    /// is set (as in `build.rs`): rustc names source files that way, and it is where
    /// `cargo build` usually runs, so a terminal or an editor can open the location.
    pub fn generate(&self) -> Result<Vec<GeneratedFile>, Error> {
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => {
                PathBuf::from(std::env::var_os("OUT_DIR").ok_or(Error::NoOutDir)?).join("celerity")
            }
        };
        let base = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let root = base.as_deref().map(workspace_root);
        let mut outputs = Vec::new();
        for schema in &self.schemas {
            let full = match &base {
                Some(base) if schema.is_relative() => base.join(schema),
                _ => schema.clone(),
            };
            if self.rerun_if_changed {
                println!("cargo:rerun-if-changed={}", full.display());
            }
            let source = match std::fs::read_to_string(&full) {
                Ok(source) => source,
                Err(source) => {
                    let error = Error::Io {
                        action: "read",
                        path: full.clone(),
                        source,
                    };
                    outputs.push((schema.clone(), PathBuf::new(), Err(error)));
                    continue;
                }
            };
            let display = match &root {
                Some(root) => shown_path(&full, root),
                None => schema.display().to_string(),
            };
            let file_name = full
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| display.clone());
            let stem = full
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "tasks".into());
            let code = generate_named(&source, &display, &file_name).map_err(|failure| {
                match failure {
                    Failure::Schema(error) => error,
                    Failure::Render(error) => {
                        // Keep the raw text beside the output so the bug can be looked at.
                        let raw = error.raw.and_then(|text| {
                            let path = out_dir.join(format!("{stem}.rs.raw"));
                            std::fs::create_dir_all(&out_dir).ok()?;
                            std::fs::write(&path, text).ok().map(|()| path)
                        });
                        Error::Internal {
                            schema: display.clone(),
                            message: error.message,
                            raw,
                        }
                    }
                }
            });
            outputs.push((schema.clone(), out_dir.join(format!("{stem}.rs")), code));
        }
        // Every schema was read (and announced to cargo) and checked before any error is
        // returned. The mistakes of every schema are reported together; any other failure
        // (a file that cannot be read, a generator bug) comes first, on its own.
        let mut files = Vec::new();
        let mut mistakes = Vec::new();
        for (schema, path, code) in outputs {
            match code {
                Ok(code) => files.push((schema, path, code)),
                Err(Error::Schema(diagnostics)) => mistakes.extend(diagnostics),
                Err(other) => return Err(other),
            }
        }
        if !mistakes.is_empty() {
            return Err(Error::Schema(mistakes));
        }
        std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
            action: "write",
            path: out_dir.clone(),
            source,
        })?;
        files
            .into_iter()
            .map(|(schema, path, code)| {
                let written = write_if_changed(&path, &code)?;
                Ok(GeneratedFile {
                    schema,
                    path,
                    written,
                })
            })
            .collect()
    }
}

/// The root of the workspace the package at `manifest_dir` belongs to: the nearest
/// directory, from the package's own up, whose `Cargo.toml` has a `[workspace]` table; the
/// package's directory when none has (it is then its own workspace).
///
/// Cargo tells build scripts no workspace root, and running `cargo locate-project` from one
/// costs a process and a lock. A line that opens a `[workspace]` or `[workspace.…]` table
/// is what cargo itself looks for; a misread only makes the shown paths longer.
fn workspace_root(manifest_dir: &Path) -> PathBuf {
    let declares_workspace = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|manifest| {
            manifest.lines().any(|line| {
                let line = line.trim_start();
                line.starts_with("[workspace]") || line.starts_with("[workspace.")
            })
        })
    };
    manifest_dir
        .ancestors()
        .find(|dir| declares_workspace(dir))
        .unwrap_or(manifest_dir)
        .to_owned()
}

/// `full` relative to `root` when it is inside, else as it is.
fn shown_path(full: &Path, root: &Path) -> String {
    full.strip_prefix(root)
        .unwrap_or(full)
        .display()
        .to_string()
}

fn render_all(files: &[Diagnostics]) -> String {
    files
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn write_if_changed(path: &Path, content: &str) -> Result<bool, Error> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    std::fs::write(path, content).map_err(|source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Generates Rust source from the text of a schema. `file` names the schema in
/// diagnostics and in the generated header.
pub fn generate_str(source: &str, file: &str) -> Result<String, Error> {
    generate_named(source, file, &file_name(file)).map_err(|failure| failure.into_error(file))
}

/// Checks the text of a schema as the build does: `Ok` when it generates, else every
/// mistake the build would report, rustc-style, with `file` naming the schema.
pub fn check_str(source: &str, file: &str) -> Result<(), Error> {
    analyse(source, file, &file_name(file), |_, _, _| ())
        .map_err(|failure| failure.into_error(file))
}

/// Generates the Python module of a schema from its text: dataclasses and enums for its
/// types, a typed client sending each task through a Celery app, typed results and
/// signatures, and a worker registering Python implementations of the tasks. A schema the
/// build rejects is rejected with the same diagnostics, and with those of the names only
/// Python sees.
pub fn generate_python_str(source: &str, file: &str) -> Result<String, Error> {
    let name = file_name(file);
    let module = analyse(source, file, &name, |reporter, schema, _| {
        crate::python::lower(reporter, &schema, &name)
    })
    .map_err(|failure| failure.into_error(file))?;
    crate::python::render(&module).map_err(|error| Failure::Render(error).into_error(file))
}

/// The JSON Schema of a schema's tasks, from its text: each named type, and each task's
/// arguments (by position and by name) and result as they travel. A schema the build
/// rejects is rejected with the same diagnostics.
pub fn tasks_json_schema_str(source: &str, file: &str) -> Result<String, Error> {
    let name = file_name(file);
    analyse(source, file, &name, |_, schema, _| {
        crate::wire_schema::tasks_json_schema(&schema, &name)
    })
    .map_err(|failure| failure.into_error(file))
}

/// The file name of `file`, for generated headers (no directories: output must not
/// depend on where the project is checked out).
fn file_name(file: &str) -> String {
    Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_owned())
}

pub(crate) enum Failure {
    Schema(Error),
    Render(render::RenderError),
}

impl Failure {
    fn into_error(self, file: &str) -> Error {
        match self {
            Failure::Schema(error) => error,
            Failure::Render(error) => Error::Internal {
                schema: file.to_owned(),
                message: error.message,
                raw: None,
            },
        }
    }
}

fn generate_named(source: &str, display: &str, file_name: &str) -> Result<String, Failure> {
    let model = analyse(source, display, file_name, |_, _, model| model)?;
    render::render(&model).map_err(Failure::Render)
}

/// Parses, validates and lowers a schema, then runs `then` on the result with the same
/// reporter, so that what it reports joins the schema's other mistakes. Every mistake
/// found by any stage is returned together, in file order.
pub(crate) fn analyse<T>(
    source: &str,
    display: &str,
    file_name: &str,
    then: impl FnOnce(&mut Reporter<'_>, Schema, Model) -> T,
) -> Result<T, Failure> {
    let diagnostics = |items| {
        Failure::Schema(Error::Schema(vec![Diagnostics {
            file: display.to_owned(),
            source: source.to_owned(),
            items,
        }]))
    };
    let root = parse::parse(source).map_err(diagnostics)?;
    let mut reporter = Reporter::new(source);
    let schema = validate::validate(&mut reporter, &root);
    let model = lower::lower(&mut reporter, &schema, file_name);
    let output = then(&mut reporter, schema, model);
    let items = reporter.finish();
    if !items.is_empty() {
        return Err(diagnostics(items));
    }
    Ok(output)
}

/// The one call a `build.rs` needs: generates code for `schema` into `$OUT_DIR/celerity`
/// and tells cargo to rerun when the schema changes.
///
/// On any error it reports every diagnostic to cargo as a build error (`cargo::error`),
/// which fails the build once the build script ends, and returns: a later call for another
/// schema still reports that schema's mistakes. Outside a build script it prints the
/// diagnostics and exits with status 1.
pub fn compile(schema: impl Into<PathBuf>) {
    compile_all([schema]);
}

/// [`compile`] for several schemas at once: every schema is checked, and every mistake of
/// every schema reported, before anything is written.
pub fn compile_all<I, P>(schemas: I)
where
    I: IntoIterator<Item = P>,
    P: Into<PathBuf>,
{
    let generator = Generator::new()
        .schema_files(schemas)
        .rerun_if_changed(true);
    if let Err(error) = generator.generate() {
        fail_build(&error);
    }
}

/// Fails the build with `error`, as cargo shows a build script's own errors.
///
/// Each line goes out as a `cargo::error=` directive (stable since cargo 1.84; this crate's
/// `rust-version` is later), which cargo prints as `error: <package>@<version>: <line>` and
/// then fails the build. Exiting with a non-zero status or panicking instead makes cargo
/// wrap the text in "failed to run custom build command", a backtrace hint and the
/// script's whole stdout, indented, with the diagnostics at the bottom.
fn fail_build(error: &impl fmt::Display) {
    let text = error.to_string();
    if std::env::var_os("OUT_DIR").is_some() && std::env::var_os("TARGET").is_some() {
        for line in cargo_error_lines(&text) {
            println!("cargo::error={line}");
        }
    } else {
        eprintln!("{text}");
        std::process::exit(1);
    }
}

/// The lines of an error as `cargo::error=` values: cargo starts each with `error: ` and
/// the package already, so a headline's own `error: ` goes, and so do the blank lines
/// between diagnostics (they would print as a bare prefix). Every line gets the same
/// prefix, so carets stay under their tokens.
fn cargo_error_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_errors_drop_the_headline_prefix_and_blank_lines() {
        let text = "error: unknown type `Strng`\n --> a.yaml:9:11\n  |\n9 |       to: Strng\n  |           ^^^^^\n\nerror: could not generate tasks from `a.yaml` due to 1 previous error";
        assert_eq!(
            cargo_error_lines(text).collect::<Vec<_>>(),
            [
                "unknown type `Strng`",
                " --> a.yaml:9:11",
                "  |",
                "9 |       to: Strng",
                "  |           ^^^^^",
                "could not generate tasks from `a.yaml` due to 1 previous error",
            ]
        );
    }

    #[test]
    fn the_workspace_root_is_the_nearest_manifest_with_a_workspace_table() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path();
        let service = root.join("crates/service");
        std::fs::create_dir_all(&service).expect("a package directory");
        std::fs::write(
            root.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/*\"]\n",
        )
        .expect("a workspace manifest");
        std::fs::write(
            service.join("Cargo.toml"),
            "[package]\nname = \"service\"\n",
        )
        .expect("a package manifest");
        assert_eq!(workspace_root(&service), root);
        assert_eq!(
            shown_path(
                &service.join("schemas/tasks.yaml"),
                &workspace_root(&service)
            ),
            Path::new("crates/service/schemas/tasks.yaml")
                .display()
                .to_string()
        );

        // A package that declares its own workspace is its root.
        std::fs::write(
            service.join("Cargo.toml"),
            "[package]\nname = \"service\"\n\n[workspace.dependencies]\n",
        )
        .expect("a package manifest");
        assert_eq!(workspace_root(&service), service);
    }

    #[test]
    fn a_path_outside_the_workspace_is_shown_whole() {
        assert_eq!(
            shown_path(Path::new("/elsewhere/tasks.yaml"), Path::new("/work/app")),
            "/elsewhere/tasks.yaml"
        );
    }
}
