//! `--graph OUT` of `run` and `check`: the lock validator's dependency graph, as
//! Graphviz DOT, or rendered to SVG by Graphviz's `dot` when OUT ends in `.svg`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::atomic_file::AtomicFile;
use crate::BadInput;

/// Writes `dot` to `out` (rendered when `out` ends in `.svg`), whole or not at all.
pub fn write(out: &Path, dot: &str) -> Result<(), BadInput> {
    let bytes = if out.extension().is_some_and(|e| e == "svg") {
        render_svg(out, dot)?
    } else {
        dot.as_bytes().to_vec()
    };
    let mut file = AtomicFile::create(out)?;
    file.write_all(&bytes)
        .and_then(|()| file.commit())
        .map_err(|e| BadInput(format!("cannot write {}: {e}", out.display())))
}

fn render_svg(out: &Path, dot: &str) -> Result<Vec<u8>, BadInput> {
    let how = || {
        let dot_path = out.with_extension("dot");
        format!(
            "give --graph {} and run `dot -Tsvg {} -o {}`",
            dot_path.display(),
            dot_path.display(),
            out.display()
        )
    };
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            BadInput(format!(
                "cannot render {}: Graphviz `dot` did not start ({e}; `apt install graphviz`); or {}",
                out.display(),
                how()
            ))
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    // `dot` reads all of its input before it writes: no deadlock on the pipes.
    let fed = stdin.write_all(dot.as_bytes());
    drop(stdin);
    let output = child
        .wait_with_output()
        .map_err(|e| BadInput(format!("cannot render {}: {e}", out.display())))?;
    match fed {
        Ok(()) if output.status.success() => Ok(output.stdout),
        _ => Err(BadInput(format!(
            "cannot render {}: `dot -Tsvg` failed ({}): {}",
            out.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}
