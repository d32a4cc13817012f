//! The Node-API binding: the only module that imports napi. It converts arguments, forwards to
//! the domain modules, and maps errors; no logic worth testing lives here.
//!
//! Results cross as JSON values serialized from the domain types, so each shape is written once
//! (in Rust with serde) and typed once: generated into `shapes.d.ts` (`src/typings.rs`) for the
//! shapes moved there so far, by hand in `index.d.ts` for the rest.

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
