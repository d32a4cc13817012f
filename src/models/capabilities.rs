//! What an `llm` model can be asked to do, read from its GGUF headers: the model file's (its
//! architecture, pooling type and classification head) and its projector's (the encoders it has).
//! The files of an `llm` model are checked here too: a projector must be one (`clip`), and the
//! model and its draft must not.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ts_rs::TS;

use super::gguf::GgufMetadata;

/// A task an `llm` model serves, as llama-server runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "ModelCapability")]
pub enum Capability {
    /// Generates text: a decoder (one without a pooling type of its own).
    Chat,
    /// Reads images: its `mmproj` projector has a vision encoder.
    Vision,
    /// Hears audio: its `mmproj` projector has an audio encoder.
    Audio,
    /// Embeds text: it pools (mean, CLS or last token), as embedding models are converted.
    Embedding,
    /// Scores a document against a query: rank pooling or a classification head.
    Rerank,
}

/// Where the model's multimodal projector runs, or `off` (images and audio then refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "ProjectorPlacement")]
pub enum ProjectorRequest {
    /// With the model's layers: on the GPU where any of them is (llama-server's default).
    #[default]
    Auto,
    /// On the CPU, whatever the model's layers do (`--no-mmproj-offload`): less VRAM, slower images.
    Cpu,
    Off,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Chat => "chat",
            Capability::Vision => "vision",
            Capability::Audio => "audio",
            Capability::Embedding => "embedding",
            Capability::Rerank => "rerank",
        }
    }
}

/// llama.cpp's `llama_pooling_type`, as a GGUF's `<arch>.pooling_type` holds it.
const POOLING_NONE: u64 = 0;
const POOLING_RANK: u64 = 4;
/// Architectures llama.cpp runs as encoders only (no text generation).
const ENCODERS: &[&str] = &[
    "bert",
    "modern-bert",
    "nomic-bert",
    "nomic-bert-moe",
    "neo-bert",
    "jina-bert-v2",
    "jina-bert-v3",
    "t5encoder",
];
/// The architecture llama.cpp's projectors (`mmproj`) are written with.
const PROJECTOR_ARCH: &str = "clip";

/// The encoders a projector has: `(vision, audio)`. A projector that says neither is taken for a
/// vision one (the first projectors did not say).
pub fn projector_modalities(raw: &BTreeMap<String, Value>) -> (bool, bool) {
    let flag = |key: &str| raw.get(key).and_then(Value::as_bool);
    let vision = flag("clip.has_vision_encoder");
    let audio = flag("clip.has_audio_encoder").unwrap_or(false);
    (vision.unwrap_or(!audio), audio)
}

/// A GGUF header's key lookup: its keys as read (`GgufMetadata::raw`) or as recorded
/// (`ModelInfo::raw_metadata`).
pub trait Header<'a>: Fn(&str) -> Option<&'a Value> {}
impl<'a, F: Fn(&str) -> Option<&'a Value>> Header<'a> for F {}

fn architecture<'a>(get: &impl Header<'a>) -> &'a str {
    get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The header's own pooling type (`<arch>.pooling_type`), if it names one.
pub fn pooling_type<'a>(get: impl Header<'a>) -> Option<u64> {
    get(&format!("{}.pooling_type", architecture(&get))).and_then(Value::as_u64)
}

/// What a model does, from its file's header keys (`get`) and its projector's encoders, if it has
/// one.
pub fn of<'a>(get: impl Header<'a>, projector: Option<(bool, bool)>) -> Vec<Capability> {
    let mut capabilities = Vec::new();
    let arch = architecture(&get);
    let classifier = get(&format!("{arch}.classifier.output_labels")).is_some();
    let pooling = pooling_type(&get);
    let encoder = ENCODERS.contains(&arch);
    if !encoder && matches!(pooling, None | Some(POOLING_NONE)) && !classifier {
        capabilities.push(Capability::Chat);
    }
    if let Some((vision, audio)) = projector {
        if vision {
            capabilities.push(Capability::Vision);
        }
        if audio {
            capabilities.push(Capability::Audio);
        }
    }
    let ranks = pooling == Some(POOLING_RANK) || classifier;
    if ranks {
        capabilities.push(Capability::Rerank);
    } else if encoder || matches!(pooling, Some(p) if p != POOLING_NONE) {
        capabilities.push(Capability::Embedding);
    }
    capabilities
}

/// Refuses a file of an `llm` model given in the wrong place: a projector as the model or its
/// draft, or a language model as the projector. `role` is the file's component role (`None` for
/// the model file).
pub fn check_file(role: Option<&str>, meta: &GgufMetadata, name: &str) -> Result<(), String> {
    let is_projector = meta.architecture.as_deref() == Some(PROJECTOR_ARCH);
    match (role, is_projector) {
        (Some("mmproj"), false) => Err(format!(
            "{name} is not a multimodal projector (its architecture is {:?}, a projector's is \"clip\"): give the mmproj file made for this model",
            meta.architecture.as_deref().unwrap_or("unknown")
        )),
        (None, true) => Err(format!(
            "{name} is a multimodal projector, not a language model: download the model itself and give this file as its mmproj component"
        )),
        (Some("draft"), true) => Err(format!(
            "{name} is a multimodal projector, not a draft model: a draft is a small language model with the same vocabulary"
        )),
        _ => Ok(()),
    }
}

