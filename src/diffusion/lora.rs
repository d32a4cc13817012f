//! The LoRAs an image applies: each one the request names, found among the installed models,
//! as the backends take it (a path inside the LoRA folder they were given, and a weight).

use crate::config::DataPaths;
use crate::models::ModelError;
use crate::models::store::{self, ModelInfo, ModelType};

use super::DiffusionError;
use super::request::LoraChoice;

/// A LoRA as the backends are given it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedLora {
    pub model_id: String,
    /// Its file, relative to `--lora-model-dir`, `/`-separated (what sd-server lists and
    /// `sd-cli`'s prompt tags name).
    pub path: String,
    pub weight: f64,
    /// The file's size: what loading it adds to an image's memory.
    pub bytes: u64,
}

/// Finds each chosen LoRA's file; an id that is not an installed LoRA is an error naming it.
pub async fn resolve(
    data: &DataPaths,
    choices: &[LoraChoice],
) -> Result<Vec<AppliedLora>, DiffusionError> {
    let mut applied = Vec::new();
    for (i, choice) in choices.iter().enumerate() {
        let id = &choice.model_id;
        let field = format!("loras[{i}].modelId");
        let refuse = |why: String| DiffusionError::Invalid(format!("{field} {id:?} {why}"));
        let info = installed(data, &field, id, ModelType::Lora).await?;
        let path = info
            .path
            .strip_prefix(&data.models_lora)
            .map_err(|_| refuse("lies outside the LoRA folder".into()))?
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        // sd-cli reads a LoRA from a `<lora:path:weight>` tag in the prompt.
        if path.contains([':', '>']) {
            return Err(refuse(format!(
                "has a file name with ':' or '>' ({path}), which the backend cannot be given"
            )));
        }
        applied.push(AppliedLora {
            model_id: id.clone(),
            path,
            weight: choice.weight,
            bytes: info.size,
        });
    }
    Ok(applied)
}

/// The installed model `id` of `kind` that a request names in `field`, or a typed error that
/// says which field and why not (not installed, damaged, of another type).
pub async fn installed(
    data: &DataPaths,
    field: &str,
    id: &str,
    kind: ModelType,
) -> Result<ModelInfo, DiffusionError> {
    let refuse = |why: String| DiffusionError::Invalid(format!("{field} {id:?} {why}"));
    let info = match store::read(data, id).await {
        Ok(info) => info,
        Err(ModelError::NotFound { .. }) => {
            return Err(refuse(format!(
                "is not installed: download it first, modelManager.downloadModel({{ type: '{}', ... }})",
                kind.as_str()
            )));
        }
        Err(e) => return Err(refuse(format!("cannot be used: {e}"))),
    };
    if info.model_type != kind {
        let wanted = match kind {
            ModelType::Lora => "a LoRA",
            ModelType::Upscaler => "an upscaler",
            ModelType::Llm => "an LLM",
            ModelType::Diffusion => "a diffusion model",
        };
        return Err(refuse(format!(
            "is a {} model, not {wanted}",
            info.model_type.as_str()
        )));
    }
    Ok(info)
}

/// The file of a LoRA sd applied none of the tensors of, from its report of each LoRA:
/// `(0 / 24) LoRA tensors have been applied, lora_file_path = …/ink/ink.gguf`. A LoRA made for
/// another model matches no tensor; one that matches some (a text encoder the model lacks) is
/// not reported.
pub fn unapplied(line: &str) -> Option<String> {
    let (counts, file) = line.split_once(" LoRA tensors have been applied, lora_file_path = ")?;
    let (applied, total) = counts
        .rsplit_once('(')?
        .1
        .strip_suffix(')')?
        .split_once(" / ")?;
    (applied.trim() == "0" && total.trim() != "0").then(|| file.trim().to_string())
}

/// An image whose LoRA sd applied nothing of is refused rather than passed off as styled.
pub fn check_applied(loras: &[AppliedLora], unapplied: &[String]) -> Result<(), DiffusionError> {
    let Some(file) = unapplied.first() else {
        return Ok(());
    };
    let named = loras
        .iter()
        .find(|l| file.replace('\\', "/").ends_with(&l.path))
        .map_or_else(|| file.clone(), |l| format!("{:?}", l.model_id));
    Err(DiffusionError::Invalid(format!(
        "the loaded model cannot use LoRA {named}: stable-diffusion.cpp matched none of its tensors to the model's (it was made for another model)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lora_sd_applied_nothing_of_is_named() {
        let line = "[INFO ] lora.hpp:830  - (0 / 24) LoRA tensors have been applied, lora_file_path = /d/models/lora/ink/ink.gguf";
        assert_eq!(
            unapplied(line).as_deref(),
            Some("/d/models/lora/ink/ink.gguf")
        );
        assert_eq!(unapplied(&line.replace("(0 / 24)", "(24 / 24)")), None);
        assert_eq!(unapplied(&line.replace("(0 / 24)", "(0 / 0)")), None);
        assert_eq!(unapplied("[INFO ] loading LoRA from 'x'"), None);
        let ink = AppliedLora {
            model_id: "ink".into(),
            path: "ink/ink.gguf".into(),
            weight: 1.0,
            bytes: 1,
        };
        assert!(check_applied(std::slice::from_ref(&ink), &[]).is_ok());
        let err = check_applied(&[ink], &["/d/models/lora/ink/ink.gguf".into()]).unwrap_err();
        assert!(err.to_string().contains("cannot use LoRA \"ink\""), "{err}");
    }
}
