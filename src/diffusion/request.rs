//! An image request as callers write it (the seed's camelCase `ImageGenerationConfig`, or an
//! OpenAI `images.generate` body), checked field by field into an [`ImageRequest`]. Every
//! refusal names the field and what it accepts, so an HTTP client gets a useful 400.

use serde::Serialize;
use serde_json::{Map, Value};
use ts_rs::TS;

pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 4096;
pub const MAX_STEPS: u32 = 150;
pub const MAX_CFG_SCALE: f64 = 30.0;
pub const MAX_COUNT: u32 = 8;
/// The longest prompt (and negative prompt) the backend survives, with margin. stable-diffusion.cpp
/// parses attention weights with a `std::regex` whose executor recurses once per character of a
/// run without `\ ( ) [ ] : B`, about 320 bytes of stack each (measured on the pinned build:
/// 3,200 characters pass and 3,300 crash with a 1 MiB stack, 1,500/1,700 with 512 KiB, and a
/// 26,160-byte prompt crashes with Linux's 8 MiB). The limit is a third of what the smallest
/// stack the backend runs on holds: 8 MiB on Linux, 1 MiB threads on Windows, and 512 KiB for
/// `sd-server`'s worker thread on macOS.
#[cfg(target_os = "linux")]
pub const MAX_PROMPT_BYTES: usize = 8 * 1024;
#[cfg(target_os = "windows")]
pub const MAX_PROMPT_BYTES: usize = 1024;
#[cfg(not(any(target_os = "linux", target_os = "windows")))]
pub const MAX_PROMPT_BYTES: usize = 512;
/// Seeds stay exact in a JS number.
pub const MAX_SEED: i64 = (1 << 53) - 1;
/// The largest image a request may carry (an init image or a mask), decoded.
pub const MAX_INPUT_IMAGE_BYTES: usize = 32 << 20;

/// An image a request carries (`initImage`, `mask`): its bytes as sent, and what its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputImage {
    pub bytes: Vec<u8>,
    /// `png`, `jpeg` or `webp`: the file extension sd is given.
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
}

impl InputImage {
    /// The image in `text`: base64, or a `data:` URL of base64 (what JS's Buffer becomes on the
    /// way to the addon, and what JSON carries). `field` names it in an error.
    fn parse(field: &str, text: &str) -> Result<InputImage, Invalid> {
        use base64::Engine as _;
        let encoded = match text.strip_prefix("data:") {
            Some(url) => url
                .split_once(";base64,")
                .map(|(_, data)| data)
                .ok_or_else(|| invalid(format!("{field} is a data URL without ;base64,")))?,
            None => text,
        };
        if encoded.len() / 4 * 3 > MAX_INPUT_IMAGE_BYTES {
            return Err(invalid(format!(
                "{field} is larger than {} MiB",
                MAX_INPUT_IMAGE_BYTES >> 20
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| {
                invalid(format!(
                    "{field} is not base64 ({e}): send the image's bytes"
                ))
            })?;
        let format = match imagesize::image_type(&bytes) {
            Ok(imagesize::ImageType::Png) => "png",
            Ok(imagesize::ImageType::Jpeg) => "jpeg",
            Ok(imagesize::ImageType::Webp) => "webp",
            _ => {
                return Err(invalid(format!("{field} is not a PNG, JPEG or WebP image")));
            }
        };
        let size = imagesize::blob_size(&bytes)
            .map_err(|e| invalid(format!("{field}: its {format} header cannot be read ({e})")))?;
        Ok(InputImage {
            format,
            width: size.width as u32,
            height: size.height as u32,
            bytes,
        })
    }
}

/// How a hires fix enlarges the first pass's image: in latent space (sd's default), or decoded
/// and resized as pixels.
pub const HIRES_UPSCALERS: [&str; 8] = [
    "Latent",
    "Latent (nearest)",
    "Latent (nearest-exact)",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Lanczos",
    "Nearest",
];
/// The largest hires scale.
pub const MAX_HIRES_SCALE: f64 = 4.0;

/// A hires fix: the image is drawn at its size, enlarged, and drawn again over it at the larger
/// size, which keeps a model's composition at sizes beyond those it was trained for.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ImageHires")]
pub struct Hires {
    /// The final image's width (a multiple of 8, 64–4096), with `height`; unset, the image's
    /// size times `scale`.
    #[ts(optional)]
    pub width: Option<u32>,
    /// The final image's height, with `width`.
    #[ts(optional)]
    pub height: Option<u32>,
    /// How much larger the final image is, over 1 and at most 4 (default 2), when `width` and
    /// `height` are unset; the result is rounded to a multiple of 8.
    #[ts(optional)]
    pub scale: Option<f64>,
    /// Steps of the second pass, 1–150 (default: the first pass's, scaled by the strength).
    #[ts(optional)]
    pub steps: Option<u32>,
    /// How much of the enlarged image the second pass redraws, 0–1 (default 0.7).
    #[ts(optional)]
    pub denoising_strength: Option<f64>,
    /// How the image is enlarged (default `Latent`).
    #[ts(
        type = "'Latent' | 'Latent (nearest)' | 'Latent (nearest-exact)' | 'Latent (antialiased)' | 'Latent (bicubic)' | 'Latent (bicubic antialiased)' | 'Lanczos' | 'Nearest'",
        optional
    )]
    pub upscaler: Option<String>,
    /// The final size, resolved.
    #[serde(skip)]
    #[ts(skip)]
    pub target: (u32, u32),
}

/// The most reference images one request may carry.
pub const MAX_REFERENCE_IMAGES: usize = 8;
/// The most LoRAs one image may apply.
pub const MAX_LORAS: usize = 16;
/// The largest LoRA weight either way (trainers' sliders go to a few units).
pub const MAX_LORA_WEIGHT: f64 = 10.0;

/// A LoRA an image applies: an installed `lora` model and how strongly.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
#[ts(rename = "ImageLora")]
pub struct LoraChoice {
    /// The id of an installed model of type `lora`.
    pub model_id: String,
    /// How strongly it applies, -10 to 10 (default 1; 0 leaves it out, below 0 pushes away from it).
    #[ts(as = "Option<f64>", optional)]
    pub weight: f64,
}

/// stable-diffusion.cpp's sampling methods (`--sampling-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[ts(rename = "ImageSampler")]
pub enum Sampler {
    #[serde(rename = "euler")]
    Euler,
    #[serde(rename = "euler_a")]
    EulerA,
    #[serde(rename = "heun")]
    Heun,
    #[serde(rename = "dpm2")]
    Dpm2,
    #[serde(rename = "dpm++2s_a")]
    Dpmpp2sA,
    #[serde(rename = "dpm++2m")]
    Dpmpp2m,
    #[serde(rename = "dpm++2mv2")]
    Dpmpp2mv2,
    #[serde(rename = "ipndm")]
    Ipndm,
    #[serde(rename = "ipndm_v")]
    IpndmV,
    #[serde(rename = "lcm")]
    Lcm,
    #[serde(rename = "ddim_trailing")]
    DdimTrailing,
    #[serde(rename = "tcd")]
    Tcd,
    #[serde(rename = "res_multistep")]
    ResMultistep,
    #[serde(rename = "res_2s")]
    Res2s,
    #[serde(rename = "er_sde")]
    ErSde,
}

impl Sampler {
    pub const ALL: [Sampler; 15] = [
        Sampler::Euler,
        Sampler::EulerA,
        Sampler::Heun,
        Sampler::Dpm2,
        Sampler::Dpmpp2sA,
        Sampler::Dpmpp2m,
        Sampler::Dpmpp2mv2,
        Sampler::Ipndm,
        Sampler::IpndmV,
        Sampler::Lcm,
        Sampler::DdimTrailing,
        Sampler::Tcd,
        Sampler::ResMultistep,
        Sampler::Res2s,
        Sampler::ErSde,
    ];

