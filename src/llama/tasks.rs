//! What a llama-server serves besides plain chat: embeddings or reranking (its `mode`), images
//! and audio through the model's multimodal projector, and speculative decoding with a draft
//! model. Each is a part of the start config here, resolved against the model's files and
//! capabilities, and turned into llama-server's flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::models::{Capability, ModelInfo};

/// What a llama-server serves: chat (`/v1/chat/completions`, `/v1/completions`), embeddings
/// (`/v1/embeddings`) or reranking (`/v1/rerank`). An embedding or rerank server answers only its
/// own routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "LlamaServerMode")]
pub enum Mode {
    #[default]
    Chat,
    Embedding,
    Rerank,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Chat => "chat",
            Mode::Embedding => "embedding",
            Mode::Rerank => "rerank",
        }
    }

    /// What a server of this mode answers, in words.
    fn serves(self) -> &'static str {
        match self {
            Mode::Chat => "chats",
            Mode::Embedding => "embeddings",
            Mode::Rerank => "reranking",
        }
    }

    /// The server's log file: one a mode, so that servers of several modes keep theirs apart.
    pub fn log_file_name(self) -> &'static str {
        match self {
            Mode::Chat => "llama-server.log",
            Mode::Embedding => "llama-server-embedding.log",
            Mode::Rerank => "llama-server-rerank.log",
        }
    }
}

/// How an embedding server pools a text's token vectors into one (llama-server's `--pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// One vector a token (llama-server's own `/embeddings` only; OpenAI's route refuses it).
    None,
    Mean,
    /// The first token's (BERT's `[CLS]`).
    Cls,
    /// The last token's (decoder embedding models such as Qwen3-Embedding).
    Last,
}

impl Pooling {
    fn as_str(self) -> &'static str {
        match self {
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }
}

pub use crate::models::capabilities::ProjectorRequest;

/// Speculative decoding: a small model of the same vocabulary drafts tokens, the model checks
/// them in one batch. Unset fields are llama-server's defaults.
#[derive(Debug, Clone, Default, Deserialize, TS)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[ts(rename = "DraftConfig", optional_fields)]
pub struct DraftOptions {
    /// An installed `llm` model to draft with; default: the model's own `draft` component.
    pub model_id: Option<String>,
    /// The draft's layers on the GPU (`--spec-draft-ngl`; default: all of them where the model
    /// has a GPU).
    pub gpu_layers: Option<u32>,
    /// Tokens drafted at most a step (`--spec-draft-n-max`, default 3).
    pub max_tokens: Option<u32>,
    /// Tokens drafted at least for a draft to be checked (`--spec-draft-n-min`, default 0).
    pub min_tokens: Option<u32>,
}

/// `draft: true | false | { … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DraftRequest {
    On(bool),
    With(DraftOptions),
}

/// The projector a start loads.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ResolvedProjector")]
pub struct Projector {
    #[ts(type = "string")]
    pub path: PathBuf,
    /// On the GPU with the model's layers (`false`: kept on the CPU).
    pub offload: bool,
}

/// The draft model a start loads.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ResolvedDraft")]
pub struct Draft {
    /// The model it came from: the started model's id (its `draft` component) or another's.
    pub model_id: String,
    #[ts(type = "string")]
    pub path: PathBuf,
    pub gpu_layers: Option<u32>,
    pub max_tokens: Option<u32>,
    pub min_tokens: Option<u32>,
}

/// The projector `model` loads in `mode`, as asked; `Err` says why the request cannot be served.
pub fn projector(
    model: &ModelInfo,
    mode: Mode,
    asked: Option<ProjectorRequest>,
) -> Result<Option<Projector>, String> {
    let file = model.components.get("mmproj");
    match (asked, file, mode) {
        (Some(ProjectorRequest::Off), _, _) => Ok(None),
        // A projector serves chat only: an embedding or rerank server leaves it unloaded.
        (None, _, Mode::Embedding | Mode::Rerank) | (None, None, _) => Ok(None),
        (Some(_), _, Mode::Embedding | Mode::Rerank) => Err(format!(
            "projector: a {} server reads no images; leave projector unset",
            mode.as_str()
        )),
        (Some(_), None, _) => Err(format!(
            "projector: model {:?} has no multimodal projector; download one as its mmproj component",
            model.id
        )),
        (asked, Some(file), Mode::Chat) => Ok(Some(Projector {
            path: file.path.clone(),
            offload: asked != Some(ProjectorRequest::Cpu),
        })),
    }
}

