//! Running ffmpeg / ffprobe with piped output, collecting stderr on a thread so that a chatty
//! failure can never fill the pipe and stall the decode.

use super::MediaError;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// What a finished tool run produced.
pub(crate) struct ToolOutput {
    pub success: bool,
    pub stdout: Vec<u8>,
    /// The tail of stderr (at most a few KiB), for error messages.
    pub stderr: String,
}

const STDERR_TAIL: usize = 4096;

/// Runs `tool args…`, writing `stdin_data` (if any) to its standard input and reading all of its
/// standard output. `expected_stdout` pre-sizes the output buffer.
pub(crate) fn run_tool(
    tool: &'static str,
    args: &[OsString],
    stdin_data: Option<&[u8]>,
    expected_stdout: usize,
) -> Result<ToolOutput, MediaError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin_data.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| MediaError::ToolMissing { tool, source })?;

    let mut stderr_pipe = child.stderr.take();
    let mut stdout_pipe = child.stdout.take();
    let mut stdin_pipe = child.stdin.take();
    let (stdout, stderr, write_result) = std::thread::scope(|scope| {
        let stderr_reader = scope.spawn(move || {
            let mut all = Vec::new();
            if let Some(pipe) = stderr_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut all);
            }
            let start = all.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&all[start..]).into_owned()
        });
        let stdout_reader = scope.spawn(move || {
            let mut out = Vec::with_capacity(expected_stdout);
            if let Some(pipe) = stdout_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        });
        // A broken pipe here means the tool stopped reading (it failed); its exit status and
        // stderr then say why, so the write error itself is only kept as a fallback message.
        let write_result = match (stdin_pipe.as_mut(), stdin_data) {
            (Some(pipe), Some(data)) => pipe.write_all(data),
            _ => Ok(()),
        };
        drop(stdin_pipe);
        (
            stdout_reader.join().unwrap_or_default(),
            stderr_reader.join().unwrap_or_default(),
            write_result,
        )
    });
    let status = child
        .wait()
        .map_err(|source| MediaError::ToolMissing { tool, source })?;
    let mut stderr = stderr;
    if let Err(err) = write_result {
        if status.success() {
            stderr.push_str(&format!("\nwriting to {tool} failed: {err}"));
        }
    }
    Ok(ToolOutput {
        success: status.success(),
        stdout,
        stderr,
    })
}

/// The last few distinct lines of a tool's stderr, joined on one line: enough to say why a file
/// failed without flooding the summary with one line per broken packet.
pub(crate) fn short_stderr(stderr: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in stderr
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        // Drop ffmpeg's "[h264 @ 0x55…]" prefix so repeated messages compare equal.
        let text = match line.split_once("] ") {
            Some((prefix, rest)) if prefix.starts_with('[') => rest,
            _ => line,
        };
        // "file:/path/clip.mp4: Invalid data…": the path is already in the report.
        let text = match text.strip_prefix("file:").and_then(|t| t.split_once(": ")) {
            Some((_, rest)) => rest,
            None => text,
        };
        if !lines.contains(&text) {
            lines.push(text);
        }
        if lines.len() == 3 {
            break;
        }
    }
    lines.reverse();
    let joined = lines.join("; ");
    match joined.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// A path as an ffmpeg URL: the `file:` prefix keeps a name with a colon (`take:2.mp4`) or a
/// leading dash from being read as a protocol or an option. Non-UTF-8 names pass through as bytes.
pub(crate) fn path_arg(path: &std::path::Path) -> OsString {
    let mut arg = OsString::from("file:");
    arg.push(path.as_os_str());
    arg
}

/// Builds an argument list from anything string-like.
pub(crate) fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stderr_is_shortened_to_distinct_last_lines() {
        let noisy = "[h264 @ 0x1] Invalid NAL unit size (0 > 80).\n[h264 @ 0x2] Invalid NAL unit size (0 > 80).\n[h264 @ 0x3] Error splitting the input into NAL units.\n\n";
        assert_eq!(
            super::short_stderr(noisy),
            "Invalid NAL unit size (0 > 80).; Error splitting the input into NAL units."
        );
        assert_eq!(super::short_stderr(""), "");
        assert_eq!(
            super::short_stderr("file:/a/b.mp4: Invalid data found when processing input\n"),
            "Invalid data found when processing input"
        );
    }
}
