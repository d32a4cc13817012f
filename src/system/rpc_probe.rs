//! Asks an rpc-server what memory it lends, in ggml's RPC protocol: the questions llama-server
//! itself asks before it spreads a model's layers over the workers (HELLO, DEVICE_COUNT, then
//! GET_DEVICE_MEMORY for each device).
//!
//! A request is `cmd: u8 | size: u64 | data`, an answer `size: u64 | data`, all little-endian
//! (`ggml/src/ggml-rpc/ggml-rpc.cpp`). rpc-server serves one client at a time: a worker that
//! another llama-server holds accepts the connection (the kernel queues it) but never answers.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::{Map, Value};

use crate::error::{Coded, ErrorCode};

/// The protocol version whose messages this module knows (llama.cpp's `RPC_PROTO_MAJOR_VERSION`).
pub const PROTOCOL_MAJOR: u8 = 7;
const CMD_GET_DEVICE_MEMORY: u8 = 11;
const CMD_HELLO: u8 = 14;
const CMD_DEVICE_COUNT: u8 = 15;
/// Transport capabilities exchanged in HELLO; zeros ask for plain TCP.
const CONN_CAPS: usize = 24;
/// More devices than any machine lends; a larger count is a garbled answer.
const MAX_DEVICES: u32 = 256;

/// What one device of a worker reports, in bytes. A CPU device reports all of its RAM as free,
/// as llama.cpp does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("it does not accept connections")]
    Unreachable,
    /// Connected, but no answer in time: another client holds it.
    #[error("it accepted the connection but did not answer within {0:?}")]
    Busy(Duration),
    /// Another protocol version, or a garbled answer: its memory is unknown.
    #[error("it speaks an RPC protocol this library does not read ({0})")]
    Protocol(String),
}

/// A worker that cannot be used, for sizing a split and for starting one alike.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the RPC worker {worker} cannot be used: {problem}")]
pub struct RpcWorkerError {
    pub worker: String,
    pub problem: ProbeError,
}

impl Coded for RpcWorkerError {
    fn code(&self) -> ErrorCode {
        match self.problem {
            ProbeError::Unreachable => ErrorCode::RpcWorkerUnreachable,
            ProbeError::Busy(_) => ErrorCode::RpcWorkerBusy,
            ProbeError::Protocol(_) => ErrorCode::RpcWorkerIncompatible,
        }
    }

    fn suggestion(&self) -> Option<String> {
        Some(
            match self.problem {
                ProbeError::Unreachable => {
                    "Start rpc-server on that machine (rpcServer.start) and check that this one can reach its host and port"
                }
                ProbeError::Busy(_) => {
                    "rpc-server serves one llama-server at a time: stop the one using it, or start another worker"
                }
                ProbeError::Protocol(_) => {
                    "Run the same llama.cpp version on the worker as here (binaries.ensureBinary('rpc-server'))"
                }
            }
            .into(),
        )
    }

    fn details(&self) -> Map<String, Value> {
        let mut details = Map::new();
        details.insert("worker".into(), Value::String(self.worker.clone()));
        details
    }
}

/// `host:port` (an IPv6 host in brackets), as llama-server's `--rpc` takes it.
pub fn check_rpc_worker(worker: &str) -> Result<(), String> {
    let bad = || format!("rpcWorkers entries are 'host:port', got {worker:?}");
    let (host, port) = worker.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty() && !host.contains(',') && !host.contains(char::is_whitespace);
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// The memory of each device `endpoint` (`host:port`) lends, in the order llama-server numbers
/// them. Each step waits at most `timeout`.
pub async fn device_memory(
    endpoint: &str,
    timeout: Duration,
) -> Result<Vec<DeviceMemory>, ProbeError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(endpoint))
        .await
        .map_err(|_| ProbeError::Unreachable)?
        .map_err(|_| ProbeError::Unreachable)?;
    let mut talk = Conversation { stream, timeout };
    let answer = talk.devices().await;
    if matches!(answer, Err(ProbeError::Busy(_))) {
        // Close with a reset: the queued connection is then dropped unanswered. A plain close
        // would leave our HELLO for rpc-server to answer later, into a closed socket, and its
        // second write there raises SIGPIPE, which rpc-server does not ignore.
        let _ = talk.stream.set_zero_linger();
    }
    answer
}