    /// The name the backend takes, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sampler::Euler => "euler",
            Sampler::EulerA => "euler_a",
            Sampler::Heun => "heun",
            Sampler::Dpm2 => "dpm2",
            Sampler::Dpmpp2sA => "dpm++2s_a",
            Sampler::Dpmpp2m => "dpm++2m",
            Sampler::Dpmpp2mv2 => "dpm++2mv2",
            Sampler::Ipndm => "ipndm",
            Sampler::IpndmV => "ipndm_v",
            Sampler::Lcm => "lcm",
            Sampler::DdimTrailing => "ddim_trailing",
            Sampler::Tcd => "tcd",
            Sampler::ResMultistep => "res_multistep",
            Sampler::Res2s => "res_2s",
            Sampler::ErSde => "er_sde",
        }
    }

    fn parse(name: &str) -> Option<Sampler> {
        Sampler::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Fields an OpenAI client may send that change nothing here.
const IGNORED_OPENAI_FIELDS: [&str; 4] = ["model", "user", "quality", "style"];

/// One image request. Unknown keys are a {@link ValidationError}.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
#[serde(rename_all = "camelCase")]
pub struct ImageRequest {
    /// What to draw (required, not empty). At most 8 KiB on Linux, 1 KiB on Windows and 512 bytes
    /// on macOS: longer text overflows the stack of stable-diffusion.cpp's prompt parser, so it is
    /// refused first.
    pub prompt: String,
    /// What to avoid (the same limit as `prompt`).
    #[ts(optional)]
    pub negative_prompt: Option<String>,
    /// Pixels, a multiple of 8 from 64 to 4096 (default 512).
    #[ts(as = "Option<u32>", optional)]
    pub width: u32,
    /// Pixels, a multiple of 8 from 64 to 4096 (default 512).
    #[ts(as = "Option<u32>", optional)]
    pub height: u32,
    /// Sampling steps, 1–150 (default 20).
    #[ts(as = "Option<u32>", optional)]
    pub steps: u32,
    /// Guidance scale, 0–30 (default: the backend's, 7; distilled models such as FLUX want 1).
    #[ts(optional)]
    pub cfg_scale: Option<f64>,
    /// 0 to 2^53-1; unset or -1 draws a random one, which the result reports.
    #[ts(optional)]
    pub seed: Option<i64>,
    /// Default: the backend's choice for the model it loaded (`euler` for DiT models such as FLUX
    /// and SD3, else `euler_a`).
    #[ts(optional)]
    pub sampler: Option<Sampler>,
    /// Images to make, 1–8 (default 1); their seeds count up from `seed`.
    #[ts(as = "Option<u32>", optional)]
    pub count: u32,
    /// An image to start from (image-to-image): PNG, JPEG or WebP, as a Buffer or Uint8Array in
    /// JS, base64 or a `data:` URL in JSON, of the size asked (unset `width`/`height` take its
    /// size).
    #[serde(skip_serializing)]
    #[ts(type = "Uint8Array | string", optional)]
    pub init_image: Option<InputImage>,
    /// With `initImage`: how much of it is redrawn, 0–1 (default: the backend's, 0.75).
    #[ts(optional)]
    pub strength: Option<f64>,
    /// With `initImage` (inpainting): which part of it is redrawn, an image of the same size
    /// read as grey levels: white is redrawn, black kept as it is (PNG, JPEG or WebP, sent as
    /// `initImage` is).
    #[serde(skip_serializing)]
    #[ts(type = "Uint8Array | string", optional)]
    pub mask: Option<InputImage>,
    /// Images the model is shown beside the prompt (edit models: FLUX.1 Kontext, FLUX.2,
    /// Qwen-Image-Edit), at most 8, each PNG, JPEG or WebP of any size (the backend scales it to
    /// about the image's area), sent as `initImage` is.
    #[serde(skip_serializing)]
    #[ts(type = "Array<Uint8Array | string>", optional)]
    pub reference_images: Vec<InputImage>,
    /// A second, larger pass (hires fix); the image made has its size.
    #[ts(optional)]
    pub hires: Option<Hires>,
    /// LoRAs to apply, in order, at most 16, each an installed `lora` model (default none).
    /// `<lora:…>` tags in the prompt are refused: name them here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[ts(as = "Option<Vec<LoraChoice>>", optional)]
    pub loras: Vec<LoraChoice>,
    /// HTTP only: answer 202 with a job id instead of waiting.
    #[serde(skip)]
    #[ts(skip)]
    pub asynchronous: bool,
}

/// What an image's memory depends on: its size, the LoRAs loaded for it, and the images the
/// VAE encodes for it (an init image, each reference image).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageShape {
    pub width: u32,
    pub height: u32,
    pub loras: Vec<LoraChoice>,
    pub encoded_images: u32,
}

