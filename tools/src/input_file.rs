//! Input files (`--kernel`, a trace) must be regular files: opening a FIFO blocks
//! until a writer appears, and a directory or device is never what the user meant.
//! The type is checked before the file is opened.

use std::fs::FileType;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::BadInput;

/// Refuses anything but a regular file (symbolic links are followed).
pub fn require_regular(path: &Path) -> Result<(), BadInput> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| BadInput(format!("cannot open {}: {e}", path.display())))?;
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(BadInput(format!(
        "{} is {}, not a regular file",
        path.display(),
        describe(kind)
    )))
}

fn describe(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}
