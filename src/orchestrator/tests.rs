//! The orchestrator against the real llama-server and sd-cli with the tiny models.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::diffusion::DiffusionServer;
use crate::launch::ManagedServer;
use crate::llama::LlamaServer;
use crate::process::ServerState;
use crate::system::SystemInfo;
use crate::testing::image as image_request;

/// The real llama-server behind its gateway and a one-shot sd-cli server with the tiny
/// models, and an orchestrator over them under `options` whose events are recorded by name;
/// `None` (the test skips) without the real backends.
struct Real {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _tmp: tempfile::TempDir,
    data: DataPaths,
    llama: Arc<LlamaServer>,
    diffusion: Arc<DiffusionServer>,
    first: ServerInfo,
    orchestrator: Orchestrator,
    events: Arc<Mutex<Vec<String>>>,
}

async fn real(options: OptionsRequest) -> Option<Real> {
    let (Some((binary, model)), Some(b)) =
        (crate::llama::tests::real(), crate::diffusion::tests::real())
    else {
        return None;
    };
    let serial = crate::diffusion::tests::SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = DataPaths::new(tmp.path().into(), crate::config::DataDirSource::Configured);
    let llama = Arc::new(LlamaServer::new(None));
    let diffusion = Arc::new(DiffusionServer::new(None));
    let mut llm = crate::llama::tests::config(binary, model);
    llm.gateway = true;
    let first = llama.start(llm).await.unwrap();
    let kind = crate::diffusion::backend::BackendKind::OneShot;
    diffusion
        .start(crate::diffusion::tests::config(&b, kind, tmp.path()))
        .await
        .unwrap();
    let system: &'static SystemInfo = Box::leak(Box::new(SystemInfo::new(vec![])));
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = events.clone();
    let servers = Servers {
        llamas: vec![llama.clone()],
        diffusion: diffusion.clone(),
        system,
        binaries: crate::binaries::BinaryManager::shared(),
    };
    let orchestrator = Orchestrator::new(
        servers,
        Options::resolve(options).unwrap(),
        Some(EventSink::new(move |e: OrchestratorEvent| {
            lock(&sink).push(match e {
                OrchestratorEvent::Phase { phase: p } => format!("{p:?}"),
                OrchestratorEvent::Offload(_) => "offload".into(),
                OrchestratorEvent::Reload { .. } => "reload".into(),
                OrchestratorEvent::ReloadFailed { error: e, .. } => format!("reload-failed {e}"),
                OrchestratorEvent::DiffusionReleased { reason: r } => format!("released {r:?}"),
            })
        })),
    );
    Some(Real {
        _serial: serial,
        _tmp: tmp,
        data,
        llama,
        diffusion,
        first,
        orchestrator,
        events,
    })
}

