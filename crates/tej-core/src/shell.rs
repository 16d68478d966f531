//! Shell words: the one shell quoting of the workspace, [`shlex`]'s.
//!
//! tej never runs a shell itself, but writes command lines other programs hand to one
//! (`archive_command`, `restore_command`, `pg_ctl -o`) and shows command lines in logs.

use crate::Error;
use std::borrow::Cow;

/// Characters a shell gives a meaning only in a command's first word (`a=b` is an
/// assignment, `%1` a job) or inside braces (`,`): left unquoted in argument words, so that
/// `--dbname=...`, `100%%` and `-c k=v` read as written.
const PLAIN_IN_ARGUMENTS: [char; 3] = ['=', '%', ','];

/// `word` as one shell argument word: unchanged when the shell would not split or expand
/// it, else quoted by [`shlex::try_quote`]. A word holding a NUL byte cannot be passed to a
/// shell: [`Error::Unquotable`] naming `what`.
pub fn quote<'a>(word: &'a str, what: &str) -> Result<Cow<'a, str>, Error> {
    let unquotable = || Error::Unquotable {
        what: what.to_string(),
    };
    if !word.is_empty() && word.contains(PLAIN_IN_ARGUMENTS) {
        let probe = word.replace(PLAIN_IN_ARGUMENTS, "_");
        if shlex::try_quote(&probe).map_err(|_| unquotable())? == probe.as_str() {
            return Ok(Cow::Borrowed(word));
        }
    }
    shlex::try_quote(word).map_err(|_| unquotable())
}

/// `word` as a command's first word (the program): [`shlex::try_quote`] with nothing left
/// unquoted that a shell would read as an assignment or a job.
pub fn quote_program<'a>(word: &'a str, what: &str) -> Result<Cow<'a, str>, Error> {
    shlex::try_quote(word).map_err(|_| Error::Unquotable {
        what: what.to_string(),
    })
}

/// One argument word for logs and printed command lines: quoted as [`quote`] does, a NUL
/// byte (which no program can receive) shown as `\0`.
pub fn display_word(word: &str) -> String {
    shown(word, quote)
}

/// A command line for logs and error messages: the program and its arguments quoted as
/// [`quote_program`] and [`quote`] do, a NUL byte shown as `\0`.
pub fn display_command<'a>(program: &str, args: impl IntoIterator<Item = &'a str>) -> String {
    let mut line = shown(program, quote_program);
    for a in args {
        line.push(' ');
        line.push_str(&display_word(a));
    }
    line
}

fn shown(word: &str, quote: for<'w> fn(&'w str, &str) -> Result<Cow<'w, str>, Error>) -> String {
    let word = word.replace('\0', "\\0");
    quote(&word, "word").map(Cow::into_owned).unwrap_or(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_the_shell_would_change_them() {
        assert_eq!(quote("plain/path-1.2_x", "a").unwrap(), "plain/path-1.2_x");
        assert_eq!(
            quote("--dbname=postgres://u@h/db", "a").unwrap(),
            "--dbname=postgres://u@h/db"
        );
        assert_eq!(quote("/backups/100%%", "a").unwrap(), "/backups/100%%");
        assert_eq!(quote("/a b", "a").unwrap(), "'/a b'");
        assert_eq!(quote("it's", "a").unwrap(), "\"it's\"");
        assert_eq!(quote("k=$HOME", "a").unwrap(), "'k=$HOME'");
        assert_eq!(quote("", "a").unwrap(), "''");
        assert_eq!(quote_program("a=b", "p").unwrap(), "'a=b'");
    }

    #[test]
    fn a_nul_byte_is_an_error_naming_the_value() {
        let e = quote("a\0b", "repository").unwrap_err();
        assert_eq!(
            e,
            Error::Unquotable {
                what: "repository".into()
            }
        );
        assert!(e.to_string().contains("repository cannot be quoted"), "{e}");
        assert!(quote_program("\0", "program").is_err());
        assert_eq!(display_command("echo", ["a\0b"]), "echo \"a\\\\0b\"");
        assert_eq!(display_word("a b"), "'a b'");
    }

    proptest::proptest! {
        /// Whatever the word, the shell reads it back as exactly that word.
        #[test]
        fn quoted_words_split_back_to_themselves(word in "[^\\x00]{0,40}") {
            let q = quote(&word, "w").unwrap();
            proptest::prop_assert_eq!(shlex::split(&q), Some(vec![word.clone()]));
        }
    }
}