/// The draft model, as asked, for `model` in `mode`: `other` is the installed model a draft's
/// `modelId` names (looked up by the caller). `Err` says why it cannot be.
pub fn draft(
    model: &ModelInfo,
    mode: Mode,
    asked: Option<&DraftRequest>,
    other: Option<&ModelInfo>,
) -> Result<Option<Draft>, String> {
    let options = match asked {
        Some(DraftRequest::On(false)) => return Ok(None),
        Some(DraftRequest::On(true)) => DraftOptions::default(),
        Some(DraftRequest::With(options)) => options.clone(),
        None if mode != Mode::Chat => return Ok(None),
        None => match model.components.contains_key("draft") {
            true => DraftOptions::default(),
            false => return Ok(None),
        },
    };
    if mode != Mode::Chat {
        return Err(format!(
            "draft: speculative decoding speeds up generation, and a {} server generates none",
            mode.as_str()
        ));
    }
    let (model_id, path) = match (&options.model_id, other) {
        (Some(id), Some(other)) if other.capabilities.contains(&Capability::Chat) => {
            (id.clone(), other.path.clone())
        }
        (Some(id), Some(_)) => {
            return Err(format!(
                "draft.modelId: model {id:?} cannot generate text, so it cannot draft"
            ));
        }
        (Some(id), None) => return Err(format!("draft.modelId: no llm model {id:?}")),
        (None, _) => match model.components.get("draft") {
            Some(file) => (model.id.clone(), file.path.clone()),
            None => {
                return Err(format!(
                    "draft: model {:?} has no draft component; name an installed model in draft.modelId",
                    model.id
                ));
            }
        },
    };
    if let (Some(min), Some(max)) = (options.min_tokens, options.max_tokens)
        && min > max
    {
        return Err(format!(
            "draft.minTokens ({min}) must not exceed draft.maxTokens ({max})"
        ));
    }
    Ok(Some(Draft {
        model_id,
        path,
        gpu_layers: options.gpu_layers,
        max_tokens: options.max_tokens,
        min_tokens: options.min_tokens,
    }))
}

/// Refuses a mode the model cannot serve; the pooling an embedding server uses (the model's own
/// where its header names one, else mean: a chat model embeds by the mean of its tokens).
pub fn pooling(
    model: &ModelInfo,
    mode: Mode,
    asked: Option<Pooling>,
) -> Result<Option<Pooling>, String> {
    let can = |c| model.capabilities.contains(&c);
    match mode {
        Mode::Chat if asked.is_some() => {
            Err("pooling is for embedding servers (mode: 'embedding')".into())
        }
        Mode::Chat if !can(Capability::Chat) => Err(format!(
            "model {:?} cannot generate text (it serves {}): start it with mode: '{}'",
            model.id,
            names(&model.capabilities),
            if can(Capability::Rerank) {
                "rerank"
            } else {
                "embedding"
            }
        )),
        Mode::Chat => Ok(None),
        Mode::Rerank if asked.is_some() => {
            Err("pooling: a rerank server pools by rank; leave pooling unset".into())
        }
        Mode::Rerank if !can(Capability::Rerank) => Err(format!(
            "model {:?} cannot rerank (it serves {}): a reranker has a classification head or rank pooling",
            model.id,
            names(&model.capabilities)
        )),
        Mode::Rerank => Ok(None),
        Mode::Embedding => Ok(match asked {
            Some(pooling) => Some(pooling),
            None if has_own_pooling(model) => None,
            None => Some(Pooling::Mean),
        }),
    }
}

fn names(capabilities: &[Capability]) -> String {
    let names: Vec<&str> = capabilities.iter().map(|c| c.as_str()).collect();
    names.join(", ")
}

/// The model's header names a pooling type other than none.
fn has_own_pooling(model: &ModelInfo) -> bool {
    crate::models::capabilities::pooling_type(|key| model.raw_metadata()?.get(key))
        .is_some_and(|p| p != 0)
}