impl ImageShape {
    /// What encoding its images adds to the working set ([`super::ENCODE_PER_IMAGE`] each).
    pub fn encoding_bytes(&self) -> u64 {
        super::ENCODE_PER_IMAGE * u64::from(self.encoded_images)
    }
}

impl ImageRequest {
    pub fn shape(&self) -> ImageShape {
        let (width, height) = self.output_size();
        ImageShape {
            width,
            height,
            loras: self.loras.clone(),
            encoded_images: u32::from(self.init_image.is_some())
                + self.reference_images.len() as u32,
        }
    }

    /// The size of the images made: the hires pass's where there is one.
    pub fn output_size(&self) -> (u32, u32) {
        self.hires
            .as_ref()
            .map_or((self.width, self.height), |h| h.target)
    }

    /// The seed to use: the asked one, or a fresh random one.
    pub fn resolved_seed(&self) -> i64 {
        self.seed
            .unwrap_or_else(|| fastrand::i64(0..=i64::from(u32::MAX)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks a request body. `http` allows the fields that only make sense over HTTP (`async`).
pub fn parse(body: &Value, http: bool) -> Result<ImageRequest, Invalid> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    for key in obj.keys() {
        let known = matches!(
            key.as_str(),
            "prompt"
                | "negativePrompt"
                | "width"
                | "height"
                | "steps"
                | "cfgScale"
                | "seed"
                | "sampler"
                | "count"
                | "initImage"
                | "strength"
                | "mask"
                | "loras"
                | "referenceImages"
                | "hires"
                | "n"
                | "size"
                | "response_format"
        ) || IGNORED_OPENAI_FIELDS.contains(&key.as_str())
            || (http && key == "async");
        if !known {
            return Err(invalid(format!("unknown field {key:?}")));
        }
    }

    let prompt = string(obj, "prompt")?.ok_or_else(|| invalid("prompt is required"))?;
    if prompt.trim().is_empty() {
        return Err(invalid("prompt must not be empty"));
    }
    let negative_prompt = string(obj, "negativePrompt")?;
    for (name, text) in [
        ("prompt", Some(&prompt)),
        ("negativePrompt", negative_prompt.as_ref()),
    ] {
        let Some(text) = text else { continue };
        if text.len() > MAX_PROMPT_BYTES {
            return Err(invalid(format!(
                "{name} is {} bytes; at most {MAX_PROMPT_BYTES} are allowed (longer text overflows the stack of stable-diffusion.cpp's prompt parser)",
                text.len()
            )));
        }
        if text.contains('\0') {
            return Err(invalid(format!("{name} must not contain NUL characters")));
        }
        if text.contains("<lora:") {
            return Err(invalid(format!(
                "{name} holds a <lora:…> tag: name LoRAs in loras, [{{ modelId, weight }}]"
            )));
        }
    }
    let init_image = image(obj, "initImage")?;
    let strength = number(obj, "strength", 0.0, 1.0)?;
    if strength.is_some() && init_image.is_none() {
        return Err(invalid(
            "strength needs initImage: it says how much of that image is redrawn",
        ));
    }
    let mask = image(obj, "mask")?;
    if mask.is_some() && init_image.is_none() {
        return Err(invalid(
            "mask needs initImage: it says which part of that image is redrawn",
        ));
    }
    let (width, height) = match &init_image {
        // Unsized, the image asked is the init image's size.
        Some(image)
            if !["width", "height", "size"]
                .iter()
                .any(|k| obj.contains_key(*k)) =>
        {
            let sized = serde_json::json!({ "width": image.width, "height": image.height });
            dimensions(sized.as_object().expect("an object")).map_err(|e| {
                invalid(format!(
                    "initImage is {}x{}: {}",
                    image.width, image.height, e.0
                ))
            })?
        }
        _ => dimensions(obj)?,
    };
    if let Some(image) = &init_image
        && (image.width, image.height) != (width, height)
    {
        return Err(invalid(format!(
            "initImage is {}x{}, the image asked is {width}x{height}: send an init image of that size, or leave width and height unset to take its size",
            image.width, image.height
        )));
    }
    if let Some(mask) = &mask
        && (mask.width, mask.height) != (width, height)
    {
        return Err(invalid(format!(
            "mask is {}x{}, initImage is {width}x{height}: the mask must be the size of the image it masks",
            mask.width, mask.height
        )));
    }
    let loras = loras(obj)?;
    let reference_images = reference_images(obj)?;
    let hires = hires(obj, (width, height))?;
    let steps = integer(obj, "steps", 1, i64::from(MAX_STEPS))?.unwrap_or(20) as u32;
    let cfg_scale = number(obj, "cfgScale", 0.0, MAX_CFG_SCALE)?;
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) if v.as_i64() == Some(-1) => None,
        Some(_) => integer(obj, "seed", 0, MAX_SEED)?,
    };
    let sampler = match string(obj, "sampler")? {
        None => None,
        Some(name) => Some(Sampler::parse(&name).ok_or_else(|| {
            let names: Vec<&str> = Sampler::ALL.iter().map(|s| s.as_str()).collect();
            invalid(format!(
                "unknown sampler {name:?}; use one of {}",
                names.join(", ")
            ))
        })?),
    };
    let count = match (
        integer(obj, "count", 1, i64::from(MAX_COUNT))?,
        integer(obj, "n", 1, i64::from(MAX_COUNT))?,
    ) {
        (Some(c), Some(n)) if c != n => {
            return Err(invalid("count and n disagree: send one of them"));
        }
        (c, n) => c.or(n).unwrap_or(1) as u32,
    };
    if let Some(format) = string(obj, "response_format")?
        && format != "b64_json"
    {
        return Err(invalid(format!(
            "response_format {format:?} is not supported: images are returned inline, use \"b64_json\""
        )));
    }
    let asynchronous = match obj.get("async") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(wrong_type("async", "a boolean", other)),
    };
    Ok(ImageRequest {
        prompt,
        negative_prompt,
        width,
        height,
        steps,
        cfg_scale,
        seed,
        sampler,
        count,
        init_image,
        strength,
        mask,
        loras,
        reference_images,
        hires,
        asynchronous,
    })
}

