#!/usr/bin/env python3
# Writes test/fixtures/gguf-independent/: a tiny Llama GGUF written by llama.cpp's own `gguf` Python package (not by
# floe), with F32 / F16 / Q8_0 tensors and the SentencePiece vocabulary of test/fixtures/spm/, plus the logits of a
# float64 numpy forward pass over the weights as stored (llama.cpp layout: Q/K rows in GGUF order, RoPE on adjacent
# pairs), so that floe's loader (Q/K un-permutation, dequantization) and forward are checked against an outside writer.
#
# Run by hand. gguf-py comes from the llama.cpp source that node-llama-cpp ships as a git bundle:
#   git clone -q /work/main/bench/node_modules/node-llama-cpp/llama/gitRelease.bundle /tmp/llama-src
#   GGUF_PY=/tmp/llama-src/gguf-py /usr/bin/python3 scripts/make_independent_gguf.py
import json
import os
import subprocess
import sys

GGUF_PY = os.environ.get("GGUF_PY", "/tmp/llama-src/gguf-py")
sys.path.insert(0, GGUF_PY)
import numpy as np  # noqa: E402
import gguf  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "test", "fixtures", "gguf-independent")
V, D, F, L, H, K, E = 3000, 64, 128, 2, 4, 2, 16
EPS, THETA = 1e-5, 10000.0
PROMPT = [1, 450, 17, 2950, 3, 261, 1200, 9, 2999, 500]
# stored type per tensor kind: every GGUF type floe reads from llama.cpp files appears
KIND = {
    "token_embd": "q8_0", "output": "f16", "attn_q": "q8_0", "attn_k": "f16", "attn_v": "q8_0",
    "attn_output": "f32", "ffn_gate": "q8_0", "ffn_up": "f16", "ffn_down": "q8_0",
}
QT = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}


def stored(w: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(bytes or array to write, the float64 values llama.cpp will see)."""
    if kind == "f32":
        a = w.astype(np.float32)
        return a, a.astype(np.float64)
    if kind == "f16":
        a = w.astype(np.float16)
        return a, a.astype(np.float64)
    q = quantize(w.astype(np.float32), QT[kind])
    return q, dequantize(q, QT[kind]).astype(np.float64).reshape(w.shape)


def rmsnorm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS) * w


def rope_adjacent(x: np.ndarray) -> np.ndarray:
    """(T, heads, E): rotate pairs (2i, 2i+1) by pos * THETA^(-2i/E) (ggml rope mode 0, as llama.cpp runs Llama)."""
    T = x.shape[0]
    inv = THETA ** (-np.arange(0, E, 2, dtype=np.float64) / E)  # (E/2)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]  # (T, E/2)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def forward(W: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """(T, V) logits, float64, causal attention with GQA."""
    T = len(ids)
    x = W["token_embd.weight"][ids]  # (T, D)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(L):
        p = f"blk.{i}."
        h = rmsnorm(x, W[p + "attn_norm.weight"])
        q = rope_adjacent((h @ W[p + "attn_q.weight"].T).reshape(T, H, E))
        k = rope_adjacent((h @ W[p + "attn_k.weight"].T).reshape(T, K, E))
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, K, E)
        att = np.empty((T, H, E))
        for hh in range(H):
            kv = hh // (H // K)
            sc = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(E) + mask
            sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
            att[:, hh, :] = (sc / sc.sum(axis=-1, keepdims=True)) @ v[:, kv, :]
        x = x + att.reshape(T, H * E) @ W[p + "attn_output.weight"].T
        h = rmsnorm(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    return rmsnorm(x, W["output_norm.weight"]) @ W["output.weight"].T


def main() -> None:
    spm = json.load(open(os.path.join(ROOT, "test", "fixtures", "spm", "sentencepiece.json"), encoding="utf-8"))
    assert len(spm["vocab"]) == V
    rng = np.random.default_rng(20261203)
    shapes = {"token_embd.weight": (V, D), "output_norm.weight": (D,), "output.weight": (V, D)}
    for i in range(L):
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm.weight": (D,), p + "ffn_norm.weight": (D,),
            p + "attn_q.weight": (H * E, D), p + "attn_k.weight": (K * E, D), p + "attn_v.weight": (K * E, D),
            p + "attn_output.weight": (D, H * E), p + "ffn_gate.weight": (F, D), p + "ffn_up.weight": (F, D),
            p + "ffn_down.weight": (D, F),
        })
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "tiny-llama.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-llama-independent")
    w.add_context_length(256)
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(K)
    w.add_rope_dimension_count(E)
    w.add_rope_freq_base(THETA)
    w.add_layer_norm_rms_eps(EPS)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("llama")
    w.add_token_list([v["piece"] for v in spm["vocab"]])
    w.add_token_scores([v["score"] for v in spm["vocab"]])
    w.add_token_types([v["type"] for v in spm["vocab"]])
    w.add_bos_token_id(spm["bos_id"])
    w.add_eos_token_id(spm["eos_id"])
    w.add_unk_token_id(spm["unk_id"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    values: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            a = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            data, values[name], types[name] = a, a.astype(np.float64), "f32"
        else:
            kind = KIND[name.split(".")[-2]]
            scale = 0.6 if name == "token_embd.weight" else 1.2 / np.sqrt(shape[1])
            data, values[name] = stored(rng.standard_normal(shape) * scale, kind)
            types[name] = kind
        if data.dtype == np.uint8:
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=QT[types[name]])
        else:
            w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    logits = forward(values, PROMPT)  # (T, V)
    logits.astype("<f4").tofile(os.path.join(OUT, "logits.f32"))
    rev = subprocess.run(["git", "-C", os.path.dirname(GGUF_PY), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    ver = open(os.path.join(GGUF_PY, "pyproject.toml")).read().split('version = "')[1].split('"')[0]
    meta = {
        "writer": f"llama.cpp gguf-py {ver} (llama.cpp {rev or 'unknown commit'}), numpy {np.__version__}",
        "prompt_ids": PROMPT,
        "logits": {"file": "logits.f32", "dtype": "float32 little-endian", "shape": [len(PROMPT), V],
                    "how": "float64 numpy forward over the dequantized stored weights, RoPE on adjacent pairs (llama.cpp layout)"},
        "tensor_types": types,
        "config": {"vocab": V, "hidden": D, "ffn": F, "layers": L, "heads": H, "kv_heads": K, "head_dim": E, "rms_eps": EPS, "rope_theta": THETA},
    }
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{path}: {os.path.getsize(path)} bytes; logits {logits.shape}, top ids {logits.argmax(-1).tolist()}")


if __name__ == "__main__":
    main()
