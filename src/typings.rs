//! TypeScript for the shapes declared in Rust, generated into `shapes.d.ts` (which `index.d.ts`
//! imports and re-exports): each field, its type and its documentation are written once, on the
//! Rust type that serde reads or writes. The test below fails when the checked-in file differs
//! from what the Rust shapes say; `npm run typings` writes it anew.
//!
//! JS numbers cross for Rust's integers (serde_json), so 64-bit integers are `number` here, not
//! ts-rs's `bigint`.

use ts_rs::{Config, TS};

use crate::binaries::manifest::{Archive, Variant};
use crate::binaries::{
    BinaryKind, BinaryProgress, BuildSteps, CrossPlatform, EnsureOptions, Origin, ResolvedBinary,
    SourceAccel, SourceSpec, Stage as BinaryStage,
};
use crate::config::{DataDirSource, DataPathsView, ModelFolders};
use crate::diffusion::ConfigView as DiffusionConfigView;
use crate::diffusion::DiffusionInfo;
use crate::diffusion::backend::BackendKind;
use crate::diffusion::calibrate as diffusion_calibrate;
use crate::diffusion::engine::{EngineEvent, JobStatus};
use crate::diffusion::progress::{Progress, Stage};
use crate::diffusion::request::{Hires, ImageRequest, LoraChoice, Sampler};
use crate::diffusion::resolve::StartRequest as DiffusionStartRequest;
use crate::error::ErrorCode;
use crate::llama::calibrate::{
    CalibrationRequest, Candidate as CalibrationCandidate, Combo as CalibrationCombo,
    DeviceBuffers, Measured as CalibrationMemory, ModelIdentity as CalibrationModel,
    Phase as CalibrationPhase, Profile as CalibrationProfile, Progress as CalibrationProgress,
    Recommendation as CalibrationRecommendation, Report as CalibrationReport, ReportStatus,
    RequestTiming, Run as CalibrationRun, RunStatus, Sample as CalibrationSample,
    Skipped as CalibrationSkipped, Workload as CalibrationWorkload, WorkloadResult,
};
use crate::llama::gateway::{QueueEvent, QueueInfo};
use crate::llama::projection::RunningWith;
use crate::llama::resolve::StartRequest as LlamaStartRequest;
use crate::llama::tasks::{
    Draft as ResolvedDraft, DraftOptions, Mode as LlamaMode, Pooling,
    Projector as ResolvedProjector, ProjectorRequest,
};
use crate::llama::tuning::{FitMode, ReasoningFormat};
use crate::llama::{LlamaConfig, ServerInfo};
use crate::models::gguf::{GgufMetadata, ReadOptions};
use crate::models::import::{Adoption, ImportRequest, Skipped};
use crate::models::{
    Capability, ComponentRole, ComponentSpec, Damaged, DownloadConfig, FileProblem, FileSpec,
    FileStart, MetadataSource, ModelEvent, ModelInfo, ModelProgress, ModelSource, ModelType,
    Provenance, StorageUsage, StoredFile, Verification,
};
use crate::orchestrator::{
    Bottleneck, Estimate, Memory, OptionsRequest, OrchestratorEvent, OrchestratorInfo, Phase,
    SavedState, ServerUsage, Source, Usage, YieldReason,
};
use crate::process::actor::RecoveryPolicy;
use crate::process::actor::{Snapshot, Transition};
use crate::process::memory::TreeMemory;
use crate::process::{ExitInfo, HealthStatus, ServerEvent, ServerState};
use crate::rpc::{RpcConfig, RpcInfo, StartRequest as RpcStartRequest};
use crate::system::cpu::CpuInfo;
use crate::system::estimate::{
    CanRun, EstimateSource, KvCacheType, MemoryEstimate, ModelSpec, OptimalConfig, Recommendations,
    RunOptions, WorkerShare,
};
use crate::system::gpu::{GpuDevice, GpuInfo, GpuVendor};
use crate::system::memory::MemoryInfo;
use crate::system::vulkan::DeviceType;
use crate::system::{SystemCapabilities, SystemEvent};

