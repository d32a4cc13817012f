//! What the two calibrations share (`llamaServer.calibrate()`, `diffusionServer.calibrate()`):
//! the peak memory of a server while it works, the median of timed samples, and the reports
//! kept beside a model, the newest first.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::launch::ManagedServer;
use crate::sync::lock;

const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Reports kept of each kind, beside each model.
const KEPT_REPORTS: usize = 8;

/// The highest memory seen of a server's process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak {
    pub rss: u64,
    pub vram: u64,
}

/// Samples a server's process tree every 50 ms until stopped, keeping the highest figures.
pub struct PeakSampler {
    peak: Arc<Mutex<Peak>>,
    stop: CancellationToken,
}

impl PeakSampler {
    pub fn start<S: ManagedServer + Send + Sync + 'static>(server: Arc<S>) -> PeakSampler {
        let peak = Arc::new(Mutex::new(Peak::default()));
        let stop = CancellationToken::new();
        let (kept, stopped) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                if let Some(tree) = server.memory().await {
                    let mut peak = lock(&kept);
                    peak.rss = peak.rss.max(tree.rss_bytes);
                    peak.vram = peak.vram.max(tree.vram_bytes.unwrap_or(0));
                    // The kernel's high-water mark, where it keeps one, catches what a sample
                    // between two peaks would miss.
                    let leader = tree.pids.first().copied();
                    let hwm = leader.and_then(crate::process::memory::peak_rss);
                    peak.rss = peak.rss.max(hwm.unwrap_or(0));
                }
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
            }
        });
        PeakSampler { peak, stop }
    }

    /// The highest figures so far; sampling goes on.
    pub fn peak(&self) -> Peak {
        *lock(&self.peak)
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A server's calibration under way: at most one at a time, cancellable from outside.
#[derive(Debug, Default)]
pub struct Slot(Mutex<Option<CancellationToken>>);

/// The slot taken by one calibration; dropped (the calibration over, however it ended), it is
/// free again.
pub struct Taken<'a> {
    slot: &'a Slot,
    pub cancel: CancellationToken,
}

impl Slot {
    /// Takes the slot, unless a calibration holds it or `busy` (asked under the slot's lock,
    /// so a start cannot slip in between) says why the server cannot be calibrated now.
    pub fn take(&self, busy: impl FnOnce() -> Option<String>) -> Result<Taken<'_>, String> {
        let mut slot = lock(&self.0);
        if slot.is_some() {
            return Err("calibrating already".into());
        }
        if let Some(why) = busy() {
            return Err(why);
        }
        let cancel = CancellationToken::new();
        *slot = Some(cancel.clone());
        Ok(Taken { slot: self, cancel })
    }

    pub fn is_taken(&self) -> bool {
        lock(&self.0).is_some()
    }

    /// Cancels the calibration under way; false when none runs.
    pub fn cancel(&self) -> bool {
        lock(&self.0)
            .as_ref()
            .map(CancellationToken::cancel)
            .is_some()
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        *lock(&self.slot.0) = None;
    }
}

/// The median; `None` of nothing.
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

#[derive(serde::Deserialize, Serialize)]
struct Stored<R> {
    reports: Vec<R>,
}

/// Adds `report` first to the reports in `dir/file` (the newest eight are kept).
pub async fn store(dir: &Path, file: &str, report: &impl Serialize) -> std::io::Result<()> {
    let path = dir.join(file);
    let mut reports = read::<serde_json::Value>(dir, file)
        .await
        .unwrap_or_default();
    reports.insert(0, serde_json::to_value(report).expect("reports serialize"));
    reports.truncate(KEPT_REPORTS);
    let bytes = serde_json::to_vec_pretty(&Stored { reports }).expect("reports serialize");
    crate::files::write_atomic(&path, &bytes).await
}

/// The reports in `dir/file`, the newest first; `None` when there are none (or they cannot be
/// read: a calibration is then run again, never trusted half-read).
pub async fn read<R: DeserializeOwned>(dir: &Path, file: &str) -> Option<Vec<R>> {
    let bytes = tokio::fs::read(dir.join(file)).await.ok()?;
    serde_json::from_slice::<Stored<R>>(&bytes)
        .ok()
        .map(|s| s.reports)
}

/// The server a calibration runs: its name in JS, what a valid request holds, how it fails to
/// start.
pub trait Calibrates: std::fmt::Debug {
    const NAME: &'static str;
    /// What a request needs, said when one is refused.
    const REQUEST: &'static str;
    type StartError: crate::error::Coded + Send + Sync + 'static;
}

/// Why a calibration did not give a report.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError<S: Calibrates> {
    #[error("invalid calibration config: {0}")]
    Invalid(String),
    #[error(
        "{name} is {0}: calibrate() runs the model in a server of its own, and never beside it",
        name = S::NAME
    )]
    Busy(String),
    #[error("the calibration was cancelled")]
    Cancelled,
    #[error(transparent)]
    Start(Box<S::StartError>),
    #[error("cannot store the calibration in {}: {source}", path.display())]
    Store {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl<S: Calibrates> crate::error::Coded for CalibrationError<S> {
    fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            CalibrationError::Invalid(_) => ErrorCode::InvalidArgument,
            CalibrationError::Busy(_) => ErrorCode::ServerBusy,
            CalibrationError::Cancelled => ErrorCode::Cancelled,
            CalibrationError::Start(e) => e.code(),
            CalibrationError::Store { .. } => ErrorCode::FileSystemError,
        }
    }

    fn suggestion(&self) -> Option<String> {
        match self {
            CalibrationError::Invalid(_) => Some(format!("Give {}", S::REQUEST)),
            CalibrationError::Busy(_) => Some(format!(
                "Stop the server ({}.stop()), calibrate, then start it again",
                S::NAME
            )),
            CalibrationError::Cancelled => None,
            CalibrationError::Start(e) => e.suggestion(),
            CalibrationError::Store { .. } => {
                Some("Check that the model's folder is writable".into())
            }
        }
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        match self {
            CalibrationError::Start(e) => e.details(),
            _ => serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_holds_one_calibration_until_it_ends_however_it_ends() {
        let slot = Slot::default();
        assert!(!slot.cancel(), "nothing to cancel");
        assert_eq!(
            slot.take(|| Some("running".into())).err().unwrap(),
            "running"
        );
        let taken = slot.take(|| None).unwrap();
        assert!(slot.is_taken());
        assert_eq!(slot.take(|| None).err().unwrap(), "calibrating already");
        assert!(slot.cancel());
        assert!(taken.cancel.is_cancelled());
        drop(taken);
        assert!(!slot.is_taken() && !slot.cancel());
        assert!(slot.take(|| None).is_ok());
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[tokio::test]
    async fn reports_are_kept_newest_first_and_at_most_eight() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read::<u32>(dir.path(), "r.json").await.is_none());
        for i in 0..10u32 {
            store(dir.path(), "r.json", &i).await.unwrap();
        }
        let kept = read::<u32>(dir.path(), "r.json").await.unwrap();
        assert_eq!(kept, [9, 8, 7, 6, 5, 4, 3, 2]);
        std::fs::write(dir.path().join("r.json"), "{ half").unwrap();
        assert!(read::<u32>(dir.path(), "r.json").await.is_none());
        // A damaged file is replaced by the next report.
        store(dir.path(), "r.json", &10u32).await.unwrap();
        assert_eq!(read::<u32>(dir.path(), "r.json").await.unwrap(), [10]);
    }
}
