//! Type expressions: `string`, `i64?`, `list<Address>`, `map<string, f64>`, `optional<T>`.

use std::fmt;

/// The scalar types built into the schema language, with the Rust type each becomes.
pub(crate) const BUILTINS: &[(&str, Scalar)] = &[
    ("bool", Scalar::Bool),
    ("i32", Scalar::I32),
    ("i64", Scalar::I64),
    ("u32", Scalar::U32),
    ("u64", Scalar::U64),
    ("f64", Scalar::F64),
    ("decimal", Scalar::Decimal),
    ("string", Scalar::String),
    ("bytes", Scalar::Bytes),
    ("uuid", Scalar::Uuid),
    ("datetime", Scalar::DateTime),
    ("date", Scalar::Date),
    ("json", Scalar::Json),
];

/// The generic type constructors.
pub(crate) const CONSTRUCTORS: &[&str] = &["list", "map", "optional"];

/// A built-in scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    /// `bool`
    Bool,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `f64`
    F64,
    /// `decimal`: exact decimal numbers (money), Python's `Decimal`; kombu's
    /// `{"__type__": "decimal", "__value__": "19.99"}` on the wire.
    Decimal,
    /// `string`
    String,
    /// `bytes`: base64 on the wire, as Celery's JSON encoder writes bytes.
    Bytes,
    /// `uuid`: the hyphenated string form.
    Uuid,
    /// `datetime`: ISO 8601 with an offset, in UTC.
    DateTime,
    /// `date`: ISO 8601 `YYYY-MM-DD`.
    Date,
    /// `json`: any JSON value.
    Json,
}

/// A parsed type expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TypeExpr {
    /// A built-in scalar.
    Scalar(Scalar),
    /// `T?` or `optional<T>`.
    Optional(Box<TypeExpr>),
    /// `list<T>`.
    List(Box<TypeExpr>),
    /// `map<string, T>` (or `map<T>`): keys are always strings, as in JSON.
    Map(Box<TypeExpr>),
    /// A named type declared under `types:`.
    Named(String),
}

impl TypeExpr {
    /// Every named type this expression refers to.
    pub(crate) fn named(&self, out: &mut Vec<String>) {
        match self {
            TypeExpr::Scalar(_) => {}
            TypeExpr::Optional(inner) | TypeExpr::List(inner) | TypeExpr::Map(inner) => {
                inner.named(out)
            }
            TypeExpr::Named(name) => out.push(name.clone()),
        }
    }

    /// True for `T?`.
    pub(crate) fn is_optional(&self) -> bool {
        matches!(self, TypeExpr::Optional(_))
    }
}

impl fmt::Display for TypeExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeExpr::Scalar(scalar) => {
                let name = BUILTINS
                    .iter()
                    .find(|(_, s)| s == scalar)
                    .map(|(n, _)| *n)
                    .unwrap_or("?");
                f.write_str(name)
            }
            TypeExpr::Optional(inner) => write!(f, "{inner}?"),
            TypeExpr::List(inner) => write!(f, "list<{inner}>"),
            TypeExpr::Map(inner) => write!(f, "map<string, {inner}>"),
            TypeExpr::Named(name) => f.write_str(name),
        }
    }
}

/// A syntax error inside a type expression, at a character offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeSyntaxError {
    /// 0-based character offset into the expression.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

/// Parses a type expression. Names that are neither built-in nor constructors come back as
/// [`TypeExpr::Named`]; whether they exist is the validator's question.
pub(crate) fn parse(text: &str) -> Result<TypeExpr, TypeSyntaxError> {
    let mut parser = TypeParser {
        chars: text.chars().collect(),
        at: 0,
    };
    parser.skip_space();
    let expr = parser.expr()?;
    parser.skip_space();
    if parser.at < parser.chars.len() {
        return Err(parser.error(format!(
            "unexpected `{}` after the type `{expr}`",
            parser.chars[parser.at]
        )));
    }
    Ok(expr)
}

struct TypeParser {
    chars: Vec<char>,
    at: usize,
}

