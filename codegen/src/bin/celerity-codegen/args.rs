//! The command line, read with the standard library alone: the generator is a build
//! dependency of every crate that uses it, and an argument parser would be compiled into
//! each of those builds for a binary they never run.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
Usage: celerity-codegen <command> [options]

Commands:
  check <schema>...                  Checks schemas as the build does and prints its
                                     diagnostics (file:line:column, with hints)
  python <schema> [-o <file>]        Writes the typed Python module of a schema
  breaking <old> <new>               Lists the changes from <old> to <new> that break
                                     senders or workers still on <old>
  breaking --against <ref> <schema>  The same, with <old> read from git at <ref>
  json-schema [-o <file>]            Writes the JSON Schema of the schema language, for
                                     editors
  json-schema --tasks <schema> [-o <file>]
                                     Writes the JSON Schema of each task's arguments and
                                     result

Options:
  -o, --output <file>  Write to <file> instead of standard output
  -h, --help           Print this help
  -V, --version        Print the version

Exit status: 0 when all is well; 1 when a schema has mistakes or `breaking` finds a
breaking change; 2 when the command line is wrong or a file cannot be read or written.";

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Check {
        schemas: Vec<PathBuf>,
    },
    Python {
        schema: PathBuf,
        output: Option<PathBuf>,
    },
    Breaking {
        old: Old,
        new: PathBuf,
    },
    JsonSchema {
        tasks: Option<PathBuf>,
        output: Option<PathBuf>,
    },
    Help,
    Version,
}

/// Where `breaking` reads the old schema.
#[derive(Debug, PartialEq, Eq)]
pub enum Old {
    /// A file.
    File(PathBuf),
    /// The new schema's path at a git revision.
    Git(String),
}

/// Reads the command line (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut words = Words::new(args)?;
    if words
        .words
        .iter()
        .any(|word| word == "-h" || word == "--help")
    {
        return Ok(Command::Help);
    }
    let Some(command) = words.next_plain() else {
        return Ok(Command::Help);
    };
    let command = match command.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-V" | "--version" => return Ok(Command::Version),
        "check" => {
            let schemas: Vec<PathBuf> =
                words.rest_plain()?.into_iter().map(PathBuf::from).collect();
            if schemas.is_empty() {
                return Err("`check` needs at least one schema file".into());
            }
            Command::Check { schemas }
        }
        "python" => {
            let output = words.option(&["-o", "--output"])?;
            let schema = words.one("`python` needs one schema file")?;
            Command::Python {
                schema: schema.into(),
                output: output.map(PathBuf::from),
            }
        }
        "breaking" => {
            let against = words.option(&["--against"])?;
            let files = words.rest_plain()?;
            match (against, files.as_slice()) {
                (Some(reference), [schema]) => Command::Breaking {
                    old: Old::Git(reference),
                    new: schema.into(),
                },
                (None, [old, new]) => Command::Breaking {
                    old: Old::File(old.into()),
                    new: new.into(),
                },
                (Some(_), _) => {
                    return Err("`breaking --against <ref>` needs one schema file".into());
                }
                (None, _) => {
                    return Err(
                        "`breaking` needs the old and the new schema file, or `--against <ref>` and one schema file"
                            .into(),
                    );
                }
            }
        }
        "json-schema" => {
            let output = words.option(&["-o", "--output"])?;
            let tasks = words.option(&["--tasks"])?;
            if let Some(extra) = words.rest_plain()?.first() {
                return Err(format!(
                    "unexpected `{extra}`: `json-schema` takes a schema file only after `--tasks`"
                ));
            }
            Command::JsonSchema {
                tasks: tasks.map(PathBuf::from),
                output: output.map(PathBuf::from),
            }
        }
        other => return Err(format!("unknown command `{other}`")),
    };
    Ok(command)
}

/// The words of a command line, taken as they are recognised.
struct Words {
    words: Vec<String>,
}

