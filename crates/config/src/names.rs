//! The one rule for names that become a single folder or file name: `config.name` (the output
//! folder `<training_folder>/<name>`), and in the UI dataset, job and file names. Shared so that a
//! job `wanlora validate` accepts is one the UI accepts, and neither lets a name leave its folder.

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// The characters a name may use besides letters and digits, as the hint words them.
pub const NAME_CHARACTERS_HINT: &str = "use letters, digits, spaces and . _ - ( ) + , @ only";

/// Why `name` is not one plain path component, or `None` when it is: no separators, no `..`, no
/// leading dot (hidden files, `.` and `..`), no NUL or other control characters, no leading or
/// trailing space, and only letters, digits and ` ._-()+,@`.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("it is longer than 128 bytes");
    }
    if name.contains(['/', '\\']) {
        return Some("it contains a path separator");
    }
    if name.starts_with('.') {
        return Some("it starts with a dot");
    }
    if name.ends_with(' ') || name.starts_with(' ') {
        return Some("it starts or ends with a space");
    }
    if name.chars().any(char::is_control) {
        return Some("it contains a control character (such as NUL or a newline)");
    }
    let allowed = |c: char| c.is_alphanumeric() || " ._-()+,@".contains(c);
    if !name.chars().all(allowed) {
        return Some(NAME_CHARACTERS_HINT);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_escapes_are_refused() {
        for ok in ["my_lora_v1", "clips (v2)", "Ünïcode", "x+y,z@1", "a..b"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("../x", "path separator"),
            ("a/b", "path separator"),
            ("..", "starts with a dot"),
            (".hidden", "starts with a dot"),
            ("a\0b", "control character"),
            ("a\nb", "control character"),
            (" a", "space"),
            ("a:b", "letters, digits"),
        ] {
            let problem = name_problem(bad).unwrap_or_default();
            assert!(problem.contains(why), "{bad:?}: {problem}");
        }
        assert!(name_problem(&"a".repeat(129)).is_some());
    }
}
