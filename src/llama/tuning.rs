//! llama-server's tuning flags as genai-electron 0.26 names them in `LlamaServerConfig`, so a
//! config written for it starts here unchanged; each maps to the flag 0.26 passes, except
//! `useMmap`/`useMlock`: the pinned llama-server has replaced `--no-mmap` and `--mlock` (which it
//! refuses as invalid arguments) with `--load-mode`.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// How llama-server returns a model's reasoning (`--reasoning-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum ReasoningFormat {
    Auto,
    Deepseek,
    DeepseekLegacy,
    None,
}

impl ReasoningFormat {
    fn as_str(self) -> &'static str {
        match self {
            ReasoningFormat::Auto => "auto",
            ReasoningFormat::Deepseek => "deepseek",
            ReasoningFormat::DeepseekLegacy => "deepseek-legacy",
            ReasoningFormat::None => "none",
        }
    }
}

/// llama.cpp's own fitting of unset arguments to free memory (`--fit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum FitMode {
    On,
    #[default]
    Off,
}

/// The tuning flags of a resolved config; unset ones are llama-server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct Tuning {
    pub model_alias: Option<String>,
    pub jinja: Option<bool>,
    pub reasoning_format: Option<ReasoningFormat>,
    pub batch_size: Option<u32>,
    pub continuous_batching: Option<bool>,
    pub use_mmap: Option<bool>,
    pub use_mlock: Option<bool>,
    pub swa_full: Option<bool>,
    pub cache_ram: Option<i64>,
    pub cpu_moe: Option<bool>,
    pub n_cpu_moe: Option<u32>,
    pub override_tensors: Option<String>,
    /// `off` unless asked: the context and GPU layers come from the library's estimate, and
    /// llama.cpp's dry-run allocation before the load would only cost time.
    pub fit: FitMode,
}

impl Tuning {
    /// llama-server's arguments for these settings, as genai-electron 0.26 passes them.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["--fit".into(), fit_arg(self.fit).into()];
        let mut flag = |on: bool, name: &str| {
            if on {
                args.push(name.into());
            }
        };
        flag(self.jinja == Some(true), "--jinja");
        flag(self.jinja == Some(false), "--no-jinja");
        flag(
            self.continuous_batching == Some(false),
            "--no-cont-batching",
        );
        flag(self.swa_full == Some(true), "--swa-full");
        flag(self.cpu_moe == Some(true), "--cpu-moe");
        let valued = [
            ("--alias", self.model_alias.clone()),
            (
                "--reasoning-format",
                self.reasoning_format.map(|f| f.as_str().into()),
            ),
            ("--batch-size", self.batch_size.map(|n| n.to_string())),
            ("--load-mode", self.load_mode().map(str::to_string)),
            ("--cache-ram", self.cache_ram.map(|n| n.to_string())),
            ("--n-cpu-moe", self.n_cpu_moe.map(|n| n.to_string())),
            ("--override-tensor", self.override_tensors.clone()),
        ];
        for (name, value) in valued {
            if let Some(value) = value {
                args.extend([name.to_string(), value]);
            }
        }
        args
    }
}

impl Tuning {
    /// `--load-mode` for `useMmap` and `useMlock`; `None` (llama-server's `auto`: mmap where the
    /// device allows) when neither is set.
    fn load_mode(&self) -> Option<&'static str> {
        match (self.use_mmap, self.use_mlock) {
            (None, None) => None,
            (Some(false), Some(true)) => Some("mlock"),
            (Some(false), _) => Some("none"),
            (_, Some(true)) => Some("mmap+mlock"),
            (_, _) => Some("mmap"),
        }
    }
}

fn fit_arg(fit: FitMode) -> &'static str {
    match fit {
        FitMode::On => "on",
        FitMode::Off => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_tuning_only_turns_fitting_off() {
        assert_eq!(Tuning::default().args(), ["--fit", "off"]);
    }

    #[test]
    fn each_setting_is_the_flag_genai_electron_0_26_passes() {
        let tuning = Tuning {
            model_alias: Some("chat".into()),
            jinja: Some(false),
            reasoning_format: Some(ReasoningFormat::DeepseekLegacy),
            batch_size: Some(512),
            continuous_batching: Some(false),
            use_mmap: Some(false),
            use_mlock: Some(true),
            swa_full: Some(true),
            cache_ram: Some(-1),
            cpu_moe: Some(true),
            n_cpu_moe: Some(4),
            override_tensors: Some("exps=CPU".into()),
            fit: FitMode::On,
        };
        assert_eq!(
            tuning.args().join(" "),
            "--fit on --no-jinja --no-cont-batching --swa-full --cpu-moe --alias chat \
             --reasoning-format deepseek-legacy --batch-size 512 --load-mode mlock \
             --cache-ram -1 --n-cpu-moe 4 --override-tensor exps=CPU"
        );
        let defaults_kept = Tuning {
            jinja: Some(true),
            continuous_batching: Some(true),
            use_mmap: Some(true),
            use_mlock: Some(false),
            ..Tuning::default()
        };
        assert_eq!(
            defaults_kept.args(),
            ["--fit", "off", "--jinja", "--load-mode", "mmap"]
        );
    }

    #[test]
    fn mmap_and_mlock_become_a_load_mode() {
        let mode = |use_mmap, use_mlock| {
            Tuning {
                use_mmap,
                use_mlock,
                ..Tuning::default()
            }
            .load_mode()
        };
        assert_eq!(mode(None, None), None);
        assert_eq!(mode(Some(false), None), Some("none"));
        assert_eq!(mode(Some(false), Some(true)), Some("mlock"));
        assert_eq!(mode(None, Some(true)), Some("mmap+mlock"));
        assert_eq!(mode(Some(true), Some(false)), Some("mmap"));
    }
}