impl Words {
    fn new(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let words = args
            .into_iter()
            .map(|arg| {
                arg.into_string()
                    .map_err(|arg| format!("`{}` is not valid UTF-8", arg.to_string_lossy()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Words { words })
    }

    /// Takes the first word, which must not be an option after the first position.
    fn next_plain(&mut self) -> Option<String> {
        (!self.words.is_empty()).then(|| self.words.remove(0))
    }

    /// Takes `<flag> <value>` or `<flag>=<value>` for any of `flags`, once.
    fn option(&mut self, flags: &[&str]) -> Result<Option<String>, String> {
        let mut found = None;
        let mut index = 0;
        while index < self.words.len() {
            let word = &self.words[index];
            let inline = flags.iter().find_map(|flag| {
                word.strip_prefix(flag)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::to_owned)
            });
            let value = if let Some(value) = inline {
                self.words.remove(index);
                value
            } else if flags.contains(&word.as_str()) {
                let flag = self.words.remove(index);
                if index >= self.words.len() {
                    return Err(format!("`{flag}` needs a value"));
                }
                self.words.remove(index)
            } else {
                index += 1;
                continue;
            };
            if found.replace(value).is_some() {
                return Err(format!("`{}` is given twice", flags[flags.len() - 1]));
            }
        }
        Ok(found)
    }

    /// Every word left, refusing options nobody took.
    fn rest_plain(&mut self) -> Result<Vec<String>, String> {
        let words = std::mem::take(&mut self.words);
        if let Some(option) = words.iter().find(|w| w.starts_with('-') && w.len() > 1) {
            return Err(format!("unknown option `{option}`"));
        }
        Ok(words)
    }

    /// The one word left.
    fn one(&mut self, missing: &str) -> Result<String, String> {
        let mut rest = self.rest_plain()?;
        match rest.len() {
            1 => Ok(rest.remove(0)),
            0 => Err(missing.into()),
            _ => Err(format!("unexpected `{}`", rest[1])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Result<Command, String> {
        parse(line.split_whitespace().map(OsString::from))
    }

    #[test]
    fn reads_each_command_with_its_options_anywhere() {
        assert_eq!(
            parsed("python -o out.py schemas/tasks.yaml").unwrap(),
            Command::Python {
                schema: "schemas/tasks.yaml".into(),
                output: Some("out.py".into())
            }
        );
        assert_eq!(
            parsed("python schemas/tasks.yaml --output=out.py").unwrap(),
            Command::Python {
                schema: "schemas/tasks.yaml".into(),
                output: Some("out.py".into())
            }
        );
        assert_eq!(
            parsed("breaking a.yaml b.yaml").unwrap(),
            Command::Breaking {
                old: Old::File("a.yaml".into()),
                new: "b.yaml".into()
            }
        );
        assert_eq!(
            parsed("breaking --against HEAD~1 b.yaml").unwrap(),
            Command::Breaking {
                old: Old::Git("HEAD~1".into()),
                new: "b.yaml".into()
            }
        );
        assert_eq!(
            parsed("json-schema --tasks t.yaml").unwrap(),
            Command::JsonSchema {
                tasks: Some("t.yaml".into()),
                output: None
            }
        );
        assert_eq!(parsed("").unwrap(), Command::Help);
        assert_eq!(parsed("check --help").unwrap(), Command::Help);
        assert_eq!(parsed("--version").unwrap(), Command::Version);
    }

    #[test]
    fn says_what_is_wrong_with_a_command_line() {
        assert_eq!(
            parsed("frobnicate").unwrap_err(),
            "unknown command `frobnicate`"
        );
        assert_eq!(
            parsed("check").unwrap_err(),
            "`check` needs at least one schema file"
        );
        assert_eq!(parsed("python -o").unwrap_err(), "`-o` needs a value");
        assert_eq!(
            parsed("python a.yaml --fast").unwrap_err(),
            "unknown option `--fast`"
        );
        assert_eq!(
            parsed("python a.yaml b.yaml").unwrap_err(),
            "unexpected `b.yaml`"
        );
        assert_eq!(
            parsed("breaking --against HEAD a.yaml b.yaml").unwrap_err(),
            "`breaking --against <ref>` needs one schema file"
        );
        assert_eq!(
            parsed("json-schema t.yaml").unwrap_err(),
            "unexpected `t.yaml`: `json-schema` takes a schema file only after `--tasks`"
        );
    }
}
