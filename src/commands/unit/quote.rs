//! Writing words into unit files and shell lines so that systemd and a shell
//! read back exactly what was meant.

/// `%` starts a specifier in most unit settings; `%%` is a plain `%`.
pub(super) fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// One word of `ExecStart=`: bare when it can be, otherwise double-quoted.
/// `%` and `$` are escaped so systemd passes them through unchanged.
pub(super) fn exec_word(word: &str) -> Result<String, String> {
    if word.chars().any(char::is_control) {
        return Err(format!(
            "{word:?}: a command word in a unit may not contain control characters"
        ));
    }
    let escaped = escape_specifiers(word).replace('$', "$$");
    let bare = !escaped.is_empty()
        && escaped != ";"
        && escaped.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '_' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-' | '$'
                )
        });
    Ok(if bare { escaped } else { quote(&escaped) })
}

/// Double-quoted, with `\` and `"` escaped, as systemd unquotes it.
pub(super) fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '\\' | '"' => {
                quoted.push('\\');
                quoted.push(c);
            }
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A word as a POSIX shell reads it back: bare when safe, else single-quoted.
pub(in crate::commands) fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-')
        });
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}