/// The width and height (512 × 512 unset) and LoRAs a request asks for, checked as [`parse`]
/// checks them; the other fields are not looked at. What an estimate of the image's memory needs.
pub fn shape(body: &Value) -> Result<ImageShape, Invalid> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("the image config must be an object"))?;
    let (width, height) = dimensions(obj)?;
    let (width, height) = hires(obj, (width, height))?.map_or((width, height), |h| h.target);
    // Counted, not decoded: an estimate does not need the images' bytes.
    let present = |key: &str| !matches!(obj.get(key), None | Some(Value::Null));
    let references = obj
        .get("referenceImages")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Ok(ImageShape {
        width,
        height,
        loras: loras(obj)?,
        encoded_images: u32::from(present("initImage")) + references as u32,
    })
}

fn dimensions(obj: &Map<String, Value>) -> Result<(u32, u32), Invalid> {
    let (mut width, mut height) = (512, 512);
    if let Some(size) = string(obj, "size")? {
        (width, height) = parse_size(&size)?;
    }
    if let Some(w) = integer(obj, "width", i64::from(MIN_SIDE), i64::from(MAX_SIDE))? {
        width = w as u32;
    }
    if let Some(h) = integer(obj, "height", i64::from(MIN_SIDE), i64::from(MAX_SIDE))? {
        height = h as u32;
    }
    for (name, side) in [("width", width), ("height", height)] {
        if side % 8 != 0 {
            return Err(invalid(format!(
                "{name} must be a multiple of 8, got {side}"
            )));
        }
    }
    Ok((width, height))
}

