//! Test certificates, made by the `openssl` CLI: P-256 keys, valid for two days.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; panics with openssl's own message when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate `NAME.pem` and its key `NAME.key` in `dir`, for `subject`, with
/// each of `extensions` added (`-addext`); returns their paths (certificate, key).
pub fn self_signed(
    dir: &Path,
    name: &str,
    subject: &str,
    extensions: &[&str],
) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        subject,
        "-keyout",
        &key,
        "-out",
        &cert,
    ];
    for extension in extensions {
        args.extend(["-addext", extension]);
    }
    openssl(dir, &args);
    (dir.join(cert), dir.join(key))
}
