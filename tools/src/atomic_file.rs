//! Output files appear whole or not at all: bytes go to a temporary file beside the
//! destination, which is renamed over it only once everything is written. A failure
//! (disk full, a write error, a panic) leaves neither a partial file nor the
//! temporary one behind.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::BadInput;

/// A file being written to a temporary path until [`AtomicFile::commit`].
pub struct AtomicFile {
    file: File,
    /// `None` when writing in place (see [`AtomicFile::create`]) or once committed.
    pending: Option<Pending>,
}

struct Pending {
    temp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts writing `dest`. An existing non-regular destination (`/dev/stdout`, a
    /// FIFO) is written in place, since it cannot be replaced by a rename; an existing
    /// symbolic link keeps pointing at the file it named.
    pub fn create(dest: &Path) -> Result<Self, BadInput> {
        let cannot = |e: io::Error| BadInput(format!("cannot create {}: {e}", dest.display()));
        match std::fs::metadata(dest) {
            Ok(meta) if meta.is_dir() => {
                return Err(cannot(io::Error::from(io::ErrorKind::IsADirectory)))
            }
            Ok(meta) if !meta.is_file() => {
                let file = OpenOptions::new().write(true).open(dest).map_err(cannot)?;
                return Ok(Self {
                    file,
                    pending: None,
                });
            }
            Ok(_) => {
                // A regular file whose path does not resolve to a name: the file
                // behind /dev/stdout was deleted, or is anonymous. A rename would
                // replace the link (/dev/stdout itself) by a file: write in place.
                if std::fs::canonicalize(dest).is_err() {
                    let file = OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(dest)
                        .map_err(cannot)?;
                    return Ok(Self {
                        file,
                        pending: None,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(cannot(e)),
        }
        let dest = std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf());
        let temp = temp_path(&dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(cannot)?;
        Ok(Self {
            file,
            pending: Some(Pending { temp, dest }),
        })
    }

    /// Makes the written bytes durable and renames them into place.
    pub fn commit(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let Some(pending) = &self.pending else {
            return Ok(());
        };
        self.file.sync_all()?;
        std::fs::rename(&pending.temp, &pending.dest)?;
        self.pending = None;
        Ok(())
    }
}

/// `.NAME.PID.tmp` in the destination's directory (a rename is atomic only within
/// one file system).
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(pending) = &self.pending {
            let _ = std::fs::remove_file(&pending.temp);
        }
    }
}

/// A writer that is made visible once complete ([`tracefile::Recording`] commits it
/// when the trace is finished).
///
/// [`tracefile::Recording`]: crate::tracefile::Recording
pub trait Commit {
    fn commit(&mut self) -> io::Result<()>;
}

impl Commit for AtomicFile {
    fn commit(&mut self) -> io::Result<()> {
        AtomicFile::commit(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("percpu-lab-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn entries_of(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_a_committed_file_appears() {
        let path = scratch("committed");
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"whole").unwrap();
        assert!(!path.exists(), "visible before commit");
        file.commit().unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    }

    #[test]
    fn a_dropped_file_leaves_nothing_and_keeps_the_old_contents() {
        let path = scratch("dropped");
        std::fs::write(&path, b"old").unwrap();
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"partial").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let dir = path.parent().unwrap();
        assert!(
            !entries_of(dir).iter().any(|n| n.starts_with(".dropped")),
            "temporary file left: {:?}",
            entries_of(dir)
        );
    }

    #[test]
    fn a_symbolic_link_keeps_naming_the_file_it_names() {
        let target = scratch("link-target");
        let link = scratch("link");
        std::fs::write(&target, b"old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut file = AtomicFile::create(&link).unwrap();
        file.write_all(b"new").unwrap();
        file.commit().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn a_device_is_written_in_place() {
        let mut file = AtomicFile::create(Path::new("/dev/null")).unwrap();
        file.write_all(b"discarded").unwrap();
        file.commit().unwrap();
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    /// What `> FILE; rm FILE` then `--perfetto /dev/stdout` does: a link (here
    /// one of our own, like /dev/stdout) to a process's descriptor of a deleted
    /// file. The bytes go to that file through the link, and the link stays a
    /// link (a rename onto it had made /dev/stdout a regular file on this host).
    #[test]
    fn a_link_to_a_deleted_file_is_written_through_and_kept() {
        use std::io::{Read, Seek};
        use std::os::fd::AsRawFd;
        let deleted = scratch("deleted");
        let mut held = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&deleted)
            .unwrap();
        held.write_all(b"stale bytes").unwrap();
        std::fs::remove_file(&deleted).unwrap();
        let link = scratch("stdout-link");
        let fd_path = format!("/proc/self/fd/{}", held.as_raw_fd());
        std::os::unix::fs::symlink(&fd_path, &link).unwrap();
        let mut file = AtomicFile::create(&link).unwrap();
        file.write_all(b"report").unwrap();
        file.commit().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let mut written = String::new();
        held.rewind().unwrap();
        held.read_to_string(&mut written).unwrap();
        assert_eq!(written, "report");
        std::fs::remove_file(&link).unwrap();
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = std::env::temp_dir();
        let BadInput(message) = AtomicFile::create(&dir).err().unwrap();
        assert!(message.contains("directory"), "{message}");
    }
}
