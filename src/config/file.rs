//! Reading a file the configuration names (the configuration itself, `auth_basic_user_file`).
//!
//! Each is opened without blocking and must be a regular file no larger than [`MAX_FILE_SIZE`]:
//! `-c /dev/zero` would otherwise read forever, and a FIFO would block the thread that reloads,
//! which is the one that answers signals.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest file the configuration may name: 16 MiB, far above any real configuration or
/// user list.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// Reads the whole of a regular file of at most [`MAX_FILE_SIZE`] bytes. Opening does not
/// wait (`O_NONBLOCK`, so a FIFO with no writer cannot hold it up) and the type is checked on
/// the opened file, so it cannot change between the check and the read.
pub fn read_config_file(path: &Path) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if metadata.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    read_capped(file)
}

/// Reads to the end, failing past the cap (a file may grow after it was measured).
fn read_capped(file: File) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    Ok(text)
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than {} MiB", MAX_FILE_SIZE >> 20),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            let error = read_config_file(Path::new(path)).unwrap_err();
            assert_eq!(error.to_string(), "not a regular file", "{path}");
        }
    }
}
