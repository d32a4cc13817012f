//! Progress from stable-diffusion.cpp's output. Its bar is redrawn with `\r` (the supervisor
//! splits lines on `\r` and `\n` and strips ANSI), and reads `|====>   | 3/20 - 1.25s/it`:
//! a byte speed (`MB/s`) while tensors load, an iteration speed (`it/s`, `s/it`) while sampling.
//! Log lines tell the rest: `generating image: 2/4 - seed 43` (which image of a batch),
//! `decoding 4 latents`, `latent 1 decoded`; with a hires fix, a second pass over every image
//! follows the first (`hires fix: upscaling to 96x96`, `hires sampling 1/2 completed`).

use serde::Serialize;

/// Where a generation is: loading the model, sampling (one step per iteration), decoding latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "lowercase")]
#[ts(rename = "ImageGenerationStage")]
pub enum Stage {
    Loading,
    Diffusion,
    Decoding,
}

/// How far an image request is.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ImageProgress")]
pub struct Progress {
    pub stage: Stage,
    pub current_step: u32,
    pub total_steps: u32,
    /// Which image of the request (1-based) is being made.
    pub current_image: u32,
    /// The images the request makes (`count`).
    pub total_images: u32,
    /// The whole request, 0–100: loading counts 10%, each image's sampling and decoding the rest.
    pub percentage: f64,
}

/// Reads lines of one generation and says when progress moved.
#[derive(Debug)]
pub struct ProgressParser {
    count: u32,
    image: u32,
    stage: Stage,
    /// A hires fix was asked: sampling is two passes, each half of it.
    hires: bool,
    /// The second pass has begun.
    in_hires_pass: bool,
}

impl ProgressParser {
    pub fn new(count: u32, hires: bool) -> Self {
        ProgressParser {
            count: count.max(1),
            image: 1,
            stage: Stage::Loading,
            hires,
            in_hires_pass: false,
        }
    }

    pub fn feed(&mut self, line: &str) -> Option<Progress> {
        if after(line, "hires fix: upscaling to ").is_some() {
            (self.in_hires_pass, self.image, self.stage) = (true, 1, Stage::Diffusion);
            return None;
        }
        if let Some(done) = after(line, "hires sampling ")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(k, _)| k.trim().parse::<u32>().ok())
        {
            self.image = (done + 1).min(self.count);
            return None;
        }
        if let Some((current, total, unit)) = parse_bar(line) {
            let stage = if unit.ends_with("B/s") {
                Stage::Loading
            } else if self.stage == Stage::Decoding {
                Stage::Decoding
            } else {
                Stage::Diffusion
            };
            self.stage = stage;
            return Some(self.progress(stage, current, total));
        }
        if let Some(rest) = after(line, "generating image: ") {
            if let Some(i) = rest
                .split_once('/')
                .and_then(|(i, _)| i.trim().parse().ok())
            {
                self.image = i;
            }
            self.stage = Stage::Diffusion;
            return None;
        }
        if let Some(n) = after(line, "decoding ")
            .and_then(|rest| rest.strip_suffix(" latents"))
            .and_then(|n| n.trim().parse::<u32>().ok())
        {
            self.stage = Stage::Decoding;
            return Some(self.progress(Stage::Decoding, 0, n));
        }
        if let Some(k) = after(line, "latent ")
            .and_then(|rest| rest.split_once(" decoded"))
            .and_then(|(k, _)| k.trim().parse::<u32>().ok())
        {
            self.image = k.min(self.count);
            return Some(self.progress(Stage::Decoding, k, self.count));
        }
        None
    }

    fn progress(&self, stage: Stage, current: u32, total: u32) -> Progress {
        let fraction = if total == 0 {
            0.0
        } else {
            f64::from(current.min(total)) / f64::from(total)
        };
        let per_image = 85.0 / f64::from(self.count);
        let done_images = f64::from(self.image.saturating_sub(1));
        let sampled = per_image * (done_images + fraction);
        let percent = match stage {
            Stage::Loading => 10.0 * fraction,
            Stage::Diffusion if !self.hires => 10.0 + sampled,
            Stage::Diffusion if !self.in_hires_pass => 10.0 + sampled / 2.0,
            Stage::Diffusion => 10.0 + 42.5 + sampled / 2.0,
            Stage::Decoding => 95.0 + 5.0 * fraction,
        };
        Progress {
            stage,
            current_step: current,
            total_steps: total,
            current_image: self.image,
            total_images: self.count,
            percentage: (percent * 10.0).round() / 10.0,
        }
    }
}

