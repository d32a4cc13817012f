//! The orchestrator's decisions, as pure functions of what it knows: whether the LLM and an image
//! fit together ([`Options::weigh`]), whether an offloaded LLM comes back after a piece of work
//! ([`Options::next`]), and whether an idle resident sd-server must yield to the LLM
//! ([`Options::must_yield`]).

use std::time::Duration;

use super::options::{Options, Policy};
use super::usage::{Bottleneck, Estimate, Memory, Source, Usage};
use crate::llama::gateway::QueueInfo;

impl Options {
    /// Whether the two fit: on the GPU when either uses it (VRAM is then what runs out first),
    /// else in RAM, with the headroom kept free; only a running LLM is offloaded.
    pub fn weigh(
        &self,
        llm: Usage,
        diffusion: Usage,
        available: Memory,
        gpu: bool,
        llm_running: bool,
    ) -> Estimate {
        // What the running servers hold is theirs to use again.
        let held = |what: fn(&Usage) -> u64| {
            [&llm, &diffusion]
                .into_iter()
                .filter(|u| u.source == Source::Measured)
                .map(what)
                .sum::<u64>()
        };
        let budget = Memory {
            ram: self.ram_budget.unwrap_or(available.ram + held(|u| u.ram)),
            vram: self
                .vram_budget
                .unwrap_or(available.vram + held(|u| u.vram)),
        };
        let bottleneck = if gpu && (llm.vram > 0 || diffusion.vram > 0) {
            Bottleneck::Vram
        } else {
            Bottleneck::Ram
        };
        let (need, room) = match bottleneck {
            Bottleneck::Ram => (llm.ram + diffusion.ram, budget.ram),
            Bottleneck::Vram => (llm.vram + diffusion.vram, budget.vram),
        };
        Estimate {
            llm,
            diffusion,
            available,
            budget,
            bottleneck,
            needs_offload: llm_running && need + self.headroom > room,
        }
    }

    /// Whether an idle resident sd-server holding `held` must stop so that the LLM (`llm`) can
    /// come back or start: they do not fit together in the budget (or in what is `free` plus
    /// what the sd-server holds), with the headroom, on the `bottleneck`.
    pub fn must_yield(
        &self,
        llm: Usage,
        held: Memory,
        free: Memory,
        bottleneck: Bottleneck,
    ) -> bool {
        let (need, room) = match bottleneck {
            Bottleneck::Ram => (
                llm.ram + held.ram,
                self.ram_budget.unwrap_or(free.ram + held.ram),
            ),
            Bottleneck::Vram => (
                llm.vram + held.vram,
                self.vram_budget.unwrap_or(free.vram + held.vram),
            ),
        };
        need + self.headroom > room
    }
}

/// What happens to an offloaded LLM when the orchestrator has finished a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Reload,
    StayOffloaded,
}

/// What the orchestrator knows when it decides: the work waiting behind it, the chat requests
/// held at the gateway, and whether an idle LLM may stay offloaded.
#[derive(Debug, Clone, Copy)]
pub struct Situation {
    pub images_waiting: usize,
    pub starts_waiting: bool,
    pub chat: QueueInfo,
    /// `reloadAfterIdle` is set and has not run out since the last work.
    pub may_idle_offloaded: bool,
    /// The app offloaded the LLM itself and has not called `reloadLLM()` yet.
    pub held_by_app: bool,
}

