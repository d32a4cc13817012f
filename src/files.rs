//! Small file helpers shared by the domains.

use std::io;
use std::path::Path;

/// Writes `content` next to `path` and renames it into place, so readers see the old file or the
/// new one, never half of either.
pub async fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    tokio::fs::write(&tmp, content).await?;
    tokio::fs::rename(&tmp, path).await
}

/// The first file under `dir` that cannot be deleted now (a process has it open or mapped), with
/// the system's reason; `None` when every file can go. Only Windows refuses to delete an open
/// file: elsewhere this is always `None`. A check before a deletion, so that the deletion does
/// not stop half-way.
pub async fn first_held_open(dir: &Path) -> io::Result<Option<(std::path::PathBuf, String)>> {
    #[cfg(windows)]
    {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || held_open::first(&dir))
            .await
            .map_err(io::Error::other)?
    }
    #[cfg(not(windows))]
    {
        let _ = dir;
        Ok(None)
    }
}

#[cfg(windows)]
mod held_open {
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::windows::fs::OpenOptionsExt;
    use std::os::windows::io::AsRawHandle;
    use std::path::{Path, PathBuf};

    use windows_sys::Win32::Storage::FileSystem::{
        FILE_DISPOSITION_INFO, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE,
        FileDispositionInfo, SetFileInformationByHandle,
    };

    /// Access to delete a file (winnt.h's `DELETE`).
    const DELETE: u32 = 0x0001_0000;

    /// Asks Windows, for each file, whether it would be deleted now, and takes the answer back:
    /// opening for deletion fails while another handle that does not share deletion is open;
    /// marking it for deletion fails while a process has it mapped (llama.cpp maps models).
    pub fn first(dir: &Path) -> io::Result<Option<(PathBuf, String)>> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if let Some(found) = first(&path)? {
                    return Ok(Some(found));
                }
                continue;
            }
            if let Err(e) = deletable(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                return Ok(Some((path, e.to_string())));
            }
        }
        Ok(None)
    }

    fn deletable(path: &Path) -> io::Result<()> {
        let file = OpenOptions::new()
            .access_mode(DELETE)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)
            .open(path)?;
        mark_for_deletion(&file, true)?;
        // Taken back on the same handle before it closes: nothing is deleted.
        mark_for_deletion(&file, false)
    }

    fn mark_for_deletion(file: &File, delete: bool) -> io::Result<()> {
        let info = FILE_DISPOSITION_INFO { DeleteFile: delete };
        // SAFETY: the handle is open for DELETE access for the whole call, and `info` is a
        // FILE_DISPOSITION_INFO of the size passed.
        let done = unsafe {
            SetFileInformationByHandle(
                file.as_raw_handle(),
                FileDispositionInfo,
                std::ptr::from_ref(&info).cast(),
                std::mem::size_of::<FILE_DISPOSITION_INFO>() as u32,
            )
        };
        if done == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