const HEADER: &str =
    "// Generated from the Rust shapes by `npm run typings` (src/typings.rs): do not edit.\n";

/// The declarations, in the order a reader meets them.
pub fn shapes() -> String {
    let config = Config::default();
    let declarations = [
        declaration::<ErrorCode>(&config),
        declaration::<DataDirSource>(&config),
        declaration::<ModelFolders>(&config),
        declaration::<DataPathsView>(&config),
        declaration::<CpuInfo>(&config),
        declaration::<MemoryInfo>(&config),
        declaration::<GpuVendor>(&config),
        declaration::<DeviceType>(&config),
        declaration::<GpuDevice>(&config),
        declaration::<GpuInfo>(&config),
        declaration::<Recommendations>(&config),
        declaration::<SystemCapabilities>(&config),
        declaration::<SystemEvent>(&config),
        declaration::<ModelSpec>(&config),
        declaration::<RunOptions>(&config),
        declaration::<WorkerShare>(&config),
        declaration::<MemoryEstimate>(&config),
        declaration::<EstimateSource>(&config),
        declaration::<CanRun>(&config),
        declaration::<OptimalConfig>(&config),
        declaration::<BinaryKind>(&config),
        declaration::<Archive>(&config),
        declaration::<Variant>(&config),
        declaration::<SourceAccel>(&config),
        declaration::<CrossPlatform>(&config),
        declaration::<SourceSpec>(&config),
        declaration::<EnsureOptions>(&config),
        declaration::<Origin>(&config),
        declaration::<ResolvedBinary>(&config),
        declaration::<BinaryStage>(&config),
        declaration::<BuildSteps>(&config),
        declaration::<BinaryProgress>(&config),
        declaration::<ServerState>(&config),
        declaration::<HealthStatus>(&config),
        declaration::<Transition>(&config),
        declaration::<ExitInfo>(&config),
        declaration::<ServerEvent<Snapshot>>(&config),
        declaration::<TreeMemory>(&config),
        declaration::<KvCacheType>(&config),
        declaration::<ReasoningFormat>(&config),
        declaration::<FitMode>(&config),
        declaration::<LlamaMode>(&config),
        declaration::<Pooling>(&config),
        declaration::<ProjectorRequest>(&config),
        declaration::<DraftOptions>(&config),
        declaration::<ResolvedProjector>(&config),
        declaration::<ResolvedDraft>(&config),
        declaration::<LlamaStartRequest>(&config),
        declaration::<RecoveryPolicy>(&config),
        declaration::<LlamaConfig>(&config),
        declaration::<RunningWith>(&config),
        declaration::<ServerInfo>(&config),
        declaration::<CalibrationProfile>(&config),
        declaration::<CalibrationCombo>(&config),
        declaration::<CalibrationWorkload>(&config),
        declaration::<CalibrationRequest>(&config),
        declaration::<CalibrationPhase>(&config),
        declaration::<CalibrationCandidate>(&config),
        declaration::<CalibrationProgress>(&config),
        declaration::<RunStatus>(&config),
        declaration::<RequestTiming>(&config),
        declaration::<CalibrationSample>(&config),
        declaration::<WorkloadResult>(&config),
        declaration::<DeviceBuffers>(&config),
        declaration::<CalibrationMemory>(&config),
        declaration::<CalibrationRun>(&config),
        declaration::<CalibrationSkipped>(&config),
        declaration::<CalibrationRecommendation>(&config),
        declaration::<ReportStatus>(&config),
        declaration::<CalibrationModel>(&config),
        declaration::<CalibrationReport>(&config),
        declaration::<BackendKind>(&config),
        declaration::<DiffusionStartRequest>(&config),
        declaration::<DiffusionConfigView>(&config),
        declaration::<Stage>(&config),
        declaration::<Progress>(&config),
        declaration::<JobStatus>(&config),
        declaration::<EngineEvent>(&config),
        declaration::<Sampler>(&config),
        declaration::<LoraChoice>(&config),
        declaration::<Hires>(&config),
        declaration::<ImageRequest>(&config),
        declaration::<DiffusionInfo>(&config),
        declaration::<diffusion_calibrate::Size>(&config),
        declaration::<diffusion_calibrate::Generation>(&config),
        declaration::<diffusion_calibrate::Combo>(&config),
        declaration::<diffusion_calibrate::CalibrationRequest>(&config),
        declaration::<diffusion_calibrate::Phase>(&config),
        declaration::<diffusion_calibrate::Progress>(&config),
        declaration::<diffusion_calibrate::Resolved>(&config),
        declaration::<diffusion_calibrate::RunStatus>(&config),
        declaration::<diffusion_calibrate::Run>(&config),
        declaration::<diffusion_calibrate::Skipped>(&config),
        declaration::<diffusion_calibrate::Machine>(&config),
        declaration::<diffusion_calibrate::Report>(&config),
        declaration::<RpcStartRequest>(&config),
        declaration::<RpcInfo>(&config),
        declaration::<RpcConfig>(&config),
        declaration::<OptionsRequest>(&config),
        declaration::<Phase>(&config),
        declaration::<QueueInfo>(&config),
        declaration::<QueueEvent>(&config),
        declaration::<OrchestratorInfo>(&config),
        declaration::<SavedState>(&config),
        declaration::<YieldReason>(&config),
        declaration::<OrchestratorEvent>(&config),
        declaration::<Memory>(&config),
        declaration::<Source>(&config),
        declaration::<Usage>(&config),
        declaration::<Bottleneck>(&config),
        declaration::<ServerUsage>(&config),
        declaration::<Estimate>(&config),
        declaration::<ModelType>(&config),
        declaration::<ComponentRole>(&config),
        declaration::<Capability>(&config),
        declaration::<FileSpec>(&config),
        declaration::<ComponentSpec>(&config),
        declaration::<DownloadConfig>(&config),
        declaration::<ImportRequest>(&config),
        declaration::<MetadataSource>(&config),
        declaration::<Provenance>(&config),
        declaration::<FileStart>(&config),
        declaration::<Adoption>(&config),
        declaration::<Skipped>(&config),
        declaration::<ReadOptions>(&config),
        declaration::<GgufMetadata>(&config),
        declaration::<ModelSource>(&config),
        declaration::<StoredFile>(&config),
        declaration::<ModelInfo>(&config),
        declaration::<ModelProgress>(&config),
        declaration::<Damaged>(&config),
        declaration::<ModelEvent>(&config),
        declaration::<FileProblem>(&config),
        declaration::<Verification>(&config),
        declaration::<StorageUsage>(&config),
    ];
    format!("{HEADER}\n{}", declarations.join("\n"))
}

