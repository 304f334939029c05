"""Image-text-to-text generation over a `.pte` with ExecuTorch's multimodal method names.

The program holds `token_embedding(ids [1, S]) -> [1, S, D]`,
`vision_encoder(pixels [1, 3, H, W]) -> [1, T, D]` and
`text_decoder(embeddings [1, S, D], cache_position [S]) -> logits`, plus runner metadata
(`get_max_seq_len`, `get_max_context_len`, `get_eos_ids`, `image_token_id`, `image_size`).
We embed the prompt, put each image's T embeddings where the prompt holds T image tokens,
prefill the decoder in chunks of `get_max_seq_len`, then decode greedily.

Images are read and preprocessed as Hugging Face's image processors do in their PIL mode
(`Gemma3ImageProcessorPil`, `CLIPImageProcessorPil` for LLaVA), with Pillow but without
transformers or torchvision, following the program's metadata (`image_size`, `image_mean`,
`image_std`, `image_resample`, `image_shortest_edge`; see modules/vision.py):

- files: PNG, JPEG, GIF, WebP, BMP, TIFF... through Pillow; binary PPM/PGM and `.npy` uint8
  arrays through our own readers;
- colour: like the processor's `convert_to_rgb`, greyscale is replicated to RGB, palette and
  other modes are converted by Pillow, and an alpha channel (RGBA, LA, a palette with
  transparency) is composited onto white. Arrays must have 1, 3 or 4 (RGBA) channels;
- resize of the 8-bit image with Pillow's filter `image_resample` (Gemma 3: BILINEAR
  straight to the square `image_size`; LLaVA: BICUBIC of the short side to
  `image_shortest_edge`, then a centre crop to `image_size`), then rescale by 1/255 in
  float64, cast to float32 and normalise with the mean and std.

Pillow itself does the resize, rather than `torch.nn.functional.interpolate`, because
the two differ by up to a few 8-bit levels (Pillow computes in fixed point and rounds);
with Pillow the result matches the processor to float32 rounding
(tests/multimodal/test_hf_processor.py).

Prompts: Gemma 3's processor replaces each image placeholder `<start_of_image>` (BOI) in the
text with `"\\n\\n" BOI <image_soft_token> * tokens_per_image EOI "\\n\\n"`, LLaVA's each
`<image>` with `<image> * tokens_per_image`; `expand_image_placeholders` does the same on ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from executorch_optimum.runtime.generator import GenerationStats, load_executorch_op_libraries
from executorch_optimum.runtime.metadata import ProgramMetadata, read_metadata
from executorch_optimum.runtime.sampling import greedy_token

TOKEN_EMBEDDING = "token_embedding"
VISION_ENCODER = "vision_encoder"
TEXT_DECODER = "text_decoder"

# SigLIP / Gemma 3 image processor defaults: rescale by 1/255, normalise with mean = std = 0.5.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
BILINEAR = 2  # PIL filter codes, as image processors store `resample`


def _dense(tensor: torch.Tensor) -> torch.Tensor:
    """A fresh row-major copy that the next method call cannot overwrite."""
    return torch.empty(tensor.shape, dtype=tensor.dtype).copy_(tensor)


class ImageError(ValueError):
    """An image that cannot be read or preprocessed (missing, not an image, wrong channels)."""


def _read_ppm(data: bytes, source: str) -> torch.Tensor:
    # Binary PPM (P6) / PGM (P5): a header of 4 whitespace-separated fields, then raw 8-bit pixels.
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise ImageError(f"{source}: truncated PPM/PGM header")
        fields.append(data[pos:end])
        pos = end
    try:
        width, height, maxval = (int(f) for f in fields[1:])
    except ValueError as error:
        raise ImageError(f"{source}: bad PPM/PGM header") from error
    if maxval != 255:
        raise ImageError(f"{source}: only 8-bit PPM/PGM is supported (maxval {maxval})")
    channels = 3 if fields[0] == b"P6" else 1
    pixels = data[pos + 1 :]
    if len(pixels) < width * height * channels:
        raise ImageError(f"{source}: truncated pixel data")
    flat = torch.frombuffer(bytearray(pixels[: width * height * channels]), dtype=torch.uint8)
    return flat.reshape(height, width, channels)


def _read_with_pillow(path: Path) -> torch.Tensor:
    """Any format Pillow reads -> uint8 RGB [H, W, 3], alpha composited onto white (as HF does)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
            if has_alpha:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(white, rgba).convert("RGB")
            else:
                rgb = image.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(
            f"{path} is not a supported image (Pillow cannot identify it; binary PPM/PGM and .npy "
            "uint8 [H, W, C] arrays are read too)"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: unreadable image ({error})") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8))


def load_image(path: str | Path) -> torch.Tensor:
    """Reads an image file as uint8 [H, W, C].

    PNG, JPEG and every other format Pillow reads come back as RGB [H, W, 3] (greyscale and
    palette images converted, alpha composited onto white, like HF's `convert_to_rgb`);
    binary PPM/PGM (P6/P5) and `.npy` arrays come back as stored ([H, W, 1] for greyscale),
    `preprocess_image` converts their channels. Raises ImageError (a ValueError) with the
    reason for a missing file or one that is not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no image file at {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"cannot read {path}: {error.strerror or error}") from None
    if data[:2] in (b"P5", b"P6"):
        return _read_ppm(data, str(path))
    if data[:6] == b"\x93NUMPY":
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ImageError(f"{path}: unreadable .npy image ({error})") from error
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.unsqueeze(-1) if tensor.dim() == 2 else tensor
    return _read_with_pillow(path)


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 1 | 3 | 4] -> [H, W, 3]: grey replicated, RGBA composited onto white.

    The arithmetic of HF's `convert_to_rgb` for arrays: alpha * rgb + (1 - alpha) * 255, rounded.
    """
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return image.expand(-1, -1, 3)
    if channels == 4:
        rgb = image[..., :3].to(torch.float64)
        alpha = image[..., 3:].to(torch.float64) / 255
        return torch.round(alpha * rgb + (1 - alpha) * 255).to(torch.uint8)
    raise ImageError(
        f"expected 1 (grey), 3 (RGB) or 4 (RGBA) channels, got {channels} (shape {list(image.shape)})"
    )


def _resize(image: torch.Tensor, height: int, width: int, resample: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> uint8 [height, width, 3] with a Pillow filter (2 BILINEAR, 3 BICUBIC)."""
    import numpy as np
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image.numpy()))
    resized = pil.resize((width, height), resample=Image.Resampling(resample))
    return torch.from_numpy(np.array(resized, dtype=np.uint8))


def _shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    # As HF's get_resize_output_image_size(default_to_square=False): the long side truncates.
    if width <= height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


def _center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[:2]
    if min(height, width) < size:
        raise ImageError(f"cannot centre-crop {size}x{size} from a {height}x{width} image")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def preprocess_image(
    image: torch.Tensor,
    size: int,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    rescale_factor: float = 1 / 255,
    resample: int = BILINEAR,
    shortest_edge: int = 0,
) -> torch.Tensor:
    """uint8 [H, W, 1 | 3 | 4] -> float32 [1, 3, size, size], as HF's PIL image processors do.

    Channels through `to_rgb`; a Pillow resize of the 8-bit image (`resample`), straight to
    size x size (Gemma 3) or, with `shortest_edge`, of the short side to it and then a centre
    crop to size x size (CLIP / LLaVA); rescale in float64 then float32, normalise in float32
    (see the module docstring).
    """
    if not isinstance(image, torch.Tensor):
        raise ImageError(f"expected an image tensor, got {type(image).__name__}")
    if image.dim() != 3:
        raise ImageError(f"expected an image of shape [H, W, C], got {list(image.shape)}")
    if image.dtype != torch.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if min(image.shape[:2]) == 0:
        raise ImageError("the image is empty")
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    target = _shortest_edge_size(height, width, shortest_edge) if shortest_edge else (size, size)
    if (height, width) != target:
        rgb = _resize(rgb, *target, resample)
    if shortest_edge:
        rgb = _center_crop(rgb, size)
    pixels = (rgb.permute(2, 0, 1).unsqueeze(0).to(torch.float64) * rescale_factor).to(torch.float32)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((pixels - mean_t) / std_t).contiguous()


def expand_image_placeholders(
    tokens: Sequence[int],
    num_images: int,
    image_token_id: int,
    tokens_per_image: int,
    boi_token_id: int | None = None,
    eoi_token_id: int | None = None,
    bos_id: int | None = None,
) -> list[int]:
    """Prompt ids with `tokens_per_image` image tokens per image, as the model's processor lays out.

    - ids that already hold `num_images * tokens_per_image` image tokens are returned as is;
    - else each placeholder becomes the image's block: BOI, image tokens, EOI for Gemma 3
      (placeholder BOI; its processor also adds "\\n\\n" around, on text: pass text through
      the tokenizer for those), the image tokens alone for LLaVA (placeholder: one image token);
    - a prompt with neither gets one block per image at its start, after BOS (where the chat
      templates put an image that comes before the text).
    Raises ValueError when the prompt's image tokens or placeholders do not match `num_images`.
    """
    tokens = list(tokens)
    present = tokens.count(image_token_id)
    if present == num_images * tokens_per_image:
        return tokens
    placeholder = boi_token_id if boi_token_id is not None else image_token_id
    if present and placeholder != image_token_id:
        raise ValueError(
            f"the prompt has {present} image tokens (id {image_token_id}) but {num_images} image(s) "
            f"need {num_images * tokens_per_image} ({tokens_per_image} each)"
        )
    block = [
        *([boi_token_id] if boi_token_id is not None else []),
        *[image_token_id] * tokens_per_image,
        *([eoi_token_id] if eoi_token_id is not None else []),
    ]
    placeholders = tokens.count(placeholder)
    if placeholders:
        if placeholders != num_images:
            raise ValueError(
                f"the prompt has {placeholders} image placeholder(s) (id {placeholder}) but "
                f"{num_images} image(s) were given ({tokens_per_image} image tokens each once expanded)"
            )
        out: list[int] = []
        for token in tokens:
            out.extend(block if token == placeholder else [token])
        return out
    start = 1 if bos_id is not None and tokens[:1] == [bos_id] else 0
    return tokens[:start] + block * num_images + tokens[start:]


@dataclass
class MultimodalResult:
    """Generated ids (prompt excluded), why generation stopped, and (optionally) their logits."""

    tokens: list[int]
    stop_reason: str  # "eos", "max_new_tokens" or "context_full"
    logits: list[torch.Tensor] = field(default_factory=list)
    # Prefill time includes embedding the prompt and encoding its images.
    stats: GenerationStats | None = None


class MultimodalGenerator:
    """Chains a multimodal `.pte`'s methods; not thread-safe (the decoder holds the cache)."""

    def __init__(
        self,
        pte: str | Path | bytes,
        load_op_libraries: Callable[[], None] | None = load_executorch_op_libraries,
    ) -> None:
        from executorch.runtime import Runtime

        if load_op_libraries is not None:
            load_op_libraries()
        source = pte if isinstance(pte, bytes) else Path(pte)
        if isinstance(source, Path) and not source.is_file():
            raise FileNotFoundError(f"no .pte at {source}")
        self.program = Runtime.get().load_program(source)
        # executorch.runtime gives every host-only method of one Program the same planned
        # arenas, and the decoder's KV cache lives in them: an embedding call between decode
        # steps would overwrite it. The encoders therefore run from a second Program instance.
        self._encoders = Runtime.get().load_program(source)
        names = set(self.program.method_names)
        missing = {TOKEN_EMBEDDING, TEXT_DECODER} - names
        if missing:
            raise ValueError(
                f"not a multimodal program: no {sorted(missing)} method (it has {sorted(names)})"
            )
        self.metadata: ProgramMetadata = read_metadata(self.program)
        self.image_token_id = self._constant("image_token_id")
        self.image_size = self._constant("image_size")
        self.tokens_per_image = self._constant("tokens_per_image")
        self.boi_token_id = self._constant("boi_token_id")
        self.eoi_token_id = self._constant("eoi_token_id")
        # Programs without these (older exports, Gemma 3 only) get Gemma 3's preprocessing.
        self.image_mean = self._constants("image_mean") or list(DEFAULT_MEAN)
        self.image_std = self._constants("image_std") or list(DEFAULT_STD)
        self.image_resample = self._constant("image_resample") or BILINEAR
        self.image_shortest_edge = self._constant("image_shortest_edge") or 0
        self._embed = self._encoders.load_method(TOKEN_EMBEDDING)
        self._vision = self._encoders.load_method(VISION_ENCODER) if VISION_ENCODER in names else None
        self._decoder = self.program.load_method(TEXT_DECODER)

    def _constants(self, name: str) -> list[float] | None:
        """The values a metadata method returns (a list is returned flattened), or None."""
        if name not in self.program.method_names:
            return None
        values = self.program.load_method(name).execute([])
        return [float(v.item()) if isinstance(v, torch.Tensor) else float(v) for v in values]

    def _constant(self, name: str) -> int | None:
        values = self._constants(name)
        return None if values is None else int(values[0])

    def reset(self) -> None:
        """Reloads the decoder: the KV caches return to their initial state."""
        self._decoder = self.program.load_method(TEXT_DECODER)

    def embed(self, tokens: Sequence[int]) -> torch.Tensor:
        (out,) = self._embed.execute([torch.tensor([list(tokens)], dtype=torch.long)])
        return _dense(out)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels [1, 3, H, W] -> image-token embeddings [1, T, D]."""
        if self._vision is None:
            raise ValueError("the program has no vision_encoder method")
        (out,) = self._vision.execute([_dense(pixel_values.to(torch.float32))])
        return _dense(out)

    def image_pixels(self, image: str | Path | torch.Tensor) -> torch.Tensor:
        """An image file or uint8 [H, W, C] tensor -> the vision encoder's [1, 3, S, S] input.

        Raises ImageError for a missing, unreadable or wrongly shaped image.
        """
        if self.image_size is None:
            raise ValueError("the program has no image_size metadata: pass preprocessed pixel values")
        pixels = load_image(image) if isinstance(image, (str, Path)) else image
        return preprocess_image(
            pixels,
            self.image_size,
            self.image_mean,
            self.image_std,
            resample=self.image_resample,
            shortest_edge=self.image_shortest_edge,
        )

    def prompt_embeddings(self, tokens: Sequence[int], images: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Prompt embeddings [1, S, D], each image's embeddings over its run of image tokens."""
        embeddings = self.embed(tokens)
        slots = [
            i for i, t in enumerate(tokens) if self.image_token_id is not None and t == self.image_token_id
        ]
        features = [self.encode_image(image)[0] for image in images]
        count = sum(f.shape[0] for f in features)
        if count != len(slots):
            raise ValueError(
                f"the prompt has {len(slots)} image tokens but the images give {count} embeddings"
            )
        if features:
            embeddings[0, torch.tensor(slots)] = torch.cat(features).to(embeddings.dtype)
        return embeddings

    def decode_step(self, embeddings: torch.Tensor, start_pos: int) -> torch.Tensor:
        """One text_decoder call at positions start_pos..; returns the last position's logits [V]."""
        positions = torch.arange(start_pos, start_pos + embeddings.shape[1], dtype=torch.long)
        (logits,) = self._decoder.execute([_dense(embeddings), positions])
        return logits.reshape(-1, logits.shape[-1])[-1].clone()

    def prefill(self, embeddings: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """Feeds [1, S, D] in chunks of get_max_seq_len; returns the last logits [V]."""
        length = embeddings.shape[1]
        if length == 0:
            raise ValueError("the prompt is empty")
        if start_pos + length > self.metadata.max_context_len:
            raise ValueError(
                f"prompt of {length} positions at {start_pos} exceeds the context of "
                f"{self.metadata.max_context_len}"
            )
        chunk = self.metadata.max_seq_len if self.metadata.enable_dynamic_shape else 1
        logits = torch.empty(0)
        for begin in range(0, length, chunk):
            logits = self.decode_step(embeddings[:, begin : begin + chunk], start_pos + begin)
        return logits

    def generate(
        self,
        tokens: Sequence[int],
        images: Sequence[torch.Tensor] = (),
        max_new_tokens: int = 32,
        record_logits: bool = False,
        stop_on_eos: bool = True,
    ) -> MultimodalResult:
        """Greedy generation from a fresh cache: prompt ids with image tokens + preprocessed images."""
        self.reset()
        start = time.perf_counter()
        embeddings = self.prompt_embeddings(tokens, images)
        logits = self.prefill(embeddings)
        position = embeddings.shape[1]
        first_token = time.perf_counter()
        calls = -(-position // (self.metadata.max_seq_len if self.metadata.enable_dynamic_shape else 1))
        out: list[int] = []
        recorded: list[torch.Tensor] = []
        eos = set(self.metadata.eos_ids)
        while True:
            if record_logits:
                recorded.append(logits)
            token = greedy_token(logits)
            out.append(token)
            if stop_on_eos and token in eos:
                reason = "eos"
                break
            if len(out) >= max_new_tokens:
                reason = "max_new_tokens"
                break
            if position >= self.metadata.max_context_len:
                reason = "context_full"
                break
            logits = self.decode_step(self.embed([token]), position)
            position += 1
            calls += 1
        end = time.perf_counter()
        stats = GenerationStats(
            prompt_tokens=embeddings.shape[1],
            generated_tokens=len(out),
            prefill_s=first_token - start,
            decode_s=end - first_token,
            time_to_first_token_s=first_token - start,
            forward_calls=calls,
        )
        return MultimodalResult(out, reason, recorded, stats)