/// The text after `marker` in a log line (`[INFO ] file.cpp:12 - marker…`).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// `  |=====>     | 3/20 - 1.25s/it` → (3, 20, "s/it").
fn parse_bar(line: &str) -> Option<(u32, u32, &str)> {
    let line = line.trim();
    if !line.starts_with('|') {
        return None;
    }
    let tail = line[1..].split_once('|')?.1.trim();
    let (counts, speed) = tail.split_once(" - ")?;
    let (current, total) = counts.trim().split_once('/')?;
    let speed = speed.trim();
    let unit_at = speed.find(|c: char| c.is_ascii_alphabetic())?;
    speed[..unit_at].parse::<f64>().ok()?;
    Some((
        current.parse().ok()?,
        total.parse().ok()?,
        &speed[unit_at..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of a real `sd-cli -b 2 --steps 3` run on the tiny test model, as the supervisor
    /// hands them over (split on `\r`/`\n`, ANSI stripped).
    const RUN: &str = "\
[INFO ] stable-diffusion.cpp:634  - using TAE for encoding / decoding
  |============>                                     | 49/196 - 10.90MB/s
  |==================================================| 196/196 - 12.92MB/s
[INFO ] model.cpp:993  - loading tensors completed, taking 0.60s
[INFO ] stable-diffusion.cpp:3401 - generating image: 1/2 - seed 42
  |================>                                 | 1/3 - 58.03it/s
  |=================================>                | 2/3 - 57.64it/s
  |==================================================| 3/3 - 57.67it/s
[INFO ] stable-diffusion.cpp:3432 - sampling completed, taking 0.05s
[INFO ] stable-diffusion.cpp:3401 - generating image: 2/2 - seed 43
  |================>                                 | 1/3 - 1.5s/it
  |==================================================| 3/3 - 1.5s/it
[INFO ] stable-diffusion.cpp:3192 - decoding 2 latents
[INFO ] stable-diffusion.cpp:3208 - latent 1 decoded, taking 0.11s
[INFO ] stable-diffusion.cpp:3208 - latent 2 decoded, taking 0.11s
[INFO ] stable-diffusion.cpp:3591 - generate_image completed in 0.41s";

    #[test]
    fn a_real_run_reads_as_stages_with_steps() {
        let mut parser = ProgressParser::new(2, false);
        let seen: Vec<_> = RUN.lines().filter_map(|l| parser.feed(l)).collect();
        let brief: Vec<_> = seen
            .iter()
            .map(|p| (p.stage, p.current_image, p.current_step, p.total_steps))
            .collect();
        use Stage::*;
        assert_eq!(
            brief,
            vec![
                (Loading, 1, 49, 196),
                (Loading, 1, 196, 196),
                (Diffusion, 1, 1, 3),
                (Diffusion, 1, 2, 3),
                (Diffusion, 1, 3, 3),
                (Diffusion, 2, 1, 3),
                (Diffusion, 2, 3, 3),
                (Decoding, 2, 0, 2),
                (Decoding, 1, 1, 2),
                (Decoding, 2, 2, 2),
            ]
        );
        let percents: Vec<f64> = seen.iter().map(|p| p.percentage).collect();
        assert_eq!(percents.first(), Some(&2.5));
        assert_eq!(percents.last(), Some(&100.0));
        // Never backwards, except where decoding restarts the per-image counter.
        assert!(percents.windows(2).all(|w| w[1] >= w[0]), "{percents:?}");
    }

    /// sd-cli's lines for two 64x64 images with a hires fix to 96x96, two steps in each pass.
    const HIRES_RUN: &str = "\
[INFO ] stable-diffusion.cpp:3401 - generating image: 1/2 - seed 1
  |=========================>                        | 1/2 - 83.24it/s
  |==================================================| 2/2 - 82.50it/s
[INFO ] stable-diffusion.cpp:3401 - generating image: 2/2 - seed 2
  |=========================>                        | 1/2 - 80.91it/s
  |==================================================| 2/2 - 85.74it/s
[INFO ] stable-diffusion.cpp:3450 - generating 2 latent images completed, taking 0.05s
[INFO ] stable-diffusion.cpp:3455 - hires fix: upscaling to 96x96
[INFO ] stable-diffusion.cpp:3284 - hires Latent upscale 8x8 -> 12x12
  |=========================>                        | 1/2 - 76.18it/s
  |==================================================| 2/2 - 75.08it/s
[INFO ] stable-diffusion.cpp:3557 - hires sampling 1/2 completed, taking 0.03s
  |=========================>                        | 1/2 - 79.58it/s
  |==================================================| 2/2 - 84.25it/s
[INFO ] stable-diffusion.cpp:3557 - hires sampling 2/2 completed, taking 0.02s
[INFO ] stable-diffusion.cpp:3192 - decoding 2 latents
[INFO ] stable-diffusion.cpp:3208 - latent 1 decoded, taking 0.14s
[INFO ] stable-diffusion.cpp:3208 - latent 2 decoded, taking 0.15s";

    #[test]
    fn a_hires_fix_is_a_second_pass_and_progress_never_goes_back() {
        let mut parser = ProgressParser::new(2, true);
        let seen: Vec<_> = HIRES_RUN.lines().filter_map(|l| parser.feed(l)).collect();
        let images: Vec<u32> = seen.iter().map(|p| p.current_image).collect();
        assert_eq!(images, [1, 1, 2, 2, 1, 1, 2, 2, 2, 1, 2]);
        let percents: Vec<f64> = seen.iter().map(|p| p.percentage).collect();
        assert_eq!(
            &percents[..8],
            [20.6, 31.3, 41.9, 52.5, 63.1, 73.8, 84.4, 95.0]
        );
        assert!(percents.windows(2).all(|w| w[1] >= w[0]), "{percents:?}");
    }

    #[test]
    fn other_lines_and_broken_bars_are_not_progress() {
        let mut parser = ProgressParser::new(1, false);
        for line in [
            "",
            "[INFO ] main.cpp:148  - listening on: 127.0.0.1:1234",
            "|| 1/2",
            "  |===| x/3 - 2it/s",
            "  |===| 1/3 - fast",
            "decoding many latents",
        ] {
            assert_eq!(parser.feed(line), None, "{line:?}");
        }
    }
}
