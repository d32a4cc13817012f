use napi_derive::napi;

/// Kills every child process still running; the JS layer calls it when Node exits.
#[napi(js_name = "endAllProcesses")]
pub fn end_all_processes() -> u32 {
    crate::process::end_all() as u32
}