fn parse_size(size: &str) -> Result<(u32, u32), Invalid> {
    let bad = || invalid(format!("size must look like \"512x512\", got {size:?}"));
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    for side in [w, h] {
        if !(MIN_SIDE..=MAX_SIDE).contains(&side) {
            return Err(invalid(format!(
                "size sides must be {MIN_SIDE}-{MAX_SIDE}, got {size:?}"
            )));
        }
    }
    Ok((w, h))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> Invalid {
    invalid(format!(
        "{field} must be {expected}, got {}",
        type_name(got)
    ))
}

/// `loras`: each an installed LoRA's id (its presence is checked when the image is made) and a
/// weight, no id twice.
fn loras(obj: &Map<String, Value>) -> Result<Vec<LoraChoice>, Invalid> {
    let items = match obj.get("loras") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(wrong_type(
                "loras",
                "an array of { modelId, weight }",
                other,
            ));
        }
    };
    if items.len() > MAX_LORAS {
        return Err(invalid(format!(
            "loras has {} entries; at most {MAX_LORAS} are allowed",
            items.len()
        )));
    }
    let mut chosen: Vec<LoraChoice> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("loras[{i}]");
        let entry = item
            .as_object()
            .ok_or_else(|| wrong_type(&field, "an object, { modelId, weight }", item))?;
        if let Some(key) = entry
            .keys()
            .find(|k| !matches!(k.as_str(), "modelId" | "weight"))
        {
            return Err(invalid(format!("{field} has an unknown field {key:?}")));
        }
        let model_id = string(entry, "modelId")
            .map_err(|e| invalid(format!("{field}.{}", e.0)))?
            .ok_or_else(|| {
                invalid(format!(
                    "{field}.modelId is required: the id of an installed LoRA"
                ))
            })?;
        if !crate::models::store::is_valid_id(&model_id) {
            return Err(invalid(format!(
                "{field}.modelId {model_id:?} is not a model id"
            )));
        }
        if chosen.iter().any(|c| c.model_id == model_id) {
            return Err(invalid(format!(
                "{field}.modelId {model_id:?} is given twice: give it once, with the sum of its weights"
            )));
        }
        let weight = number(entry, "weight", -MAX_LORA_WEIGHT, MAX_LORA_WEIGHT)
            .map_err(|e| invalid(format!("{field}.{}", e.0)))?
            .unwrap_or(1.0);
        chosen.push(LoraChoice { model_id, weight });
    }
    Ok(chosen)
}

/// `hires`, for an image of `size`: its final size resolved and checked as `width`/`height` are.
fn hires(obj: &Map<String, Value>, size: (u32, u32)) -> Result<Option<Hires>, Invalid> {
    let entry = match obj.get("hires") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(entry)) => entry,
        Some(other) => return Err(wrong_type("hires", "an object", other)),
    };
    let known = [
        "width",
        "height",
        "scale",
        "steps",
        "denoisingStrength",
        "upscaler",
    ];
    if let Some(key) = entry.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(format!("hires has an unknown field {key:?}")));
    }
    let named = |e: Invalid| invalid(format!("hires.{}", e.0));
    let side =
        |field| integer(entry, field, i64::from(MIN_SIDE), i64::from(MAX_SIDE)).map_err(named);
    let (width, height) = (
        side("width")?.map(|w| w as u32),
        side("height")?.map(|h| h as u32),
    );
    let scale = match entry.get("scale") {
        Some(Value::Number(n)) if n.as_f64().is_some_and(|s| s <= 1.0 || s > MAX_HIRES_SCALE) => {
            return Err(invalid(format!(
                "hires.scale must be over 1 and at most {MAX_HIRES_SCALE}, got {n}"
            )));
        }
        _ => number(entry, "scale", 1.0, MAX_HIRES_SCALE).map_err(named)?,
    };
    let target = match (width, height, scale) {
        (Some(_), Some(_), Some(_)) => {
            return Err(invalid("hires takes width and height, or scale: not both"));
        }
        (Some(w), Some(h), None) => (w, h),
        (None, None, scale) => {
            // Rounded to a multiple of 8, as every size the backends take.
            let scaled =
                |side: u32| ((f64::from(side) * scale.unwrap_or(2.0) / 8.0).round() as u32) * 8;
            (scaled(size.0), scaled(size.1))
        }
        _ => return Err(invalid("hires.width and hires.height go together")),
    };
    for (name, side) in [("width", target.0), ("height", target.1)] {
        if side % 8 != 0 {
            return Err(invalid(format!(
                "hires.{name} must be a multiple of 8, got {side}"
            )));
        }
        if side > MAX_SIDE {
            return Err(invalid(format!(
                "hires makes the image {}x{}: sides of at most {MAX_SIDE} are allowed",
                target.0, target.1
            )));
        }
    }
    let steps = integer(entry, "steps", 1, i64::from(MAX_STEPS))
        .map_err(named)?
        .map(|s| s as u32);
    let denoising_strength = number(entry, "denoisingStrength", 0.0, 1.0).map_err(named)?;
    let upscaler = string(entry, "upscaler").map_err(named)?;
    if let Some(name) = &upscaler
        && !HIRES_UPSCALERS.contains(&name.as_str())
    {
        return Err(invalid(format!(
            "unknown hires.upscaler {name:?}; use one of {}",
            HIRES_UPSCALERS.join(", ")
        )));
    }
    Ok(Some(Hires {
        width,
        height,
        scale,
        steps,
        denoising_strength,
        upscaler,
        target,
    }))
}

