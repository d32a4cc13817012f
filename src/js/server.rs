//! The methods every managed server's class has (`NativeLlamaServer`, `NativeRpcServer`,
//! `NativeDiffusionServer`), written once: each forwards to [`ManagedServer`].
//!
//! [`ManagedServer`]: crate::launch::ManagedServer

/// Adds `start`, `stop`, `getInfo`, `getConfig`, `getMemoryUsage`, `isHealthy`, `getLogs` and
/// `clearLogs` to a class whose `inner` is an `Arc` of a [`crate::launch::ManagedServer`].
/// `start` decodes the config as `$request`, resolves it with `$resolve` (model, binary, ports)
/// and starts the server; the literals name the generated shapes for the binding's typings.
macro_rules! managed_server_methods {
    (
        $class:ty,
        request: $request:ty,
        resolve: $resolve:path,
        start: $start_args:literal => $started:literal,
        info: $info:literal,
        config: $config:literal $(,)?
    ) => {
        #[napi_derive::napi]
        impl $class {
            #[napi(ts_args_type = $start_args, ts_return_type = $started)]
            pub async fn start(
                &self,
                config: serde_json::Value,
            ) -> napi::Result<serde_json::Value> {
                use super::error::OrEmpty;
                let request: $request = super::error::from_js("config", config.or_empty())?;
                let data = super::config::data_paths().await?;
                let system = super::system::shared();
                let binaries = crate::binaries::BinaryManager::shared();
                let config = $resolve(request, &data, system, binaries)
                    .await
                    .map_err(super::error::to_napi)?;
                let info = self
                    .inner
                    .start(config)
                    .await
                    .map_err(super::error::to_napi)?;
                super::error::to_js(&info)
            }

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