/// llama-server's flags for the mode, the projector and the draft.
pub fn args(
    mode: Mode,
    pooling: Option<Pooling>,
    projector: Option<&Projector>,
    draft: Option<&Draft>,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    match mode {
        Mode::Chat => {}
        Mode::Embedding => args.push("--embedding".into()),
        Mode::Rerank => args.push("--rerank".into()),
    }
    if let Some(pooling) = pooling {
        args.extend(["--pooling".into(), pooling.as_str().into()]);
    }
    if let Some(projector) = projector {
        args.extend(["--mmproj".into(), projector.path.to_string_lossy().into()]);
        if !projector.offload {
            args.push("--no-mmproj-offload".into());
        }
    }
    if let Some(draft) = draft {
        // llama-server drafts with the draft model only where a speculative type says so.
        args.extend([
            "--spec-draft-model".into(),
            draft.path.to_string_lossy().into(),
            "--spec-type".into(),
            "draft-simple".into(),
        ]);
        let numbers = [
            ("--spec-draft-ngl", draft.gpu_layers),
            ("--spec-draft-n-max", draft.max_tokens),
            ("--spec-draft-n-min", draft.min_tokens),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.extend([flag.into(), value.to_string()]);
            }
        }
    }
    args
}

/// What a server with llama-server's arguments `args` serves: its `--rerank` or `--embedding`
/// (from `mode`, or from `extraArgs`, as a config written for llama-server's flags may pass them),
/// else chat.
pub fn mode_of(args: &[String]) -> Mode {
    let has = |flags: &[&str]| args.iter().any(|a| flags.contains(&a.as_str()));
    if has(&["--rerank", "--reranking"]) {
        Mode::Rerank
    } else if has(&["--embedding", "--embeddings"]) {
        Mode::Embedding
    } else {
        Mode::Chat
    }
}

/// llama-server's routes of each task (its OpenAI, Anthropic and own spellings).
const ROUTES: &[(Mode, &[&str])] = &[
    (
        Mode::Chat,
        &[
            "/v1/chat/completions",
            "/chat/completions",
            "/v1/completions",
            "/completions",
            "/completion",
            "/infill",
            "/v1/messages",
            "/v1/responses",
        ],
    ),
    (
        Mode::Embedding,
        &["/v1/embeddings", "/embeddings", "/embedding"],
    ),
    (
        Mode::Rerank,
        &["/v1/rerank", "/rerank", "/v1/reranking", "/reranking"],
    ),
];

/// What the gateway lets through to a server of this task: requests for another task's route
/// are refused (an embedding server would otherwise answer chats with its pooled model), and so
/// are images and audio in chats where no projector reads them (llama-server would fail them
/// with a 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskCheck {
    pub mode: Mode,
    pub reads_media: bool,
}

impl TaskCheck {
    /// Why a request to `path` with `body` is refused, if it is.
    pub fn refusal(&self, path: &str, body: &[u8]) -> Option<String> {
        let task = ROUTES
            .iter()
            .find(|(_, routes)| routes.contains(&path))
            .map(|(mode, _)| *mode)?;
        if task != self.mode {
            return Some(format!(
                "this server serves {} (mode: '{}'): {path} is for a server started with mode: '{}'",
                self.mode.serves(),
                self.mode.as_str(),
                task.as_str()
            ));
        }
        if task == Mode::Chat && !self.reads_media && has_media(body) {
            return Some(
                "this model reads no images or audio: it has no multimodal projector (download one as its mmproj component), or it was started with projector: 'off'"
                    .into(),
            );
        }
        None
    }
}

