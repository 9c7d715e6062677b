//! The console's bearer token: the mutating endpoints (replay, discard)
//! demand `Authorization: Bearer <token>`. It comes from
//! `KAUSAL_CONSOLE_TOKEN`, or is generated at start and written to
//! `<data-dir>/console-token`, readable by its owner only, where the CLI
//! and scripts find it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file name under the data directory.
pub const TOKEN_FILE: &str = "console-token";

/// A fresh token: 256 random bits as 64 hex digits.
pub fn generate() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Where the token of the console over `data_dir` is written.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// `given` (from `KAUSAL_CONSOLE_TOKEN`) when set, a fresh one otherwise;
/// either way written to `<data_dir>/console-token` with mode 0600.
pub fn establish(given: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    let token = match given.map(str::trim) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => generate(),
    };
    write_private(&path(data_dir), &token)?;
    Ok(token)
}

/// Writes `text` to `file`, created (or truncated) readable by its owner
/// only.
fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut f = options.open(file)?;
        // An existing file keeps its mode on open: narrow it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")
    }
    #[cfg(not(unix))]
    {
        let mut f = options.open(file)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")
    }
}

/// True when `header` (an `Authorization` value) carries `token`. The
/// comparison takes the same time wherever the first difference is.
pub fn authorizes(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_authorizes() {
        assert!(authorizes(Some("Bearer abc"), "abc"));
        assert!(!authorizes(Some("Bearer abd"), "abc"));
        assert!(!authorizes(Some("Bearer ab"), "abc"));
        assert!(!authorizes(Some("abc"), "abc"));
        assert!(!authorizes(Some("Basic abc"), "abc"));
        assert!(!authorizes(None, "abc"));
    }

    #[test]
    fn the_token_file_is_private_and_holds_the_token() {
        let dir = tempfile::tempdir().expect("dir");
        let token = establish(None, dir.path()).expect("token");
        assert_eq!(token.len(), 64);
        let written = std::fs::read_to_string(path(dir.path())).expect("file");
        assert_eq!(written.trim(), token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .expect("meta")
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        assert_eq!(
            establish(Some("given"), dir.path()).expect("given"),
            "given"
        );
        assert_eq!(
            std::fs::read_to_string(path(dir.path()))
                .expect("file")
                .trim(),
            "given"
        );
    }
}