/// llama.cpp refuses a draft whose vocabulary is larger or smaller than the model's by more than
/// this many tokens (`SPEC_VOCAB_MAX_SIZE_DIFFERENCE`).
const DRAFT_VOCAB_SLACK: u64 = 128;

/// Refuses a draft llama-server would refuse at its start: another vocabulary.
pub fn check_draft(model: &GgufMetadata, draft: &GgufMetadata, name: &str) -> Result<(), String> {
    let (Some(ours), Some(its)) = (model.vocab_size, draft.vocab_size) else {
        return Ok(());
    };
    if ours.abs_diff(its) > DRAFT_VOCAB_SLACK {
        return Err(format!(
            "{name} has a vocabulary of {its} tokens and the model {ours}: a draft must share the model's vocabulary (llama.cpp allows {DRAFT_VOCAB_SLACK} tokens of difference)"
        ));
    }
    let tokenizer = |m: &GgufMetadata| m.raw.get("tokenizer.ggml.model").cloned();
    if tokenizer(model) != tokenizer(draft) {
        return Err(format!(
            "{name} has another tokenizer ({}) than the model ({}): a draft must share the model's vocabulary",
            tokenizer(draft).unwrap_or_default(),
            tokenizer(model).unwrap_or_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn projector(value: Value) -> (bool, bool) {
        projector_modalities(&raw(value).into_iter().collect())
    }

    #[test]
    fn a_decoder_chats_an_encoder_embeds_and_rank_pooling_reranks() {
        let chat = raw(json!({ "general.architecture": "llama" }));
        assert_eq!(of(|k| chat.get(k), None), [Capability::Chat]);
        let embedder = raw(json!({ "general.architecture": "bert", "bert.pooling_type": 2 }));
        assert_eq!(of(|k| embedder.get(k), None), [Capability::Embedding]);
        let qwen_embedder =
            raw(json!({ "general.architecture": "qwen3", "qwen3.pooling_type": 3 }));
        assert_eq!(of(|k| qwen_embedder.get(k), None), [Capability::Embedding]);
        let reranker = raw(json!({ "general.architecture": "bert", "bert.pooling_type": 4 }));
        assert_eq!(of(|k| reranker.get(k), None), [Capability::Rerank]);
        let classifier = raw(json!({
            "general.architecture": "bert",
            "bert.classifier.output_labels": ["yes"],
        }));
        assert_eq!(of(|k| classifier.get(k), None), [Capability::Rerank]);
        let unpooled = raw(json!({ "general.architecture": "llama", "llama.pooling_type": 0 }));
        assert_eq!(of(|k| unpooled.get(k), None), [Capability::Chat]);
        assert_eq!(of(|_| None, None), [Capability::Chat]);
    }

    #[test]
    fn a_projector_adds_what_its_encoders_read() {
        let chat = raw(json!({ "general.architecture": "llama" }));
        let vision = projector(json!({ "clip.has_vision_encoder": true }));
        assert_eq!(
            of(|k| chat.get(k), Some(vision)),
            [Capability::Chat, Capability::Vision]
        );
        let both = projector(json!({
            "clip.has_vision_encoder": true,
            "clip.has_audio_encoder": true,
        }));
        assert_eq!(
            of(|k| chat.get(k), Some(both)),
            [Capability::Chat, Capability::Vision, Capability::Audio]
        );
        let audio = projector(json!({ "clip.has_audio_encoder": true }));
        assert_eq!(
            of(|k| chat.get(k), Some(audio)),
            [Capability::Chat, Capability::Audio]
        );
        assert_eq!(projector(json!({})), (true, false));
    }

    fn meta(arch: &str, vocab: u64, tokenizer: &str) -> GgufMetadata {
        GgufMetadata {
            architecture: Some(arch.into()),
            vocab_size: Some(vocab),
            raw: [("tokenizer.ggml.model".to_string(), json!(tokenizer))].into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_file_is_checked_for_its_place() {
        let model = meta("llama", 49152, "gpt2");
        let projector = meta("clip", 0, "");
        assert!(check_file(None, &model, "m.gguf").is_ok());
        assert!(check_file(Some("mmproj"), &projector, "p.gguf").is_ok());
        assert!(check_file(Some("draft"), &model, "d.gguf").is_ok());
        let err = check_file(Some("mmproj"), &model, "m.gguf").unwrap_err();
        assert!(err.contains("not a multimodal projector"), "{err}");
        let err = check_file(None, &projector, "p.gguf").unwrap_err();
        assert!(err.contains("mmproj component"), "{err}");
        let err = check_file(Some("draft"), &projector, "p.gguf").unwrap_err();
        assert!(err.contains("not a draft model"), "{err}");
    }

    #[test]
    fn a_draft_shares_the_models_vocabulary() {
        let model = meta("llama", 49152, "gpt2");
        assert!(check_draft(&model, &meta("llama", 49152 + 128, "gpt2"), "d").is_ok());
        let err = check_draft(&model, &meta("llama", 32000, "gpt2"), "d").unwrap_err();
        assert!(err.contains("32000 tokens"), "{err}");
        let err = check_draft(&model, &meta("llama", 49152, "llama"), "d").unwrap_err();
        assert!(err.contains("another tokenizer"), "{err}");
    }
}
