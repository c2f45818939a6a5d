//! Where the lab finds its inputs (repo, cache) and puts its outputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// An exclusive flock on `path` (created if missing), held until the file
/// is dropped and released by the kernel however the process ends. Each
/// call opens its own file description, so threads of one process exclude
/// each other as other processes do. `waiting` is printed when someone
/// else holds the lock.
pub fn lock_exclusive(path: &Path, waiting: Option<&str>) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        if let Some(w) = waiting {
            eprintln!("lab: {w}");
        }
        // SAFETY: as above, blocking this time.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(f)
}

/// The repository root: $LAB_ROOT, else the nearest ancestor of the current
/// directory holding `vm-images/guest.yaml`, else the tree `lab` was built from.
pub fn repo_root() -> Result<PathBuf> {
    if let Some(r) = std::env::var_os("LAB_ROOT") {
        return Ok(PathBuf::from(r));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join("vm-images/guest.yaml").is_file() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if built.join("vm-images/guest.yaml").is_file() {
        return Ok(built.canonicalize()?);
    }
    bail!("cannot find the lab's repository (vm-images/guest.yaml); run from the repo or set LAB_ROOT")
}

/// A path the user typed (`--series patches/x`, a testcase file): as typed
/// when it exists from the current directory, else from the repository
/// root when it exists there, so the repository's own inputs can be named
/// from anywhere in the checkout; else as typed, for the error to name.
pub fn user_path(root: &Path, typed: &Path) -> PathBuf {
    if typed.is_relative() && !typed.exists() && root.join(typed).exists() {
        root.join(typed)
    } else {
        typed.to_path_buf()
    }
}

/// The cache the set-up script fills: $LAB_CACHE or ~/.cache/lab.
pub fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("LAB_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/lab")
}

/// Where runs are written: $LAB_RESULTS or `<repo>/results`.
pub fn results_dir(root: &Path) -> PathBuf {
    std::env::var_os("LAB_RESULTS").map_or_else(|| root.join("results"), PathBuf::from)
}

/// A private directory (mode 0700) for sockets and keys, removed on drop.
pub struct PrivateDir {
    path: PathBuf,
}

/// Where private directories are made: $XDG_RUNTIME_DIR, else the
/// temporary directory.
fn private_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The pid in a private directory's name, `lab-<what>-<pid>-<attempt>`.
fn private_dir_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("lab-")?;
    let mut parts = rest.rsplitn(3, '-');
    let attempt = parts.next()?;
    let pid = parts.next()?;
    let what = parts.next()?;
    if what.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Removes the private directories (keys, sockets) of lab processes that
/// are gone: a `lab` killed with SIGKILL never ran its drops. Only our own
/// directories, only when their process no longer exists; a directory of
/// a live process (another `lab` running beside this one) is left alone.
/// Returns how many were removed.
pub fn remove_stale_private_dirs() -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(private_base()) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(private_dir_owner) else {
            continue;
        };
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        if !md.is_dir() || md.uid() != me || md.mode() & 0o777 != 0o700 {
            continue;
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && std::fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!("removed {} (its lab process is gone)", e.path().display());
            removed += 1;
        }
    }
    removed
}

impl PrivateDir {
    pub fn new(prefix: &str) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = private_base();
        for attempt in 0..100u32 {
            let name = format!("{prefix}-{}-{attempt}", std::process::id());
            let path = base.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
        bail!(
            "could not create a private directory under {}",
            base.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_directory_names_give_their_pid() {
        assert_eq!(private_dir_owner("lab-vm-1234-0"), Some(1234));
        assert_eq!(private_dir_owner("lab-verify-state-77-12"), Some(77));
        assert_eq!(private_dir_owner("lab-vm-x-0"), None);
        assert_eq!(private_dir_owner("lab-1234-0"), None);
        assert_eq!(private_dir_owner("systemd-private-1-2"), None);
        assert_eq!(private_dir_owner("lab-vm-1234-a"), None);
    }

    #[test]
    fn a_typed_path_is_taken_from_the_current_directory_first_then_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("patches/only-in-root")).unwrap();
        // Exists from the current directory (the crate's): as typed.
        assert_eq!(user_path(root.path(), Path::new("src")), Path::new("src"));
        // Only under the root: from the root.
        assert_eq!(
            user_path(root.path(), Path::new("patches/only-in-root")),
            root.path().join("patches/only-in-root")
        );
        // Nowhere, or absolute: as typed, for the error to name.
        assert_eq!(user_path(root.path(), Path::new("nope")), Path::new("nope"));
        assert_eq!(
            user_path(root.path(), Path::new("/nope")),
            Path::new("/nope")
        );
    }
}
