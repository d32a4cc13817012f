//! genai-electron: local AI for Electron and Node. Domain modules are plain async Rust;
//! `js` is the only module that knows about Node-API.

pub mod binaries;
pub mod config;
pub mod diffusion;
pub mod download;
pub mod error;
pub mod events;
pub mod files;
pub mod http;
pub mod llama;
pub mod models;
pub mod orchestrator;
pub mod process;
pub mod rpc;
pub mod sync;
pub mod system;
#[cfg(test)]
mod testing;

// The binding has no tests of its own (the JS suite tests it through the built addon), and
// without the napi registration a test build would see its functions as dead code.
#[cfg(not(test))]
mod js;