fn declaration<T: TS>(config: &Config) -> String {
    // ts-rs gives the type's docs as a JSDoc block already.
    let docs = T::docs()
        .map(|d| format!("{}\n", d.trim_end()))
        .unwrap_or_default();
    let decl = T::decl(config).replace("bigint", "number");
    format!("{docs}export {}\n", layout(&decl))
}

/// An object type one field a line, a union of objects (or a long one) one member a line,
/// anything else as it is.
fn layout(decl: &str) -> String {
    let Some((head, body)) = decl.split_once(" = ") else {
        return decl.to_string();
    };
    let members = split_top_level(body.trim_end_matches(';'), '|');
    let long = decl.len() > 100 || members.iter().any(|m| m.contains('{'));
    if members.len() > 1 && long {
        let lines: String = members
            .iter()
            .map(|m| format!("\n  | {}", one_line(m)))
            .collect();
        return format!("{head} ={lines};");
    }
    one_field_a_line(decl)
}

fn doc_block(text: &str, indent: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().map(str::trim).collect();
    let body: String = lines
        .iter()
        .map(|l| format!("{indent} * {l}").trim_end().to_string() + "\n")
        .collect();
    format!("{indent}/**\n{body}{indent} */\n")
}

/// A union member on one line: its field docs (which the member's own types carry) dropped.
fn one_line(member: &str) -> String {
    let mut text = String::new();
    let mut rest = member;
    while let Some(start) = rest.find("/**") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("*/")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    text.push_str(rest);
    let words: Vec<&str> = text.split_whitespace().collect();
    words.join(" ").replace(", }", " }")
}