/// `referenceImages`: an array of images, each as `initImage` is sent.
fn reference_images(obj: &Map<String, Value>) -> Result<Vec<InputImage>, Invalid> {
    let items = match obj.get("referenceImages") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type("referenceImages", "an array of images", other)),
    };
    if items.len() > MAX_REFERENCE_IMAGES {
        return Err(invalid(format!(
            "referenceImages has {} images; at most {MAX_REFERENCE_IMAGES} are allowed",
            items.len()
        )));
    }
    let images = items.iter().enumerate();
    images
        .map(|(i, item)| image_of(&format!("referenceImages[{i}]"), item))
        .collect()
}

/// An image field (`initImage`, `mask`, an upscale's `image`): unset, or an image [`image_of`]
/// reads.
pub(super) fn image(obj: &Map<String, Value>, field: &str) -> Result<Option<InputImage>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => image_of(field, value).map(Some),
    }
}

/// Base64 or a data URL of a PNG, JPEG or WebP; `field` names it in an error.
fn image_of(field: &str, value: &Value) -> Result<InputImage, Invalid> {
    match value {
        Value::String(text) => InputImage::parse(field, text),
        other => Err(wrong_type(
            field,
            "an image (a Buffer in JS; base64 or a data URL in JSON)",
            other,
        )),
    }
}

fn string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

fn integer(
    obj: &Map<String, Value>,
    field: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, Invalid> {
    let value = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| invalid(format!("{field} must be a whole number, got {n}")))?,
        other => return Err(wrong_type(field, "a number", other)),
    };
    if !(min..=max).contains(&n) {
        return Err(invalid(format!(
            "{field} must be between {min} and {max}, got {n}"
        )));
    }
    Ok(Some(n))
}