/// A chat whose messages hold an image or audio part (OpenAI's `image_url`, `input_audio`).
fn has_media(body: &[u8]) -> bool {
    let mentions = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if !mentions(b"image_url") && !mentions(b"input_audio") {
        return false;
    }
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let messages = request.get("messages").and_then(|m| m.as_array());
    messages.into_iter().flatten().any(|message| {
        let parts = message.get("content").and_then(|c| c.as_array());
        parts.into_iter().flatten().any(|part| {
            matches!(
                part.get("type").and_then(|t| t.as_str()),
                Some("image_url" | "input_audio")
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ModelSource, ModelType, StoredFile};
    use serde_json::json;

    fn file(path: &str) -> StoredFile {
        StoredFile {
            path: path.into(),
            size: 1,
            checksum: String::new(),
            source: ModelSource {
                kind: "url".into(),
                url: String::new(),
                repo: None,
                file: None,
                revision: None,
            },
            provenance: None,
        }
    }

    fn model(
        id: &str,
        roles: &[&str],
        capabilities: &[Capability],
        raw: serde_json::Value,
    ) -> ModelInfo {
        ModelInfo {
            id: id.into(),
            name: id.into(),
            model_type: ModelType::Llm,
            size: 1,
            path: format!("/m/{id}.gguf").into(),
            downloaded_at: String::new(),
            source: file("").source,
            checksum: String::new(),
            gguf_metadata: Some(json!({ "raw": raw })),
            components: roles
                .iter()
                .map(|r| (r.to_string(), file(&format!("/m/{id}-{r}.gguf"))))
                .collect(),
            shards: vec![],
            provenance: None,
            capabilities: capabilities.to_vec(),
        }
    }

    fn vlm() -> ModelInfo {
        let capabilities = [Capability::Chat, Capability::Vision];
        model("vlm", &["mmproj", "draft"], &capabilities, json!({}))
    }

    #[test]
    fn the_projector_loads_by_default_in_chat_and_is_refused_where_it_cannot_serve() {
        let on = projector(&vlm(), Mode::Chat, None).unwrap().unwrap();
        assert_eq!(
            (on.path.to_str().unwrap(), on.offload),
            ("/m/vlm-mmproj.gguf", true)
        );
        let cpu = projector(&vlm(), Mode::Chat, Some(ProjectorRequest::Cpu));
        assert!(!cpu.unwrap().unwrap().offload);
        assert_eq!(
            projector(&vlm(), Mode::Chat, Some(ProjectorRequest::Off)),
            Ok(None)
        );
        assert_eq!(projector(&vlm(), Mode::Embedding, None), Ok(None));
        let err = projector(&vlm(), Mode::Rerank, Some(ProjectorRequest::Auto)).unwrap_err();
        assert!(err.contains("rerank server reads no images"), "{err}");
        let plain = model("plain", &[], &[Capability::Chat], json!({}));
        assert_eq!(projector(&plain, Mode::Chat, None), Ok(None));
        let err = projector(&plain, Mode::Chat, Some(ProjectorRequest::Cpu)).unwrap_err();
        assert!(err.contains("has no multimodal projector"), "{err}");
    }

    #[test]
    fn the_draft_is_the_models_own_by_default_or_another_named_model() {
        let own = draft(&vlm(), Mode::Chat, None, None).unwrap().unwrap();
        assert_eq!(
            (own.model_id.as_str(), own.path.to_str().unwrap()),
            ("vlm", "/m/vlm-draft.gguf")
        );
        assert_eq!(
            draft(&vlm(), Mode::Chat, Some(&DraftRequest::On(false)), None),
            Ok(None)
        );
        assert_eq!(draft(&vlm(), Mode::Embedding, None, None), Ok(None));
        let err = draft(&vlm(), Mode::Embedding, Some(&DraftRequest::On(true)), None).unwrap_err();
        assert!(err.contains("embedding server generates none"), "{err}");

        let plain = model("plain", &[], &[Capability::Chat], json!({}));
        assert_eq!(draft(&plain, Mode::Chat, None, None), Ok(None));
        let err = draft(&plain, Mode::Chat, Some(&DraftRequest::On(true)), None).unwrap_err();
        assert!(err.contains("has no draft component"), "{err}");
        let small = model("small", &[], &[Capability::Chat], json!({}));
        let named = DraftRequest::With(DraftOptions {
            model_id: Some("small".into()),
            gpu_layers: Some(2),
            max_tokens: Some(8),
            min_tokens: Some(1),
        });
        let other = draft(&plain, Mode::Chat, Some(&named), Some(&small))
            .unwrap()
            .unwrap();
        assert_eq!(other.path.to_str().unwrap(), "/m/small.gguf");
        assert_eq!(
            (other.gpu_layers, other.max_tokens, other.min_tokens),
            (Some(2), Some(8), Some(1))
        );
        let reranker = model("r", &[], &[Capability::Rerank], json!({}));
        let err = draft(&plain, Mode::Chat, Some(&named), Some(&reranker)).unwrap_err();
        assert!(err.contains("cannot draft"), "{err}");
        let err = draft(&plain, Mode::Chat, Some(&named), None).unwrap_err();
        assert!(err.contains("no llm model \"small\""), "{err}");
        let inverted = DraftRequest::With(DraftOptions {
            max_tokens: Some(2),
            min_tokens: Some(3),
            ..Default::default()
        });
        let err = draft(&vlm(), Mode::Chat, Some(&inverted), None).unwrap_err();
        assert!(err.contains("must not exceed"), "{err}");
    }

    #[test]
    fn a_mode_is_refused_to_a_model_that_cannot_serve_it_and_pooling_follows_the_model() {
        let chat = model(
            "chat",
            &[],
            &[Capability::Chat],
            json!({ "general.architecture": "llama" }),
        );
        let embedder = model(
            "e",
            &[],
            &[Capability::Embedding],
            json!({ "general.architecture": "bert", "bert.pooling_type": 2 }),
        );
        let reranker = model("r", &[], &[Capability::Rerank], json!({}));
        assert_eq!(pooling(&chat, Mode::Chat, None), Ok(None));
        assert_eq!(
            pooling(&chat, Mode::Embedding, None),
            Ok(Some(Pooling::Mean))
        );
        assert_eq!(pooling(&embedder, Mode::Embedding, None), Ok(None));
        let last = pooling(&embedder, Mode::Embedding, Some(Pooling::Last));
        assert_eq!(last, Ok(Some(Pooling::Last)));
        assert_eq!(pooling(&reranker, Mode::Rerank, None), Ok(None));
        for (model, mode, asked, message) in [
            (&chat, Mode::Rerank, None, "cannot rerank (it serves chat)"),
            (&reranker, Mode::Chat, None, "start it with mode: 'rerank'"),
            (
                &embedder,
                Mode::Chat,
                None,
                "start it with mode: 'embedding'",
            ),
            (
                &chat,
                Mode::Chat,
                Some(Pooling::Mean),
                "pooling is for embedding servers",
            ),
            (&reranker, Mode::Rerank, Some(Pooling::Cls), "pools by rank"),
        ] {
            let err = pooling(model, mode, asked).unwrap_err();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn each_task_becomes_llama_servers_flags() {
        assert!(args(Mode::Chat, None, None, None).is_empty());
        assert_eq!(
            args(Mode::Embedding, Some(Pooling::Cls), None, None),
            ["--embedding", "--pooling", "cls"]
        );
        assert_eq!(args(Mode::Rerank, None, None, None), ["--rerank"]);
        let projector = Projector {
            path: "/p.gguf".into(),
            offload: false,
        };
        let draft = Draft {
            model_id: "d".into(),
            path: "/d.gguf".into(),
            gpu_layers: Some(0),
            max_tokens: Some(8),
            min_tokens: None,
        };
        assert_eq!(
            args(Mode::Chat, None, Some(&projector), Some(&draft)),
            [
                "--mmproj",
                "/p.gguf",
                "--no-mmproj-offload",
                "--spec-draft-model",
                "/d.gguf",
                "--spec-type",
                "draft-simple",
                "--spec-draft-ngl",
                "0",
                "--spec-draft-n-max",
                "8"
            ]
        );
        for mode in [Mode::Chat, Mode::Embedding, Mode::Rerank] {
            assert!(mode.log_file_name().starts_with("llama-server"));
        }
    }

    #[test]
    fn the_gateway_refuses_another_tasks_routes_and_media_no_projector_reads() {
        let chat = TaskCheck {
            mode: Mode::Chat,
            reads_media: false,
        };
        let image = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"?"},{"type":"image_url","image_url":{"url":"data:"}}]}]}"#;
        let audio = br#"{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#;
        let text = br#"{"messages":[{"role":"user","content":"an image_url is a URL"}]}"#;
        assert_eq!(chat.refusal("/v1/chat/completions", text), None);
        assert_eq!(chat.refusal("/health", b""), None);
        for body in [&image[..], &audio[..]] {
            let why = chat.refusal("/v1/chat/completions", body).unwrap();
            assert!(why.contains("no multimodal projector"), "{why}");
        }
        let seeing = TaskCheck {
            reads_media: true,
            ..chat
        };
        assert_eq!(seeing.refusal("/v1/chat/completions", image), None);
        let why = chat.refusal("/v1/embeddings", b"{}").unwrap();
        assert!(why.contains("serves chats (mode: 'chat')"), "{why}");
        let embedder = TaskCheck {
            mode: Mode::Embedding,
            reads_media: false,
        };
        assert_eq!(embedder.refusal("/v1/embeddings", b"{}"), None);
        let why = embedder.refusal("/v1/chat/completions", text).unwrap();
        assert!(why.contains("mode: 'chat'"), "{why}");
        let reranker = TaskCheck {
            mode: Mode::Rerank,
            reads_media: false,
        };
        assert_eq!(reranker.refusal("/v1/rerank", b"{}"), None);
        assert!(reranker.refusal("/embeddings", b"{}").is_some());
    }

    #[test]
    fn llama_servers_own_task_flags_decide_what_it_serves() {
        let argv = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(mode_of(&argv("--jinja")), Mode::Chat);
        assert_eq!(mode_of(&argv("--embeddings")), Mode::Embedding);
        assert_eq!(mode_of(&argv("--reranking --embedding")), Mode::Rerank);
        // Each mode's own flags say it back.
        for mode in [Mode::Chat, Mode::Embedding, Mode::Rerank] {
            assert_eq!(mode_of(&args(mode, None, None, None)), mode);
        }
    }
}