impl Options {
    /// The swap policy: collate images while the LLM is out, unless a chat request has waited
    /// `maxChatWait`; with nothing to do, reload at once, or after a chat or the idle time.
    pub fn next(&self, now: Situation) -> Next {
        let starving = now.chat.length > 0
            && Duration::from_millis(now.chat.longest_wait_ms) >= self.max_chat_wait;
        if now.starts_waiting {
            Next::Reload
        } else if now.held_by_app {
            Next::StayOffloaded
        } else if now.images_waiting > 0 {
            match self.policy {
                Policy::Collate if !starving => Next::StayOffloaded,
                _ => Next::Reload,
            }
        } else if now.chat.length == 0 && now.may_idle_offloaded {
            Next::StayOffloaded
        } else {
            Next::Reload
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::options::OptionsRequest;

    fn usage(ram: u64, vram: u64, source: Source) -> Usage {
        let memory = Memory { ram, vram };
        Usage {
            ram,
            vram,
            source,
            estimated: memory,
            measured: (source == Source::Measured).then_some(memory),
        }
    }

    #[test]
    fn the_gpu_decides_when_the_servers_use_it_and_ram_otherwise() {
        const GB: u64 = 1 << 30;
        let options = Options::resolve(OptionsRequest {
            headroom: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        // 6 GB of VRAM free beside an LLM that holds 5 GB of it: an image needing 4 GB does not
        // fit (11 GB of VRAM in all), though RAM has plenty.
        let free = Memory {
            ram: 64 * GB,
            vram: 6 * GB,
        };
        let llm = usage(GB, 5 * GB, Source::Measured);
        let image = usage(GB, 4 * GB, Source::Estimated);
        let e = options.weigh(llm, image, free, true, true);
        assert_eq!(e.bottleneck, Bottleneck::Vram);
        assert_eq!(
            e.budget.vram,
            11 * GB,
            "what is free plus what the LLM holds"
        );
        assert!(!e.needs_offload, "5 + 4 of 11 GB fits");
        let big = usage(GB, 7 * GB, Source::Estimated);
        assert!(options.weigh(llm, big, free, true, true).needs_offload);
        // The same figures without a usable GPU: both run on the CPU, RAM decides.
        let e = options.weigh(llm, big, free, false, true);
        assert_eq!(e.bottleneck, Bottleneck::Ram);
        assert!(!e.needs_offload);
        // Nothing on the GPU: RAM decides even where a GPU is present.
        let cpu = |ram| usage(ram, 0, Source::Measured);
        let e = options.weigh(cpu(40 * GB), cpu(30 * GB), free, true, true);
        assert_eq!(e.bottleneck, Bottleneck::Ram);
        assert_eq!(e.budget.ram, 134 * GB);
        assert!(!e.needs_offload);
        // A VRAM budget caps what the machine has, and the headroom counts.
        let capped = Options::resolve(OptionsRequest {
            vram_budget_bytes: Some((10 * GB) as f64),
            headroom: Some((2 * GB) as f64),
            ..Default::default()
        })
        .unwrap();
        let e = capped.weigh(llm, image, free, true, true);
        assert_eq!(e.budget.vram, 10 * GB);
        assert!(e.needs_offload, "5 + 4 and 2 of headroom > 10");
        // An LLM that does not run is never offloaded.
        assert!(!capped.weigh(llm, big, free, true, false).needs_offload);
    }

    fn situation(images: usize, chat: usize, waited_ms: u64, idle: bool) -> Situation {
        Situation {
            images_waiting: images,
            starts_waiting: false,
            chat: QueueInfo {
                length: chat,
                longest_wait_ms: waited_ms,
            },
            may_idle_offloaded: idle,
            held_by_app: false,
        }
    }

    #[test]
    fn collate_keeps_the_llm_out_while_images_wait_unless_a_chat_has_waited_too_long() {
        let options = |policy: &str| {
            Options::resolve(OptionsRequest {
                policy: Some(policy.into()),
                max_chat_wait: Some(1_000),
                ..Default::default()
            })
            .unwrap()
        };
        let (collate, fifo) = (options("collate"), options("fifo"));
        use Next::{Reload, StayOffloaded};
        // Images waiting: collate keeps it out, fifo brings it back after each.
        assert_eq!(collate.next(situation(3, 0, 0, false)), StayOffloaded);
        assert_eq!(fifo.next(situation(3, 0, 0, false)), Reload);
        // A chat that has not waited maxChatWait yet does not cut in; one that has, does.
        assert_eq!(collate.next(situation(3, 1, 999, false)), StayOffloaded);
        assert_eq!(collate.next(situation(3, 1, 1_000, false)), Reload);
        // Nothing waits: back at once, unless it may idle out (reloadAfterIdle) and no chat waits.
        assert_eq!(collate.next(situation(0, 0, 0, false)), Reload);
        assert_eq!(collate.next(situation(0, 0, 0, true)), StayOffloaded);
        assert_eq!(fifo.next(situation(0, 0, 0, true)), StayOffloaded);
        assert_eq!(collate.next(situation(0, 1, 0, true)), Reload);
        // A start of the LLM waits behind: it comes back first.
        let start = Situation {
            starts_waiting: true,
            ..situation(3, 0, 0, true)
        };
        assert_eq!(collate.next(start), Reload);
        // Offloaded by the app (`offloadLLM()`): out, whatever chat waits, until `reloadLLM()`
        // (or a start through the orchestrator).
        let held = Situation {
            held_by_app: true,
            ..situation(0, 1, 60_000, false)
        };
        assert_eq!(fifo.next(held), StayOffloaded);
        assert_eq!(
            collate.next(Situation {
                starts_waiting: true,
                ..held
            }),
            Reload
        );
    }

    #[test]
    fn an_idle_sd_server_yields_when_it_and_the_llm_do_not_fit_on_the_bottleneck() {
        const GB: u64 = 1 << 30;
        let options = Options::resolve(OptionsRequest {
            headroom: Some(GB as f64),
            ..Default::default()
        })
        .unwrap();
        let llm = usage(4 * GB, 6 * GB, Source::Estimated);
        let held = Memory {
            ram: 2 * GB,
            vram: 3 * GB,
        };
        let free = Memory {
            ram: 8 * GB,
            vram: 8 * GB,
        };
        // RAM: 4 + 2 + 1 of headroom fit in 8 free + 2 held.
        assert!(!options.must_yield(llm, held, free, Bottleneck::Ram));
        // VRAM: 6 + 3 + 1 fit in 8 free + 3 held.
        assert!(!options.must_yield(llm, held, free, Bottleneck::Vram));
        let tight = Memory {
            ram: 8 * GB,
            vram: 6 * GB,
        };
        assert!(
            options.must_yield(llm, held, tight, Bottleneck::Vram),
            "6 + 3 + 1 > 6 + 3"
        );
        // A budget caps the room, whatever is free.
        let capped = Options::resolve(OptionsRequest {
            ram_budget_bytes: Some((5 * GB) as f64),
            headroom: Some(0.0),
            ..Default::default()
        })
        .unwrap();
        assert!(
            capped.must_yield(llm, held, free, Bottleneck::Ram),
            "4 + 2 > 5"
        );
    }
}
