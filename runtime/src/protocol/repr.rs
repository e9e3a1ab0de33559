//! Bounded text for logs and stored errors.
//!
//! Celery never lets a value of unbounded size into a log line or an error it builds: it
//! goes through `saferepr` (`celery/utils/saferepr.py`) with a limit of 1024 characters
//! for `argsrepr`/`kwargsrepr` (`celery/app/amqp.py`: `argsrepr_maxsize`,
//! `kwargsrepr_maxsize`), for the result in the "succeeded" line
//! (`celery/app/task.py`: `resultrepr_maxsize`) and for the body in the "invalid task"
//! and "unknown message" lines (`celery/worker/consumer/consumer.py::dump_body`). The same
//! limit applies here to everything that comes from a message: a task name, an id, a
//! decoding error that quotes the value it refused.

use std::borrow::Cow;

/// Longest text, in characters, a log line or an error built from a message carries for
/// one value: Celery's `saferepr` limit (`argsrepr_maxsize`, `resultrepr_maxsize`,
/// `dump_body`'s 1024).
pub(crate) const REPR_MAXSIZE: usize = 1024;

/// What stands for the part cut out, as `celery/utils/text.py::truncate` writes it.
const ELLIPSIS: &str = "...";

/// `text` when it has at most `max` characters; otherwise its beginning and its end around
/// `...`, `max` characters in all. Celery's `truncate` keeps only the beginning; the end is
/// kept too because an error quoting a value ends with what was expected (`invalid type:
/// string "…", expected i64`), the part worth reading.
pub(crate) fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    // A character is at least one byte: short texts need no counting.
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let keep = max.saturating_sub(ELLIPSIS.len());
    let tail = keep / 4;
    let head = keep - tail;
    let Some((head_end, _)) = text.char_indices().nth(head) else {
        return Cow::Borrowed(text);
    };
    let tail_start = if tail == 0 {
        text.len()
    } else {
        match text[head_end..].char_indices().rev().nth(tail - 1) {
            Some((at, _)) => head_end + at,
            None => return Cow::Borrowed(text),
        }
    };
    // Only cut when something is left out.
    if text[head_end..tail_start]
        .chars()
        .nth(ELLIPSIS.len())
        .is_none()
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(head_end + ELLIPSIS.len() + text.len() - tail_start);
    out.push_str(&text[..head_end]);
    out.push_str(ELLIPSIS);
    out.push_str(&text[tail_start..]);
    Cow::Owned(out)
}

/// [`bounded`] at [`REPR_MAXSIZE`].
pub(crate) fn short(text: &str) -> Cow<'_, str> {
    bounded(text, REPR_MAXSIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_keeps_both_ends() {
        assert_eq!(bounded("pong", 10), "pong");
        assert_eq!(bounded("0123456789", 10), "0123456789");
        let cut = bounded("abcdefghijklmnopqrstuvwxyz", 11);
        assert_eq!(cut, "abcdef...yz");
        assert_eq!(cut.chars().count(), 11);
        let error = format!(
            "invalid type: string \"{}\", expected i64",
            "x".repeat(10_000)
        );
        let cut = short(&error);
        assert_eq!(cut.chars().count(), REPR_MAXSIZE);
        assert!(cut.starts_with("invalid type: string \"xx") && cut.ends_with("\", expected i64"));
    }

    #[test]
    fn characters_are_counted_not_bytes() {
        let text = "é".repeat(2000);
        let cut = bounded(&text, 100);
        assert_eq!(cut.chars().count(), 100);
        assert_eq!(bounded(&"é".repeat(60), 100), "é".repeat(60));
    }
}
