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
