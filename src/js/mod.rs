//! The Node-API binding: the only module that imports napi. It converts arguments, forwards to
//! the domain modules, and maps errors; no logic worth testing lives here.
//!
//! Results cross as JSON values serialized from the domain types, so each shape is written once
//! (in Rust with serde) and typed once (in the hand-written `index.d.ts`).

mod binaries;
mod config;
mod diffusion;
mod error;
mod events;
mod llama;
mod models;
mod orchestrator;
mod process;
mod rpc;
mod server;
mod system;