impl TypeParser {
    fn error(&self, message: String) -> TypeSyntaxError {
        TypeSyntaxError {
            offset: self.at,
            message,
            help: None,
        }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, expected: char) -> bool {
        self.skip_space();
        if self.chars.get(self.at) == Some(&expected) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, expected: char) -> Result<(), TypeSyntaxError> {
        if self.eat(expected) {
            Ok(())
        } else {
            let found = self
                .chars
                .get(self.at)
                .map_or("the end of the type".to_owned(), |c| format!("`{c}`"));
            Err(self.error(format!("expected `{expected}`, found {found}")))
        }
    }

    fn ident(&mut self) -> Result<String, TypeSyntaxError> {
        self.skip_space();
        let start = self.at;
        while self
            .chars
            .get(self.at)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        {
            self.at += 1;
        }
        if start == self.at {
            let mut error = self.error("expected a type name".to_owned());
            error.help = Some(
                "types are built-ins (string, i64, bool, …), list<T>, map<string, T>, T? or a name under `types:`"
                    .to_owned(),
            );
            return Err(error);
        }
        Ok(self.chars[start..self.at].iter().collect())
    }

    fn expr(&mut self) -> Result<TypeExpr, TypeSyntaxError> {
        let mut expr = self.base()?;
        while self.eat('?') {
            if expr.is_optional() {
                let mut error = self.error("a type can only be optional once".to_owned());
                error.offset -= 1;
                error.help = Some("remove the extra `?`".to_owned());
                return Err(error);
            }
            expr = TypeExpr::Optional(Box::new(expr));
        }
        Ok(expr)
    }

    fn base(&mut self) -> Result<TypeExpr, TypeSyntaxError> {
        let start = self.at;
        let name = self.ident()?;
        if CONSTRUCTORS.contains(&name.as_str()) {
            self.expect('<')?;
            let first = self.expr()?;
            let expr = match name.as_str() {
                "list" => TypeExpr::List(Box::new(first)),
                "optional" if first.is_optional() => {
                    return Err(TypeSyntaxError {
                        offset: start,
                        message: "a type can only be optional once".to_owned(),
                        help: Some("remove the extra `optional<…>`".to_owned()),
                    });
                }
                "optional" => TypeExpr::Optional(Box::new(first)),
                _ if self.eat(',') => {
                    if first != TypeExpr::Scalar(Scalar::String) {
                        return Err(TypeSyntaxError {
                            offset: start,
                            message: format!("map keys must be `string`, not `{first}`"),
                            help: Some(
                                "JSON objects have string keys; use map<string, T>".to_owned(),
                            ),
                        });
                    }
                    TypeExpr::Map(Box::new(self.expr()?))
                }
                _ => TypeExpr::Map(Box::new(first)),
            };
            self.expect('>')?;
            return Ok(expr);
        }
        if let Some((_, scalar)) = BUILTINS.iter().find(|(n, _)| *n == name) {
            return Ok(TypeExpr::Scalar(*scalar));
        }
        Ok(TypeExpr::Named(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_expressions() {
        assert_eq!(
            parse("map<string, list<Address?>>?").unwrap(),
            TypeExpr::Optional(Box::new(TypeExpr::Map(Box::new(TypeExpr::List(Box::new(
                TypeExpr::Optional(Box::new(TypeExpr::Named("Address".into())))
            ))))))
        );
        assert_eq!(
            parse("optional<i64>").unwrap(),
            TypeExpr::Optional(Box::new(TypeExpr::Scalar(Scalar::I64)))
        );
        assert_eq!(
            parse(" map<bool> ").unwrap().to_string(),
            "map<string, bool>"
        );
    }

    #[test]
    fn reports_the_offset_of_syntax_errors() {
        let error = parse("list<string").unwrap_err();
        assert_eq!(error.offset, 11);
        assert_eq!(error.message, "expected `>`, found the end of the type");
        assert_eq!(
            parse("map<i64, string>").unwrap_err().message,
            "map keys must be `string`, not `i64`"
        );
        assert_eq!(parse("string??").unwrap_err().offset, 7);
        assert_eq!(parse("list<>").unwrap_err().offset, 5);
    }
}
