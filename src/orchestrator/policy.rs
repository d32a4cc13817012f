//! The orchestrator's decisions, as pure functions of what it knows: whether the LLM and an image
//! fit together ([`Options::weigh`]), whether an offloaded LLM comes back after a piece of work
//! ([`Options::next`]), and whether an idle resident sd-server must yield to the LLM
//! ([`Options::must_yield`]).

use std::time::Duration;

use super::options::{Options, Policy};
use super::usage::{Bottleneck, Estimate, Memory, ServerUsage, Source, Usage};
use crate::llama::gateway::QueueInfo;
use crate::llama::tasks::Mode;

impl Options {
    /// Whether the running llama servers and an image fit together: on the GPU when any uses it
    /// (VRAM is then what runs out first), else in RAM, with the headroom kept free. When they do
    /// not, the servers to offload are marked ([`choose_offloads`]).
    pub fn weigh(
        &self,
        mut servers: Vec<ServerUsage>,
        diffusion: Usage,
        available: Memory,
        gpu: bool,
    ) -> Estimate {
        let usages = || servers.iter().map(|s| &s.usage).chain([&diffusion]);
        // What the running servers hold is theirs to use again.
        let held = |what: fn(&Usage) -> u64| {
            usages()
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
        let bottleneck = if gpu && usages().any(|u| u.vram > 0) {
            Bottleneck::Vram
        } else {
            Bottleneck::Ram
        };
        let need = usages().map(|u| bottleneck.of(u)).sum::<u64>() + self.headroom;
        let over = need.saturating_sub(bottleneck.of_memory(budget));
        for chosen in choose_offloads(&servers, over, bottleneck) {
            servers[chosen].offload = true;
        }
        Estimate {
            llm: Usage::total(servers.iter().map(|s| &s.usage)),
            needs_offload: servers.iter().any(|s| s.offload),
            servers,
            diffusion,
            available,
            budget,
            bottleneck,
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
        let on = |memory| bottleneck.of_memory(memory);
        let budget = match bottleneck {
            Bottleneck::Ram => self.ram_budget,
            Bottleneck::Vram => self.vram_budget,
        };
        bottleneck.of(&llm) + on(held) + self.headroom > budget.unwrap_or(on(free) + on(held))
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

/// Which running llama servers go so that `over` bytes of the bottleneck are freed (none when
/// nothing is over). Chat servers go first: they are the large ones, and a chat held for a few
/// seconds is what their users already expect, where an embedding or rerank server answers
/// searches that should not wait. Within each kind, a server that alone frees enough goes
/// (the one idle longest, whose clients miss it least), else the largest goes and the rest is
/// chosen again. Last, any that the others chosen make unnecessary stays (smallest first).
pub fn choose_offloads(servers: &[ServerUsage], over: u64, bottleneck: Bottleneck) -> Vec<usize> {
    let size = |i: usize| bottleneck.of(&servers[i].usage);
    let mut chosen = Vec::new();
    let mut freed = 0;
    for chat in [true, false] {
        let mut left: Vec<usize> = (0..servers.len())
            .filter(|&i| (servers[i].mode == Mode::Chat) == chat)
            .collect();
        while freed < over && !left.is_empty() {
            let short = over - freed;
            let enough = left
                .iter()
                .copied()
                .filter(|&i| size(i) >= short)
                .max_by_key(|&i| (servers[i].idle_ms, std::cmp::Reverse(i)));
            let pick = enough.unwrap_or_else(|| {
                let largest = left.iter().copied();
                largest
                    .max_by_key(|&i| (size(i), std::cmp::Reverse(i)))
                    .expect("not empty")
            });
            left.retain(|&i| i != pick);
            freed += size(pick);
            chosen.push(pick);
        }
    }
    let mut smallest_first = chosen.clone();
    smallest_first.sort_by_key(|&i| size(i));
    for i in smallest_first {
        if freed - size(i) >= over {
            freed -= size(i);
            chosen.retain(|&c| c != i);
        }
    }
    chosen
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

    fn server(server: usize, mode: Mode, usage: Usage, idle_ms: u64) -> ServerUsage {
        ServerUsage {
            server,
            mode,
            port: None,
            usage,
            idle_ms,
            offload: false,
        }
    }

    fn chat(usage: Usage) -> ServerUsage {
        server(0, Mode::Chat, usage, 0)
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
        let e = options.weigh(vec![chat(llm)], image, free, true);
        assert_eq!(e.bottleneck, Bottleneck::Vram);
        assert_eq!(
            e.budget.vram,
            11 * GB,
            "what is free plus what the LLM holds"
        );
        assert!(!e.needs_offload, "5 + 4 of 11 GB fits");
        let big = usage(GB, 7 * GB, Source::Estimated);
        assert!(
            options
                .weigh(vec![chat(llm)], big, free, true)
                .needs_offload
        );
        // The same figures without a usable GPU: both run on the CPU, RAM decides.
        let e = options.weigh(vec![chat(llm)], big, free, false);
        assert_eq!(e.bottleneck, Bottleneck::Ram);
        assert!(!e.needs_offload);
        // Nothing on the GPU: RAM decides even where a GPU is present.
        let cpu = |ram| usage(ram, 0, Source::Measured);
        let e = options.weigh(vec![chat(cpu(40 * GB))], cpu(30 * GB), free, true);
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
        let e = capped.weigh(vec![chat(llm)], image, free, true);
        assert_eq!(e.budget.vram, 10 * GB);
        assert!(e.needs_offload, "5 + 4 and 2 of headroom > 10");
        // An LLM that does not run is never offloaded.
        assert!(!capped.weigh(vec![], big, free, true).needs_offload);
    }

    #[test]
    fn the_chat_server_goes_first_and_only_what_the_image_needs_goes() {
        const MB: u64 = 1 << 20;
        let options = Options::resolve(OptionsRequest {
            headroom: Some(0.0),
            ram_budget_bytes: Some((1000 * MB) as f64),
            ..Default::default()
        })
        .unwrap();
        let ram = |mb| usage(mb * MB, 0, Source::Measured);
        // A chat server of 400 MB, an embedding server of 300 MB idle for a minute, a reranker
        // of 50 MB idle for longer.
        let servers = || {
            vec![
                server(0, Mode::Chat, ram(400), 1_000),
                server(1, Mode::Embedding, ram(300), 60_000),
                server(2, Mode::Rerank, ram(50), 120_000),
            ]
        };
        let marked = |image_mb| {
            let e = options.weigh(servers(), ram(image_mb), Memory { ram: 0, vram: 0 }, false);
            let offloaded = e.servers.iter().filter(|s| s.offload).map(|s| s.server);
            let offloaded = offloaded.collect::<Vec<_>>();
            assert_eq!(e.needs_offload, !offloaded.is_empty());
            assert_eq!(e.llm.ram, 750 * MB, "the three together");
            offloaded
        };
        assert_eq!(marked(250), Vec::<usize>::new(), "750 + 250 fit in 1000");
        // 100 over: the chat server goes, though the reranker alone would free enough.
        assert_eq!(marked(350), vec![0]);
        assert_eq!(
            marked(650),
            vec![0],
            "400 over: the chat server alone frees it"
        );
        // 450 over: chat, then 50 more, which either other frees: the reranker, idle longer.
        assert_eq!(marked(700), vec![0, 2]);
        // 470 over: chat, then 70 more: only the embedding server frees that.
        assert_eq!(marked(720), vec![0, 1]);
        // 720 over: chat (400) and embedding (300) are 20 short: the reranker goes too.
        assert_eq!(marked(970), vec![0, 1, 2]);
        // More than all of them hold: all go (the image then waits for what is freed).
        assert_eq!(marked(5000), vec![0, 1, 2]);
    }

    #[test]
    fn among_servers_that_each_free_enough_the_longest_idle_goes_and_unneeded_ones_stay() {
        let (options, free) = (
            Options::resolve(OptionsRequest {
                headroom: Some(0.0),
                ram_budget_bytes: Some(1000.0),
                ..Default::default()
            })
            .unwrap(),
            Memory { ram: 0, vram: 0 },
        );
        let ram = |bytes| usage(bytes, 0, Source::Estimated);
        let chosen = |servers: Vec<ServerUsage>, image| {
            let e = options.weigh(servers, ram(image), free, false);
            e.servers
                .iter()
                .filter(|s| s.offload)
                .map(|s| s.server)
                .collect::<Vec<_>>()
        };
        // Two chat servers: each frees the 100 over, the one idle longer goes.
        let two = |idle_a, idle_b| {
            vec![
                server(0, Mode::Chat, ram(300), idle_a),
                server(1, Mode::Chat, ram(200), idle_b),
            ]
        };
        assert_eq!(chosen(two(10, 20), 600), vec![1]);
        assert_eq!(chosen(two(20, 10), 600), vec![0]);
        // 250 over: only the 300 one frees it alone.
        assert_eq!(chosen(two(10, 20), 750), vec![0]);
        // A small chat server is not enough, and the embedding server that must go anyway
        // frees it all: the chat server stays.
        let mixed = vec![
            server(0, Mode::Chat, ram(50), 0),
            server(1, Mode::Embedding, ram(600), 0),
        ];
        assert_eq!(chosen(mixed, 800), vec![1], "450 over");
    }

    #[test]
    fn usages_add_up_and_the_least_certain_source_counts() {
        let total = Usage::total([
            &usage(1, 2, Source::Measured),
            &usage(10, 20, Source::Projected),
        ]);
        assert_eq!((total.ram, total.vram), (11, 22));
        assert_eq!(total.source, Source::Projected);
        assert_eq!(total.measured, None, "one of them is not measured");
        let measured = Usage::total([
            &usage(1, 0, Source::Measured),
            &usage(2, 0, Source::Measured),
        ]);
        assert_eq!(
            (measured.source, measured.measured.map(|m| m.ram)),
            (Source::Measured, Some(3))
        );
        let estimated = Usage::total([
            &usage(1, 0, Source::Projected),
            &usage(2, 0, Source::Estimated),
        ]);
        assert_eq!(estimated.source, Source::Estimated);
        assert_eq!(Usage::total([]), Usage::NONE);
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