/// `type X = { a: A, /** doc */ b: B, };` as one field a line, each doc comment above its field.
fn one_field_a_line(decl: &str) -> String {
    let (Some(open), Some(close)) = (decl.find('{'), decl.rfind('}')) else {
        return decl.to_string();
    };
    let fields = split_top_level(&decl[open + 1..close], ',');
    if fields.is_empty() {
        return decl.to_string();
    }
    let mut out = format!("{}{{\n", &decl[..open]);
    for field in fields {
        let (docs, field) = match (field.find("/**"), field.find("*/")) {
            (Some(start), Some(end)) => {
                let text = field[start + 3..end]
                    .lines()
                    .map(|l| l.trim().trim_start_matches('*').trim())
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n");
                (doc_block(&text, "  "), field[end + 2..].trim())
            }
            _ => (String::new(), field.as_str()),
        };
        out.push_str(&format!("{docs}  {field}\n"));
    }
    out.push_str(&decl[close..]);
    out
}

/// `body` split at `separator` outside nested types and comments (the fields of an object
/// type's body at `,`, the members of a union at `|`).
fn split_top_level(body: &str, separator: char) -> Vec<String> {
    let (mut fields, mut current, mut depth, mut in_comment) =
        (Vec::new(), String::new(), 0, false);
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        match c {
            '/' if !in_comment && chars.peek() == Some(&'*') => in_comment = true,
            '*' if in_comment && chars.peek() == Some(&'/') => {
                current.push(chars.next().unwrap_or('/'));
                in_comment = false;
            }
            '{' | '(' | '<' | '[' if !in_comment => depth += 1,
            '}' | ')' | '>' | ']' if !in_comment => depth -= 1,
            c if c == separator && !in_comment && depth == 0 => {
                current.pop();
                fields.push(std::mem::take(&mut current).trim().to_string());
            }
            _ => {}
        }
    }
    let rest = current.trim();
    if !rest.is_empty() {
        fields.push(rest.to_string());
    }
    fields.into_iter().filter(|f| !f.is_empty()).collect()
}

#[test]
fn shapes_d_ts_is_what_the_rust_shapes_say() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shapes.d.ts");
    let generated = shapes();
    if std::env::var_os("UPDATE_TYPINGS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "shapes.d.ts differs from the Rust shapes: run `npm run typings` and commit the result"
    );
}

#[test]
fn a_union_is_one_member_a_line_without_field_docs() {
    let decl =
        "type E = { \"type\": \"a\", /** the id */\nid: string, } | { \"type\": \"b\" } & B;";
    assert_eq!(
        layout(decl),
        "type E =\n  | { \"type\": \"a\", id: string }\n  | { \"type\": \"b\" } & B;"
    );
    assert_eq!(layout("type S = \"x\" | \"y\";"), "type S = \"x\" | \"y\";");
}

#[test]
fn fields_split_outside_nested_types_and_comments() {
    let decl =
        "type X = { /**\n * a, b\n */\na: { b: number, c: string }, d: Array<[number, string]>, };";
    assert_eq!(
        one_field_a_line(decl),
        "type X = {\n  /**\n   * a, b\n   */\n  a: { b: number, c: string }\n  d: Array<[number, string]>\n};"
    );
}