fn number(
    obj: &Map<String, Value>,
    field: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if (min..=max).contains(&f) {
                Ok(Some(f))
            } else {
                Err(invalid(format!(
                    "{field} must be between {min} and {max}, got {n}"
                )))
            }
        }
        Some(other) => Err(wrong_type(field, "a number", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: Value) -> String {
        parse(&body, true).unwrap_err().0
    }

    #[test]
    fn defaults_fill_what_is_unset() {
        let r = parse(&json!({ "prompt": "a cat" }), false).unwrap();
        assert_eq!((r.width, r.height, r.steps, r.count), (512, 512, 20, 1));
        assert_eq!((r.cfg_scale, r.seed, r.sampler), (None, None, None));
        assert!(!r.asynchronous);
    }

    #[test]
    fn camel_case_and_openai_fields_are_read() {
        let r = parse(
            &json!({ "prompt": "p", "negativePrompt": "n", "width": 64, "height": 128, "steps": 2,
                     "cfgScale": 1, "seed": 7, "sampler": "euler", "count": 2, "async": true }),
            true,
        )
        .unwrap();
        assert_eq!(r.negative_prompt.as_deref(), Some("n"));
        assert_eq!(
            (r.width, r.height, r.steps, r.count, r.seed),
            (64, 128, 2, 2, Some(7))
        );
        assert_eq!(r.cfg_scale, Some(1.0));
        assert!(r.asynchronous);
        let o = parse(
            &json!({ "prompt": "p", "model": "x", "n": 3, "size": "256x64", "response_format": "b64_json" }),
            true,
        )
        .unwrap();
        assert_eq!((o.width, o.height, o.count), (256, 64, 3));
    }

    /// The header of a `width` × `height` PNG (what a reader of its size looks at).
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend(width.to_be_bytes());
        png.extend(height.to_be_bytes());
        png.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
        png
    }

    #[test]
    fn an_init_image_is_read_with_its_size_and_refused_naming_what_is_wrong() {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let with = |extra: Value| {
            let mut body = json!({ "prompt": "p" });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse(&body, false)
        };
        let png = png_header(96, 64);
        // Unsized, the request takes the image's size; a data URL is read too.
        let read = with(json!({ "initImage": b64(&png), "strength": 0.4 })).unwrap();
        assert_eq!(
            (read.width, read.height, read.strength),
            (96, 64, Some(0.4))
        );
        let image = read.init_image.unwrap();
        assert_eq!((image.format, image.bytes), ("png", png.clone()));
        let url = format!("data:image/png;base64,{}", b64(&png));
        assert_eq!(with(json!({ "initImage": url })).unwrap().width, 96);
        let refused = |extra: Value| with(extra).unwrap_err().0;
        assert!(
            refused(json!({ "initImage": b64(&png), "width": 64, "height": 64 }))
                .contains("initImage is 96x64, the image asked is 64x64")
        );
        assert!(
            refused(json!({ "initImage": b64(b"GIF89a....") })).contains("not a PNG, JPEG or WebP")
        );
        assert!(refused(json!({ "initImage": "not base64!" })).contains("initImage is not base64"));
        assert!(refused(json!({ "initImage": 7 })).contains("initImage must be an image"));
        assert!(refused(json!({ "strength": 0.5 })).contains("strength needs initImage"));
        assert!(
            refused(json!({ "initImage": b64(&png), "strength": 2 }))
                .contains("strength must be between 0 and 1")
        );
        assert!(
            refused(json!({ "initImage": b64(&png_header(100, 64)) }))
                .contains("initImage is 100x64: width must be a multiple of 8")
        );
    }

    #[test]
    fn loras_name_installed_models_once_each_with_a_weight() {
        let read = parse(
            &json!({ "prompt": "p", "loras": [{ "modelId": "ink" }, { "modelId": "film", "weight": -0.5 }] }),
            false,
        )
        .unwrap();
        assert_eq!(
            read.loras,
            vec![
                LoraChoice {
                    model_id: "ink".into(),
                    weight: 1.0
                },
                LoraChoice {
                    model_id: "film".into(),
                    weight: -0.5
                },
            ]
        );
        let with = |loras: Value| err(json!({ "prompt": "p", "loras": loras }));
        assert!(with(json!("ink")).contains("loras must be an array"));
        assert!(with(json!([1])).contains("loras[0] must be an object"));
        assert!(with(json!([{}])).contains("loras[0].modelId is required"));
        assert!(with(json!([{ "modelId": 3 }])).contains("loras[0].modelId must be a string"));
        assert!(with(json!([{ "modelId": "../x" }])).contains("is not a model id"));
        assert!(with(json!([{ "modelId": "a" }, { "modelId": "a" }])).contains("given twice"));
        assert!(
            with(json!([{ "modelId": "a", "weight": 11 }]))
                .contains("loras[0].weight must be between -10 and 10")
        );
        assert!(with(json!([{ "modelId": "a", "scale": 1 }])).contains("unknown field \"scale\""));
        assert!(with(json!(vec![json!({ "modelId": "a" }); 17])).contains("at most 16"));
        assert!(err(json!({ "prompt": "a cat <lora:ink:1>" })).contains("name LoRAs in loras"));
    }

    #[test]
    fn a_hires_pass_has_its_size_resolved_and_checked() {
        let read = |hires: Value| {
            parse(
                &json!({ "prompt": "p", "width": 64, "height": 96, "hires": hires }),
                false,
            )
        };
        let hires = read(json!({})).unwrap();
        assert_eq!(hires.output_size(), (128, 192), "twice the size unset");
        assert_eq!(
            (hires.width, hires.height),
            (64, 96),
            "the first pass keeps its own"
        );
        assert_eq!(
            read(json!({ "scale": 1.3 })).unwrap().output_size(),
            (80, 128)
        );
        let sized = read(
            json!({ "width": 256, "height": 128, "steps": 4, "denoisingStrength": 0.5, "upscaler": "Lanczos" }),
        );
        let sized = sized.unwrap();
        assert_eq!(
            sized.shape().width,
            256,
            "an estimate counts the larger size"
        );
        let h = sized.hires.unwrap();
        assert_eq!(
            (
                h.target,
                h.steps,
                h.denoising_strength,
                h.upscaler.as_deref()
            ),
            ((256, 128), Some(4), Some(0.5), Some("Lanczos"))
        );
        let refused = |hires: Value| read(hires).unwrap_err().0;
        assert!(refused(json!(2)).contains("hires must be an object"));
        assert!(
            refused(json!({ "scale": 1 })).contains("hires.scale must be over 1 and at most 4")
        );
        assert!(refused(json!({ "scale": 5 })).contains("hires.scale must be over 1"));
        assert!(refused(json!({ "width": 128 })).contains("go together"));
        assert!(refused(json!({ "width": 128, "height": 128, "scale": 2 })).contains("not both"));
        assert!(
            refused(json!({ "width": 100, "height": 128 }))
                .contains("hires.width must be a multiple of 8")
        );
        assert!(refused(json!({ "steps": 0 })).contains("hires.steps must be between 1"));
        assert!(refused(json!({ "upscaler": "ESRGAN" })).contains("unknown hires.upscaler"));
        assert!(
            refused(json!({ "strength": 0.5 })).contains("hires has an unknown field \"strength\"")
        );
        let big = parse(
            &json!({ "prompt": "p", "width": 4096, "height": 64, "hires": {} }),
            false,
        );
        assert!(big.unwrap_err().0.contains("sides of at most 4096"));
        let shape = shape(&json!({ "width": 64, "height": 64, "hires": { "scale": 3 } })).unwrap();
        assert_eq!((shape.width, shape.height), (192, 192));
        let encoded = super::shape(&json!({ "initImage": "x", "referenceImages": ["a", "b"] }));
        assert_eq!(encoded.unwrap().encoded_images, 3);
    }

    #[test]
    fn reference_images_are_images_of_any_size() {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let (small, odd) = (b64(&png_header(64, 64)), b64(&png_header(100, 75)));
        let read = parse(
            &json!({ "prompt": "p", "referenceImages": [small, odd] }),
            false,
        )
        .unwrap();
        let sizes: Vec<_> = read
            .reference_images
            .iter()
            .map(|i| (i.width, i.height))
            .collect();
        assert_eq!(sizes, [(64, 64), (100, 75)]);
        assert_eq!(
            (read.width, read.height),
            (512, 512),
            "the image asked keeps its own size"
        );
        let with = |refs: Value| err(json!({ "prompt": "p", "referenceImages": refs }));
        assert!(with(json!(small)).contains("referenceImages must be an array"));
        assert!(with(json!([small, 3])).contains("referenceImages[1] must be an image"));
        assert!(
            with(json!([small, "R0lGODlh"]))
                .contains("referenceImages[1] is not a PNG, JPEG or WebP")
        );
        assert!(with(json!(vec![small; 9])).contains("at most 8"));
    }

    #[test]
    fn a_mask_goes_with_an_init_image_of_its_size() {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let (image, mask) = (b64(&png_header(96, 64)), b64(&png_header(96, 64)));
        let read = parse(
            &json!({ "prompt": "p", "initImage": image, "mask": mask }),
            false,
        )
        .unwrap();
        assert_eq!(read.mask.map(|m| (m.width, m.height)), Some((96, 64)));
        assert!(err(json!({ "prompt": "p", "mask": mask })).contains("mask needs initImage"));
        let small = b64(&png_header(64, 64));
        assert!(
            err(json!({ "prompt": "p", "initImage": image, "mask": small }))
                .contains("mask is 64x64, initImage is 96x64")
        );
        assert!(
            err(json!({ "prompt": "p", "initImage": image, "mask": "R0lGODlh" }))
                .contains("mask is not a PNG, JPEG or WebP image")
        );
        assert!(
            err(json!({ "prompt": "p", "initImage": image, "mask": [] }))
                .contains("mask must be an image")
        );
    }

    #[test]
    fn the_declared_shape_is_what_parse_reads() {
        let request = ImageRequest {
            prompt: "p".into(),
            negative_prompt: Some("n".into()),
            width: 64,
            height: 128,
            steps: 3,
            cfg_scale: Some(1.5),
            seed: Some(9),
            sampler: Some(Sampler::DdimTrailing),
            count: 2,
            init_image: None,
            strength: None,
            mask: None,
            loras: vec![LoraChoice {
                model_id: "style".into(),
                weight: 0.5,
            }],
            reference_images: Vec::new(),
            hires: None,
            asynchronous: false,
        };
        let written = serde_json::to_value(&request).unwrap();
        assert_eq!(parse(&written, false).unwrap(), request);
        for sampler in Sampler::ALL {
            assert_eq!(serde_json::to_value(sampler).unwrap(), sampler.as_str());
        }
    }

    #[test]
    fn seed_minus_one_means_random_and_resolves_in_range() {
        let r = parse(&json!({ "prompt": "p", "seed": -1 }), false).unwrap();
        assert_eq!(r.seed, None);
        let s = r.resolved_seed();
        assert!((0..=i64::from(u32::MAX)).contains(&s));
        let fixed = parse(&json!({ "prompt": "p", "seed": 5 }), false).unwrap();
        assert_eq!(fixed.resolved_seed(), 5);
    }

    #[test]
    fn every_bad_field_is_named() {
        assert!(err(json!([1])).contains("JSON object"));
        assert!(err(json!({})).contains("prompt is required"));
        assert!(err(json!({ "prompt": "  " })).contains("must not be empty"));
        assert!(err(json!({ "prompt": 3 })).contains("prompt must be a string, got a number"));
        assert!(err(json!({ "prompt": "p", "width": 100 })).contains("multiple of 8"));
        let limit = format!("at most {MAX_PROMPT_BYTES} are allowed");
        assert!(err(json!({ "prompt": "p".repeat(MAX_PROMPT_BYTES + 1) })).contains(&limit));
        assert!(
            err(json!({ "prompt": "p", "negativePrompt": "n".repeat(MAX_PROMPT_BYTES + 1) }))
                .contains(&limit)
        );
        assert!(parse(&json!({ "prompt": "p".repeat(MAX_PROMPT_BYTES) }), false).is_ok());
        assert!(err(json!({ "prompt": "p", "negativePrompt": "a\u{0}b" })).contains("NUL"));
        assert!(err(json!({ "prompt": "p", "height": 8 })).contains("between 64 and 4096"));
        assert!(err(json!({ "prompt": "p", "width": "64" })).contains("width must be a number"));
        assert!(err(json!({ "prompt": "p", "width": 64.5 })).contains("whole number"));
        assert!(err(json!({ "prompt": "p", "steps": 0 })).contains("steps must be between 1"));
        assert!(err(json!({ "prompt": "p", "steps": 151 })).contains("150"));
        assert!(err(json!({ "prompt": "p", "cfgScale": -1 })).contains("cfgScale"));
        assert!(err(json!({ "prompt": "p", "cfgScale": 31 })).contains("cfgScale"));
        assert!(err(json!({ "prompt": "p", "sampler": "magic" })).contains("unknown sampler"));
        assert!(err(json!({ "prompt": "p", "seed": -2 })).contains("seed"));
        assert!(err(json!({ "prompt": "p", "seed": 1e300 })).contains("seed"));
        assert!(err(json!({ "prompt": "p", "count": 9 })).contains("count"));
        assert!(err(json!({ "prompt": "p", "count": 2, "n": 3 })).contains("disagree"));
        assert!(err(json!({ "prompt": "p", "size": "big" })).contains("size"));
        assert!(err(json!({ "prompt": "p", "size": "32x32" })).contains("size sides"));
        assert!(err(json!({ "prompt": "p", "response_format": "url" })).contains("b64_json"));
        assert!(err(json!({ "prompt": "p", "async": "yes" })).contains("async must be a boolean"));
        assert!(err(json!({ "prompt": "p", "steps_": 2 })).contains("unknown field \"steps_\""));
        // `async` is an HTTP field: the in-process API refuses it.
        assert!(parse(&json!({ "prompt": "p", "async": true }), false).is_err());
    }
}
