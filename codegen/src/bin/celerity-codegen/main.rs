//! `celerity-codegen`: the schema as a contract beyond the Rust build. It checks a schema
//! as the build does, writes the typed Python module of a schema, compares two versions of
//! a schema for changes that break the wire, and writes JSON Schemas for editors and other
//! languages. Run `celerity-codegen --help`.

mod args;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use args::{Command, Old, USAGE};

/// Why a command stopped.
enum Failure {
    /// The schemas have mistakes, or the change is breaking: already printed (exit 1).
    Rejected,
    /// The command could not do its work (exit 2).
    Trouble(String),
}

/// Schema mistakes are printed as the build prints them; any other error is trouble.
impl From<celerity_codegen::Error> for Failure {
    fn from(error: celerity_codegen::Error) -> Self {
        match error {
            celerity_codegen::Error::Schema(_) => {
                eprintln!("{error}");
                Failure::Rejected
            }
            other => Failure::Trouble(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let command = match args::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("error: {message}\n\nRun `celerity-codegen --help` for the commands.");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rejected) => ExitCode::from(1),
        Err(Failure::Trouble(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("celerity-codegen {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Check { schemas } => check(&schemas),
        Command::Python { schema, output } => {
            let module = celerity_codegen::generate_python_str(&read(&schema)?, &shown(&schema))?;
            emit(output.as_deref(), &module)
        }
        Command::JsonSchema { tasks, output } => {
            let schema = match tasks {
                Some(path) => {
                    celerity_codegen::tasks_json_schema_str(&read(&path)?, &shown(&path))?
                }
                None => celerity_codegen::json_schema(),
            };
            emit(output.as_deref(), &schema)
        }
        Command::Breaking { old, new } => breaking(old, &new),
    }
}

/// Checks every schema, printing the mistakes of all of them before failing.
fn check(schemas: &[PathBuf]) -> Result<(), Failure> {
    let mut rejected = false;
    for schema in schemas {
        match celerity_codegen::check_str(&read(schema)?, &shown(schema)) {
            Ok(()) => println!("{}: ok", shown(schema)),
            Err(error @ celerity_codegen::Error::Schema(_)) => {
                if rejected {
                    eprintln!();
                }
                rejected = true;
                eprintln!("{error}");
            }
            Err(other) => return Err(other.into()),
        }
    }
    if rejected {
        Err(Failure::Rejected)
    } else {
        Ok(())
    }
}

fn breaking(old: Old, new: &Path) -> Result<(), Failure> {
    let (old_source, old_name) = match old {
        Old::File(path) => (read(&path)?, shown(&path)),
        Old::Git(reference) => (
            git_show(&reference, new)?,
            format!("{reference}:{}", shown(new)),
        ),
    };
    let changes =
        celerity_codegen::breaking_changes(&old_source, &old_name, &read(new)?, &shown(new))?;
    print!("{changes}");
    if changes.is_breaking() {
        Err(Failure::Rejected)
    } else {
        Ok(())
    }
}

/// The text of `path` at the git revision `reference`, as `git show <ref>:./<name>` run in
/// the file's directory reads it (a path starting with `./` is relative to that directory,
/// wherever the repository's root is).
fn git_show(reference: &str, path: &Path) -> Result<String, Failure> {
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Failure::Trouble(format!("`{}` names no file", path.display())))?;
    let output = Process::new("git")
        .arg("-C")
        .arg(directory)
        .arg("show")
        .arg(format!("{reference}:./{}", name.to_string_lossy()))
        .output()
        .map_err(|e| Failure::Trouble(format!("could not run git: {e}")))?;
    if !output.status.success() {
        return Err(Failure::Trouble(format!(
            "could not read `{}` at `{reference}` from git: {}",
            shown(path),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    String::from_utf8(output.stdout).map_err(|_| {
        Failure::Trouble(format!(
            "`{}` at `{reference}` is not UTF-8 text",
            shown(path)
        ))
    })
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Trouble(format!("could not read `{}`: {e}", path.display())))
}

/// A path as diagnostics show it: as it was given.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Writes `text` to `output`, or to standard output.
fn emit(output: Option<&Path>, text: &str) -> Result<(), Failure> {
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::Trouble(format!("could not write `{}`: {e}", path.display()))),
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| Failure::Trouble(format!("could not write to standard output: {e}"))),
    }
}
