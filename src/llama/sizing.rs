//! `canRunModel` with llama.cpp's own projection where it can be asked: the arithmetic chooses
//! the configuration (context, GPU layers), and the dry run of llama-server's tool says what that
//! configuration holds. The verdict says which answered (`estimate.source`).

use crate::binaries::{BinaryKind, BinaryManager, EnsureOptions};
use crate::config::DataPaths;
use crate::system::estimate::{CanRun, verdict};
use crate::system::{ModelSpec, RunOptions, SystemError, SystemInfo};

use super::LlamaConfig;

/// The arithmetic's verdict, replaced by one on llama.cpp's projection where an installed
/// llama-server has the tool beside it and the model's file is known (a split over RPC workers
/// is sized from what each worker reports).
pub async fn can_run_model(
    system: &SystemInfo,
    binaries: &BinaryManager,
    data: &DataPaths,
    model: &ModelSpec,
    opts: &RunOptions,
) -> Result<CanRun, SystemError> {
    let arithmetic = system.can_run_model(model, opts).await?;
    let (Some(model_path), true) = (&model.path, opts.rpc_workers.is_empty()) else {
        return Ok(arithmetic);
    };
    let Some(binary) = binaries
        .locate(BinaryKind::LlamaServer, &EnsureOptions::default(), data)
        .await
    else {
        return Ok(arithmetic);
    };
    let config = LlamaConfig {
        model_path: model_path.clone(),
        binary,
        context_size: arithmetic.estimate.context_size,
        gpu_layers: arithmetic.estimate.gpu_layers,
        parallel_requests: 1,
        cache_type_k: opts.cache_type_k,
        cache_type_v: opts.cache_type_v.or(opts.cache_type_k),
        ..Default::default()
    };
    match super::projected(&config).await {
        Ok((projected, _)) => {
            let gpu = system.gpu().await;
            Ok(verdict(projected, opts, &system.memory(), &gpu))
        }
        Err(why) => {
            tracing::debug!(%why, "canRunModel answered by the GGUF arithmetic");
            Ok(arithmetic)
        }
    }
}
