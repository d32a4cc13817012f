//! Turning a file spec (plain URL, or Hugging Face repo/file/revision) into pinned download URLs.
//!
//! A Hugging Face revision such as `main` is resolved to its commit through the Hub API, and the
//! commit is what gets recorded, so downloading the model again fetches the same bytes. A split
//! GGUF (`name-00001-of-00003.gguf`) expands to all of its shards. `HF_ENDPOINT` (as in
//! `huggingface_hub`) points at a mirror.

use serde::Deserialize;

use super::{FileSpec, ModelError, ModelSource, Planned};
use crate::download::{DownloadError, http_client};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

pub fn endpoint(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

pub(super) async fn resolve(
    spec: &FileSpec,
    endpoint_override: Option<&str>,
) -> Result<Vec<Planned>, ModelError> {
    let invalid = |m: String| ModelError::Invalid(m);
    match spec.source.as_str() {
        "url" => {
            let url = spec
                .url
                .as_deref()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| invalid("source 'url' needs a url".into()))?;
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| invalid(format!("invalid url {url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(format!("url {url:?} must be http or https")));
            }
            let name = parsed
                .path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or_default()
                .to_string();
            Ok(shard_names(&name)
                .into_iter()
                .map(|file_name| {
                    let url = url.replacen(&name, &file_name, 1);
                    Planned {
                        role: None,
                        source: ModelSource {
                            kind: "url".into(),
                            url,
                            repo: None,
                            file: None,
                            revision: None,
                        },
                        file_name: safe_file_name(&file_name),
                        checksum: None,
                    }
                })
                .collect())
        }
        "huggingface" => {
            let repo = spec.repo.as_deref().unwrap_or_default();
            let file = spec.file.as_deref().unwrap_or_default();
            if !valid_repo(repo) {
                return Err(invalid(format!(
                    "repo {repo:?} must look like 'owner/name'"
                )));
            }
            if file.is_empty()
                || file
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
            {
                return Err(invalid(format!(
                    "file {file:?} must be a path inside the repo"
                )));
            }
            let base = endpoint(endpoint_override);
            let revision =
                resolve_revision(&base, repo, spec.revision.as_deref().unwrap_or("main")).await?;
            let (folder, name) = file.rsplit_once('/').map_or(("", file), |(d, n)| (d, n));
            Ok(shard_names(name)
                .into_iter()
                .map(|shard| {
                    let path = if folder.is_empty() {
                        shard.clone()
                    } else {
                        format!("{folder}/{shard}")
                    };
                    Planned {
                        role: None,
                        source: ModelSource {
                            kind: "huggingface".into(),
                            url: format!("{base}/{repo}/resolve/{revision}/{path}"),
                            repo: Some(repo.into()),
                            file: Some(path),
                            revision: Some(revision.clone()),
                        },
                        file_name: safe_file_name(&shard),
                        checksum: None,
                    }
                })
                .collect())
        }
        other => Err(invalid(format!(
            "source must be 'url' or 'huggingface', got {other:?}"
        ))),
    }
}

/// `shardFiles`: the shards named by the download, in place of what the first's name says. They
/// lie beside the first (its URL, or its folder of the repo), which they must begin with.
pub(super) fn with_shards(
    resolved: Vec<Planned>,
    names: &[String],
) -> Result<Vec<Planned>, ModelError> {
    let invalid = |m: String| ModelError::Invalid(m);
    let [first] = resolved.as_slice() else {
        return Err(invalid(
            "shardFiles is for a file whose name does not list its shards; this one does".into(),
        ));
    };
    let bad = names.iter().find(|n| {
        n.is_empty() || n.contains(['/', '\\']) || n.as_str() == "." || n.as_str() == ".."
    });
    if let Some(name) = bad {
        return Err(invalid(format!("shardFiles: {name:?} must be a file name")));
    }
    let first_name = first.source.url.rsplit('/').next().unwrap_or_default();
    if names[0] != first_name {
        return Err(invalid(format!(
            "shardFiles must begin with the model file itself, {first_name:?} (got {:?})",
            names[0]
        )));
    }
    Ok(names
        .iter()
        .map(|name| {
            let mut shard = first.clone();
            let base = first.source.url.len() - first_name.len();
            shard.source.url = format!("{}{name}", &first.source.url[..base]);
            shard.source.file = first
                .source
                .file
                .as_ref()
                .map(|f| match f.rsplit_once('/') {
                    Some((folder, _)) => format!("{folder}/{name}"),
                    None => name.clone(),
                });
            shard.file_name = safe_file_name(name);
            shard
        })
        .collect())
}

fn valid_repo(repo: &str) -> bool {
    let parts: Vec<&str> = repo.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// A commit id is kept; a branch or tag is asked of the Hub.
async fn resolve_revision(base: &str, repo: &str, revision: &str) -> Result<String, ModelError> {
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(revision.to_ascii_lowercase());
    }
    #[derive(Deserialize)]
    struct Info {
        sha: String,
    }
    let url = format!("{base}/api/models/{repo}/revision/{revision}");
    let network = |e: reqwest::Error| DownloadError::Network {
        url: url.clone(),
        reason: e.to_string(),
    };
    let response = http_client().get(&url).send().await.map_err(network)?;
    if !response.status().is_success() {
        return Err(DownloadError::Http {
            url: url.clone(),
            status: response.status().as_u16(),
        }
        .into());
    }
    let body = response.bytes().await.map_err(network)?;
    let info: Info = serde_json::from_slice(&body).map_err(|e| DownloadError::Network {
        url: url.clone(),
        reason: format!("unexpected answer: {e}"),
    })?;
    Ok(info.sha)
}

/// `x-00001-of-00003.gguf` → the three shard names; any other name → itself.
pub fn shard_names(name: &str) -> Vec<String> {
    let shards = name.strip_suffix(".gguf").and_then(|stem| {
        let (prefix, count) = stem.rsplit_once("-of-")?;
        let (base, first) = prefix.rsplit_once('-')?;
        let n: u32 = count.parse().ok()?;
        (first.len() == 5
            && count.len() == 5
            && first.parse::<u32>().ok()? == 1
            && (1..=999).contains(&n))
        .then(|| {
            (1..=n)
                .map(|i| format!("{base}-{i:05}-of-{count}.gguf"))
                .collect()
        })
    });
    shards.unwrap_or_else(|| vec![name.to_string()])
}

/// A name that is safe as one path component.
pub fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "model.bin".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_expand_and_other_names_stay() {
        assert_eq!(
            shard_names("Qwen3-30B-Q4_K_M-00001-of-00003.gguf"),
            [
                "Qwen3-30B-Q4_K_M-00001-of-00003.gguf",
                "Qwen3-30B-Q4_K_M-00002-of-00003.gguf",
                "Qwen3-30B-Q4_K_M-00003-of-00003.gguf"
            ]
        );
        assert_eq!(
            shard_names("x-00002-of-00003.gguf"),
            ["x-00002-of-00003.gguf"]
        );
        assert_eq!(shard_names("model.gguf"), ["model.gguf"]);
        assert_eq!(shard_names("a-1-of-3.gguf"), ["a-1-of-3.gguf"]);
    }

    #[test]
    fn names_and_repos_are_checked() {
        assert_eq!(safe_file_name("../../x y.gguf"), "_.._x_y.gguf");
        assert_eq!(safe_file_name(".."), "model.bin");
        assert!(valid_repo("bartowski/SmolLM2-135M-Instruct-GGUF"));
        for bad in ["a", "a/b/c", "../x", "a/..", "a b/c", "/a"] {
            assert!(!valid_repo(bad), "{bad}");
        }
    }

    #[test]
    fn endpoint_prefers_the_configured_one() {
        assert_eq!(endpoint(Some("http://127.0.0.1:9/")), "http://127.0.0.1:9");
    }
}
