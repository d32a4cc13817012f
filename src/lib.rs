//! genai-electron: local AI for Electron and Node. Domain modules are plain async Rust;
//! `js` is the only module that knows about Node-API.
//!
//! The modules are declared in layers, bottom to top: a module may use those declared before it,
//! never one declared after it, so there is no import cycle between them.
//! `scripts/check-layers.js` (run by `npm run check`) holds the library to that order.

// Foundations: errors, locks, files, clocks, events, the data folder.
pub mod error;
pub mod sync;
pub mod files;
pub mod clock;
pub mod events;
pub mod config;
// The HTTP stack (our servers and the loopback client) and downloads.
pub mod http;
pub mod download;
// Models on disk, then what the machine (and the RPC workers it may use) can hold.
pub mod models;
pub mod system;
// The one supervisor of child processes, then the backend executables it runs.
pub mod process;
pub mod binaries;
// What every server's start shares: ports, the installed model, refusals.
pub mod launch;
pub mod calibration;
// The servers.
pub mod rpc;
pub mod llama;
pub mod diffusion;
// Images and chat sharing one machine's memory.
pub mod orchestrator;

// Test support: may use every layer; only tests use it.
#[cfg(test)]
mod testing;
// The TypeScript generated from the shapes above (shapes.d.ts), checked by a test.
#[cfg(test)]
mod typings;

// The binding has no tests of its own (the JS suite tests it through the built addon), and
// without the napi registration a test build would see its functions as dead code.
#[cfg(not(test))]
mod js;