/// The real llama-server (behind its gateway) and sd-cli, with the tiny models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_does_not_fit_offloads_and_reloads_the_llm_and_a_chat_waits_for_it() {
    let Some(Real {
        data,
        llama,
        diffusion,
        first,
        orchestrator,
        events,
        ..
    }) = real(OptionsRequest {
        ram_budget_bytes: Some(1e6),
        headroom: Some(0.0),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let request =
        json!({ "prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "cfgScale": 1 });
    let estimate = orchestrator
        .estimate(
            &ImageShape {
                width: 64,
                height: 64,
                ..Default::default()
            },
            &data,
        )
        .await;
    assert!(estimate.needs_offload, "{estimate:?}");
    assert_eq!(estimate.llm.source, Source::Measured);
    assert_eq!(estimate.diffusion.source, Source::Estimated);
    assert_eq!(estimate.bottleneck, Bottleneck::Ram);

    let port = first.port.unwrap();
    let chat = async {
        // Sent once the LLM is held: it waits for the reload.
        let mut status = orchestrator.status.clone();
        status.wait_for(|s| s.phase != Phase::Idle).await.unwrap();
        crate::http::local_client()
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .body(r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}"#)
            .send()
            .await
            .unwrap()
            .status()
    };
    let (image, status) = tokio::join!(
        orchestrator.generate(image_request(&request), "img_orchestrated".into()),
        chat
    );
    assert_eq!(image.unwrap().width, 64);
    assert_eq!(status, 200);
    let after = llama.info();
    assert_eq!(
        (after.status, after.port),
        (ServerState::Running, Some(port))
    );
    assert_ne!(after.pid, first.pid);
    assert!(orchestrator.saved_state().is_none());
    assert_eq!(
        *lock(&events),
        [
            "Draining",
            "offload",
            "Offloading",
            "Generating",
            "Reloading",
            "reload",
            "Idle"
        ]
    );
    // Cancelled as soon as it is queued: it never asks for its turn, and nothing stops.
    let pending = orchestrator.queue_image(image_request(&request), "img_early".into());
    assert!(orchestrator.cancel("img_early"));
    assert!(pending.outcome().await.unwrap_err().cancelled);
    assert_eq!(llama.info().status, ServerState::Running);
    llama.stop().await;
    diffusion.stop().await;
}

/// Collated images behind one offload, in the order queued; a cancelled waiting image
/// leaves at once; with `reloadAfterIdle` the LLM stays out until the idle time is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_runs_behind_one_offload_and_the_llm_returns_after_the_idle_time() {
    let Some(Real {
        llama,
        diffusion,
        orchestrator,
        events,
        ..
    }) = real(OptionsRequest {
        ram_budget_bytes: Some(1e6),
        headroom: Some(0.0),
        reload_after_idle: Some(400),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let request = |seed: u32| json!({ "prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "cfgScale": 1, "seed": seed });
    let images: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, id)| orchestrator.queue_image(image_request(&request(i as u32)), id.into()))
        .collect();
    // The first is being made, the others wait (the diffusion server's queue and the
    // orchestrator's count them a moment apart: polled until both agree).
    let settled = |waiting: usize| {
        let orchestrator = &orchestrator;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                orchestrator.sync().await;
                if orchestrator.phase() == Phase::Generating
                    && orchestrator.images_waiting() == waiting
                {
                    return true;
                }
                if tokio::time::Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(settled(2).await, "{:?}", lock(&events));
    assert!(orchestrator.cancel("c"));
    assert!(
        settled(1).await,
        "a cancelled image does not count: {:?}",
        lock(&events)
    );
    let mut outcomes = Vec::new();
    for image in images {
        // A generous deadline: an image that never ends fails here, with what happened.
        let Ok(outcome) = tokio::time::timeout(Duration::from_secs(60), image.outcome()).await
        else {
            panic!("image {} never ended: {:?}", outcomes.len(), lock(&events));
        };
        outcomes.push(outcome);
    }
    assert_eq!(outcomes[0].as_ref().unwrap().seeds, [0]);
    assert_eq!(outcomes[1].as_ref().unwrap().seeds, [1]);
    assert!(outcomes[2].as_ref().unwrap_err().cancelled);
    assert_eq!(orchestrator.phase(), Phase::Offloaded);
    assert!(llama.is_offloaded());
    // Nothing comes: the idle time brings it back.
    let mut status = orchestrator.status.clone();
    let idle = status.wait_for(|s| s.phase == Phase::Idle);
    // The watch's read guard is let go at once: held, it would block the worker's next phase
    // change, and the borrows below behind it (a deadlock seen in CI).
    let waited = tokio::time::timeout(Duration::from_secs(30), idle)
        .await
        .map(|reached| reached.is_ok());
    assert!(matches!(waited, Ok(true)), "{:?}", lock(&events));
    assert_eq!(llama.info().status, ServerState::Running);
    let seen = lock(&events).clone();
    assert_eq!(
        seen.iter().filter(|e| *e == "offload").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|e| *e == "reload").count(), 1);
    assert_eq!(
        seen.iter().filter(|e| *e == "Generating").count(),
        2,
        "{seen:?}"
    );
    assert!(orchestrator.saved_state().is_none());
    drop(orchestrator);
    llama.stop().await;
    diffusion.stop().await;
}