struct Conversation {
    stream: TcpStream,
    timeout: Duration,
}

impl Conversation {
    async fn devices(&mut self) -> Result<Vec<DeviceMemory>, ProbeError> {
        let hello = self.ask(CMD_HELLO, &[0; CONN_CAPS], 4 + CONN_CAPS).await?;
        let (major, minor, patch) = (hello[0], hello[1], hello[2]);
        if major != PROTOCOL_MAJOR {
            return Err(ProbeError::Protocol(format!(
                "version {major}.{minor}.{patch}, this library reads {PROTOCOL_MAJOR}.x"
            )));
        }
        let count = u32::from_le_bytes(word(&self.ask(CMD_DEVICE_COUNT, &[], 4).await?));
        if count > MAX_DEVICES {
            return Err(ProbeError::Protocol(format!("{count} devices")));
        }
        let mut devices = Vec::with_capacity(count as usize);
        for device in 0..count {
            let memory = self
                .ask(CMD_GET_DEVICE_MEMORY, &device.to_le_bytes(), 16)
                .await?;
            devices.push(DeviceMemory {
                free: u64::from_le_bytes(memory[..8].try_into().expect("8 bytes")),
                total: u64::from_le_bytes(memory[8..].try_into().expect("8 bytes")),
            });
        }
        Ok(devices)
    }

    /// Sends one command and reads its answer, which must be `expected` bytes long.
    async fn ask(&mut self, cmd: u8, data: &[u8], expected: usize) -> Result<Vec<u8>, ProbeError> {
        let mut request = Vec::with_capacity(9 + data.len());
        request.push(cmd);
        request.extend((data.len() as u64).to_le_bytes());
        request.extend(data);
        let exchange = async {
            self.stream.write_all(&request).await?;
            let mut size = [0u8; 8];
            self.stream.read_exact(&mut size).await?;
            let size = u64::from_le_bytes(size);
            if size != expected as u64 {
                return Ok(Err(size));
            }
            let mut answer = vec![0u8; expected];
            self.stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(Ok(answer))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(ProbeError::Busy(self.timeout)),
            Ok(Err(e)) => Err(ProbeError::Protocol(format!(
                "the connection ended at command {cmd}: {e}"
            ))),
            Ok(Ok(Err(size))) => Err(ProbeError::Protocol(format!(
                "command {cmd} was answered with {size} bytes, {expected} expected"
            ))),
            Ok(Ok(Ok(answer))) => Ok(answer),
        }
    }
}

fn word(bytes: &[u8]) -> [u8; 4] {
    bytes[..4].try_into().expect("4 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fake_rpc_worker as fake_worker;
    use tokio::net::TcpListener;

    const STEP: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn reads_each_device_of_a_worker() {
        let worker = fake_worker(7, vec![(3 << 30, 8 << 30), (5 << 30, 5 << 30)]).await;
        let devices = device_memory(&worker, STEP).await.unwrap();
        assert_eq!(
            devices,
            vec![
                DeviceMemory {
                    free: 3 << 30,
                    total: 8 << 30
                },
                DeviceMemory {
                    free: 5 << 30,
                    total: 5 << 30
                },
            ]
        );
    }

    #[tokio::test]
    async fn another_protocol_version_is_not_read() {
        let worker = fake_worker(8, vec![(1, 1)]).await;
        let err = device_memory(&worker, STEP).await.unwrap_err();
        assert!(
            matches!(&err, ProbeError::Protocol(m) if m.contains("8.0.0")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_one_busy() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert_eq!(
            device_memory(&address, STEP).await,
            Err(ProbeError::Unreachable)
        );

        // Listens but never accepts: the kernel queues the connection, as for a held worker.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let wait = Duration::from_millis(300);
        assert_eq!(
            device_memory(&address, wait).await,
            Err(ProbeError::Busy(wait))
        );
    }

    #[tokio::test]
    async fn a_worker_that_hangs_up_speaks_another_protocol() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            // An older rpc-server closes on a HELLO of a size it does not expect.
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let err = device_memory(&address, STEP).await.unwrap_err();
        assert!(matches!(err, ProbeError::Protocol(_)), "{err}");
    }
}
