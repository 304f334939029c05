"""Image-text-to-text generation over a `.pte` with ExecuTorch's multimodal method names.

The program holds `token_embedding(ids [1, S]) -> [1, S, D]`,
`vision_encoder(pixels [1, 3, H, W]) -> [1, T, D]` and
`text_decoder(embeddings [1, S, D], cache_position [S]) -> logits`, plus runner metadata
(`get_max_seq_len`, `get_max_context_len`, `get_eos_ids`, `image_token_id`, `image_size`).
We embed the prompt, put each image's T embeddings where the prompt holds T image tokens,
prefill the decoder in chunks of `get_max_seq_len`, then decode greedily. Image files are read
and preprocessed without torchvision or PIL (resize, rescale, normalise in torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from executorch_optimum.runtime.generator import load_executorch_op_libraries
from executorch_optimum.runtime.metadata import ProgramMetadata, read_metadata

TOKEN_EMBEDDING = "token_embedding"
VISION_ENCODER = "vision_encoder"
TEXT_DECODER = "text_decoder"

# SigLIP / Gemma 3 image processor defaults: rescale by 1/255, normalise with mean = std = 0.5.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


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


def load_image(path: str | Path) -> torch.Tensor:
    """Reads an image file as uint8 [H, W, C]: binary PPM/PGM (P6/P5) or a .npy array.

    Raises ImageError (a ValueError) with the reason for a missing file or one that is not an
    image; channel checks happen in `preprocess_image`.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no image file at {path}")
    data = path.read_bytes()
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
    raise ImageError(f"{path} is not a supported image (binary PPM/PGM or .npy uint8 [H, W, C])")


def preprocess_image(
    image: torch.Tensor,
    size: int,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    rescale_factor: float = 1 / 255,
) -> torch.Tensor:
    """uint8 [H, W, 3] (or [H, W, 1], replicated) -> float32 [1, 3, size, size].

    Bilinear resize with antialiasing (what PIL's BILINEAR does when shrinking), rounded back to
    8 bits like a PIL image, then rescaled and normalised as Gemma 3's image processor does.
    """
    if not isinstance(image, torch.Tensor):
        raise ImageError(f"expected an image tensor, got {type(image).__name__}")
    if image.dim() != 3:
        raise ImageError(f"expected an image of shape [H, W, C], got {list(image.shape)}")
    channels = image.shape[-1]
    if channels == 1:
        image = image.expand(-1, -1, 3)
    elif channels != 3:
        raise ImageError(f"expected 1 or 3 channels (RGB), got {channels} (shape {list(image.shape)})")
    if image.dtype != torch.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if min(image.shape[:2]) == 0:
        raise ImageError("the image is empty")
    pixels = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    if tuple(pixels.shape[-2:]) != (size, size):
        pixels = F.interpolate(
            pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        pixels = pixels.round().clamp(0, 255)
    pixels = pixels * rescale_factor
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((pixels - mean_t) / std_t).contiguous()


@dataclass
class MultimodalResult:
    """Generated ids (prompt excluded), why generation stopped, and (optionally) their logits."""

    tokens: list[int]
    stop_reason: str  # "eos", "max_new_tokens" or "context_full"
    logits: list[torch.Tensor] = field(default_factory=list)


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
        self._embed = self._encoders.load_method(TOKEN_EMBEDDING)
        self._vision = self._encoders.load_method(VISION_ENCODER) if VISION_ENCODER in names else None
        self._decoder = self.program.load_method(TEXT_DECODER)

    def _constant(self, name: str) -> int | None:
        if name not in self.program.method_names:
            return None
        (value,) = self.program.load_method(name).execute([])
        return int(value.item()) if isinstance(value, torch.Tensor) else int(value)

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
        return preprocess_image(pixels, self.image_size)

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
        embeddings = self.prompt_embeddings(tokens, images)
        logits = self.prefill(embeddings)
        position = embeddings.shape[1]
        out: list[int] = []
        recorded: list[torch.Tensor] = []
        eos = set(self.metadata.eos_ids)
        while True:
            if record_logits:
                recorded.append(logits)
            token = int(logits.argmax())
            out.append(token)
            if stop_on_eos and token in eos:
                return MultimodalResult(out, "eos", recorded)
            if len(out) >= max_new_tokens:
                return MultimodalResult(out, "max_new_tokens", recorded)
            if position >= self.metadata.max_context_len:
                return MultimodalResult(out, "context_full", recorded)
            logits = self.decode_step(self.embed([token]), position)
            position += 1
