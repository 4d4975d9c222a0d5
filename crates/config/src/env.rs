//! AI Toolkit's two substitutions: `${ENV_VAR}` in the file's text before parsing, and `[name]` in
//! every string after parsing (toolkit/config.py).

use crate::finding::Finding;
use crate::node::{Node, Pos};

/// Replaces every `${NAME}` in `text` with the environment variable NAME, as AI Toolkit does on the raw
/// file (comments included). An unset variable is an error; its placeholder is left in place so the
/// rest of the file can still be checked.
pub(crate) fn substitute_env(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<Finding>) {
    let mut out = String::with_capacity(text.len());
    let mut findings = Vec::new();
    let mut rest = text;
    let mut consumed = 0;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(len) = after.find('}') else {
            break;
        };
        if len == 0 {
            // `${}` names nothing; AI Toolkit's pattern needs at least one character, so keep it.
            out.push_str(&rest[..start + 3]);
            consumed += start + 3;
            rest = &rest[start + 3..];
            continue;
        }
        let name = &after[..len];
        out.push_str(&rest[..start]);
        match lookup(name) {
            Some(value) => out.push_str(&value),
            // AI Toolkit fails on an unset variable even in a comment; a commented-out line is
            // not worth stopping for, so only lines that are not comments are errors.
            None if is_comment_line(text, consumed + start) => {
                out.push_str(&rest[start..start + 3 + len])
            }
            None => {
                findings.push(Finding::error(
                    format!("${{{name}}}"),
                    Some(position_of(text, consumed + start)),
                    format!("environment variable {name} is not set"),
                    format!("set it before running (export {name}=...) or write the value into the job file"),
                ));
                out.push_str(&rest[start..start + 3 + len]);
            }
        }
        consumed += start + 3 + len;
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    (out, findings)
}

/// Whether the line holding byte `at` is a YAML comment line (`# ...`).
fn is_comment_line(text: &str, at: usize) -> bool {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    text[line_start..at].trim_start().starts_with('#')
}

fn position_of(text: &str, byte: usize) -> Pos {
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

/// Replaces `[name]` by the job's name in every string and key, as AI Toolkit does before anything
/// reads the config (so `[name]` in a sample prompt also becomes the job name, not the trigger word).
pub(crate) fn substitute_name(root: &mut Node) {
    let name = root
        .get("config")
        .and_then(|c| c.get("name"))
        .and_then(Node::as_str)
        .map(str::to_string);
    if let Some(name) = name {
        root.replace_text("[name]", &name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "DATA").then(|| "/data".to_string())
    }

    #[test]
    fn substitutes_set_variables() {
        let (out, findings) = substitute_env("a: ${DATA}/x\nb: ${DATA}\n", &env);
        assert_eq!(out, "a: /data/x\nb: /data\n");
        assert!(findings.is_empty());
    }

    #[test]
    fn unset_variables_are_errors_at_their_position() {
        let (out, findings) = substitute_env("a: 1\nb: é ${MISSING}/x\n", &env);
        assert_eq!(out, "a: 1\nb: é ${MISSING}/x\n");
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].key, "${MISSING}");
        assert_eq!((findings[0].line, findings[0].column), (Some(2), Some(6)));
    }

    #[test]
    fn unset_variables_in_comment_lines_are_not_errors() {
        let (out, findings) = substitute_env("# was ${OLD}\na: ${DATA} # ${ALSO_OLD}\n", &env);
        assert_eq!(out, "# was ${OLD}\na: /data # ${ALSO_OLD}\n");
        assert_eq!(
            findings.len(),
            1,
            "a trailing comment is still checked: {findings:?}"
        );
        assert_eq!(findings[0].key, "${ALSO_OLD}");
    }

    #[test]
    fn lone_dollar_braces_are_left_alone() {
        let (out, findings) = substitute_env("a: ${}\nc: ${DATA}\nb: ${unclosed\n", &env);
        assert_eq!(out, "a: ${}\nc: /data\nb: ${unclosed\n");
        assert!(findings.is_empty());
    }
}
