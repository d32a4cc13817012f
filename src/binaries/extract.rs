//! Archive extraction that cannot escape its folder.
//!
//! Every entry is checked before anything is written: absolute paths, `..` components, drive
//! prefixes and links pointing outside the folder reject the whole archive. Links are created
//! after all files, so no file is ever written through a link. Unix permission bits (the
//! executable bit of `llama-server`) are restored. Blocking: run it on the blocking pool.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Zip,
    TarGz,
}

impl ArchiveKind {
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".zip") {
            Some(ArchiveKind::Zip)
        } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(ArchiveKind::TarGz)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive entry {entry:?} is unsafe: {reason}")]
    Unsafe { entry: String, reason: &'static str },
    #[error("archive is damaged: {0}")]
    Corrupt(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks an entry name and returns it as a clean relative path (`None` for the root itself).
pub fn safe_relative(name: &str) -> Result<Option<PathBuf>, ExtractError> {
    let unsafe_entry = |reason| ExtractError::Unsafe {
        entry: name.to_string(),
        reason,
    };
    // Archives from Windows may use backslashes; treat them as separators everywhere.
    let normalized = name.replace('\\', "/");
    if normalized.starts_with('/') {
        return Err(unsafe_entry("absolute path"));
    }
    let mut clean = PathBuf::new();
    for component in Path::new(&normalized).components() {
        match component {
            Component::Normal(part) => {
                if part.to_string_lossy().contains(':') {
                    return Err(unsafe_entry("drive or stream prefix"));
                }
                clean.push(part)
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry("`..` component")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_entry("absolute path")),
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}

/// A symbolic link stays inside the folder when its target, taken from the link's own folder,
/// never climbs above the root.
fn link_stays_inside(link: &Path, target: &str) -> bool {
    let target = target.replace('\\', "/");
    if target.starts_with('/') || target.contains(':') {
        return false;
    }
    let mut depth = link.components().count() as i64 - 1;
    for component in Path::new(&target).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

enum Deferred {
    Symlink { path: PathBuf, target: String },
    HardLink { path: PathBuf, source: PathBuf },
}

/// Extracts `archive` into `dest` (created if missing). Returns the files written.
pub fn extract(
    archive: &Path,
    kind: ArchiveKind,
    dest: &Path,
) -> Result<Vec<PathBuf>, ExtractError> {
    fs::create_dir_all(dest).map_err(|source| ExtractError::Io {
        path: dest.into(),
        source,
    })?;
    let file = fs::File::open(archive).map_err(|source| ExtractError::Io {
        path: archive.into(),
        source,
    })?;
    let mut writer = Writer {
        dest,
        files: Vec::new(),
        deferred: Vec::new(),
    };
    match kind {
        ArchiveKind::Zip => extract_zip(file, &mut writer)?,
        ArchiveKind::TarGz => extract_tar_gz(file, &mut writer)?,
    }
    writer.finish()
}

struct Writer<'a> {
    dest: &'a Path,
    files: Vec<PathBuf>,
    deferred: Vec<Deferred>,
}

impl Writer<'_> {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
        move |source| ExtractError::Io {
            path: path.into(),
            source,
        }
    }

    fn dir(&self, rel: &Path) -> Result<(), ExtractError> {
        let path = self.dest.join(rel);
        fs::create_dir_all(&path).map_err(Self::io(&path))
    }

    fn file(
        &mut self,
        rel: &Path,
        mode: Option<u32>,
        content: &mut dyn io::Read,
    ) -> Result<(), ExtractError> {
        let path = self.dest.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(Self::io(parent))?;
        }
        let mut out = fs::File::create(&path).map_err(Self::io(&path))?;
        io::copy(content, &mut out).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                ExtractError::Corrupt(e.to_string())
            }
            _ => ExtractError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        set_mode(&path, mode).map_err(Self::io(&path))?;
        self.files.push(path);
        Ok(())
    }

    fn symlink(&mut self, name: &str, rel: PathBuf, target: String) -> Result<(), ExtractError> {
        if !link_stays_inside(&rel, &target) {
            return Err(ExtractError::Unsafe {
                entry: name.into(),
                reason: "link points outside the folder",
            });
        }
        self.deferred.push(Deferred::Symlink { path: rel, target });
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<PathBuf>, ExtractError> {
        for link in std::mem::take(&mut self.deferred) {
            match link {
                Deferred::Symlink { path, target } => {
                    let path = self.dest.join(path);
                    create_symlink(&target, &path).map_err(Self::io(&path))?;
                }
                Deferred::HardLink { path, source } => {
                    let (path, source) = (self.dest.join(path), self.dest.join(source));
                    fs::copy(&source, &path).map_err(Self::io(&path))?;
                    self.files.push(path);
                }
            }
        }
        Ok(self.files)
    }
}

fn extract_zip(file: fs::File, writer: &mut Writer) -> Result<(), ExtractError> {
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ExtractError::Corrupt(e.to_string()))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| ExtractError::Corrupt(e.to_string()))?
            .into_owned();
        let Some(rel) = safe_relative(&name)? else {
            continue;
        };
        if entry.is_dir() {
            writer.dir(&rel)?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            io::Read::read_to_string(&mut entry, &mut target)
                .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
            writer.symlink(&name, rel, target)?;
        } else {
            let mode = entry.unix_mode();
            writer.file(&rel, mode, &mut entry)?;
        }
    }
    Ok(())
}

fn extract_tar_gz(file: fs::File, writer: &mut Writer) -> Result<(), ExtractError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let entries = archive
        .entries()
        .map_err(|e| ExtractError::Corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ExtractError::Corrupt(e.to_string()))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = safe_relative(&name)? else {
            continue;
        };
        let link_target = || -> Result<String, ExtractError> {
            Ok(String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()).into_owned())
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => writer.dir(&rel)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mode = entry.header().mode().ok();
                writer.file(&rel, mode, &mut entry)?;
            }
            tar::EntryType::Symlink => {
                let target = link_target()?;
                writer.symlink(&name, rel, target)?;
            }
            tar::EntryType::Link => {
                let target = link_target()?;
                let Some(source) = safe_relative(&target)? else {
                    return Err(ExtractError::Unsafe {
                        entry: name,
                        reason: "hard link to the folder itself",
                    });
                };
                writer
                    .deferred
                    .push(Deferred::HardLink { path: rel, source });
            }
            // Metadata entries the tar crate has already applied.
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => {
                return Err(ExtractError::Unsafe {
                    entry: name,
                    reason: "device, fifo or other special file",
                });
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match mode {
        // Keep rwx bits only: no setuid, setgid or sticky bits from an archive.
        Some(mode) => fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777)),
        None => Ok(()),
    }
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: Option<u32>) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn create_symlink(target: &str, path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(target, path)
}

/// Windows needs privileges for symlinks; release archives for Windows contain none, so a link
/// becomes a copy of its target.
#[cfg(not(unix))]
fn create_symlink(target: &str, path: &Path) -> io::Result<()> {
    let source = path.parent().unwrap_or(Path::new(".")).join(target);
    fs::copy(source, path).map(|_| ())
}

#[cfg(test)]
mod tests;
