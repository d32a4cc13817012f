//! The methods every managed server's class has (`NativeLlamaServer`, `NativeRpcServer`,
//! `NativeDiffusionServer`), written once: each forwards to [`ManagedServer`].
//!
//! [`ManagedServer`]: crate::launch::ManagedServer

/// Adds `stop`, `getInfo`, `getConfig`, `getMemoryUsage`, `isHealthy`, `getLogs` and
/// `clearLogs` to a class whose `inner` is an `Arc` of a [`crate::launch::ManagedServer`];
/// `info` and `config` name the generated shapes of its info and resolved config.
macro_rules! managed_server_methods {
    ($class:ty, info: $info:literal, config: $config:literal) => {
        #[napi_derive::napi]
        impl $class {
            /// Stops the server and waits until its processes are gone. Idempotent.
            #[napi]
            pub async fn stop(&self) -> napi::Result<()> {
                crate::launch::ManagedServer::shut_down(&*self.inner).await;
                Ok(())
            }

            #[napi(ts_return_type = $info)]
            pub fn get_info(&self) -> napi::Result<serde_json::Value> {
                super::error::to_js(&crate::launch::ManagedServer::info(&*self.inner))
            }

            /// The config of the last start; `null` before the first.
            #[napi(ts_return_type = $config)]
            pub fn get_config(&self) -> napi::Result<serde_json::Value> {
                super::error::to_js(&crate::launch::ManagedServer::config(&*self.inner))
            }

            /// What the server's process tree uses now; `null` when none runs.
            #[napi(ts_return_type = "Promise<Shapes.MemoryUsage | null>")]
            pub async fn get_memory_usage(&self) -> napi::Result<serde_json::Value> {
                super::error::to_js(&crate::launch::ManagedServer::memory(&*self.inner).await)
            }

            #[napi]
            pub async fn is_healthy(&self) -> bool {
                crate::launch::ManagedServer::is_healthy(&*self.inner).await
            }

            #[napi]
            pub fn get_logs(&self, lines: u32) -> Vec<String> {
                crate::launch::ManagedServer::logs(&*self.inner, lines as usize)
            }

            #[napi]
            pub fn clear_logs(&self) {
                crate::launch::ManagedServer::clear_logs(&*self.inner)
            }
        }
    };
}

pub(crate) use managed_server_methods;
