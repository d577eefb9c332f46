"""torch_bench: PyTorch CPU prefill throughput of the benchmark's random-weight Llama, one JSON line per (dtype, threads).

usage: python3 scripts/torch_bench.py --config '<json LlamaConfig>' --manifest M --prompt-file F [--threads 1,2]
                                     [--dtypes bf16,f32] [--logits-out PREFIX]

The weights are the benchmark's BF16 GGUF, read through a manifest (file, and per HF name: byte offset, shape,
ggml type, q/k permutation) that bench/core.ts writes with floe's GGUF reader, so torch runs the same model as
floe and llama.cpp; the q/k rows are put back from llama.cpp's interleaved order into HF rotate-half order.

Dimension letters: T tokens, D hidden, H heads, K kv heads, E head dim, F intermediate, V vocab.
The forward is scripts/torch_llama.py's (RMSNorm, rotate-half RoPE with llama3 scaling, GQA, SwiGLU) with the
weights cast once and logits for the last prompt row only, as an inference server computes them.
bf16 linears run through torch's oneDNN matmul; f32 linears are run through oneDNN (mkldnn tensors) too when
available, because Debian's torch otherwise calls the reference BLAS.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_llama import Config, apply_rope, attention, rms_norm, rope_cos_sin  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}


def config_from_floe(c: dict) -> Config:
    """floe LlamaConfig (camelCase JSON) -> torch_llama.Config."""
    s = c.get("ropeScaling")
    scaling = None
    if s and s["type"] == "llama3":
        scaling = {"rope_type": "llama3", "factor": s["factor"], "low_freq_factor": s["lowFreqFactor"],
                   "high_freq_factor": s["highFreqFactor"], "original_max_position_embeddings": s["originalMaxPositionEmbeddings"]}
    elif s and s["type"] == "linear":
        scaling = {"rope_type": "linear", "factor": s["factor"]}
    return Config(vocab_size=c["vocabSize"], hidden_size=c["hiddenSize"], intermediate_size=c["intermediateSize"],
                  num_layers=c["numLayers"], num_heads=c["numHeads"], num_kv_heads=c["numKvHeads"], head_dim=c["headDim"],
                  rms_norm_eps=c["rmsNormEps"], rope_theta=c["ropeTheta"], rope_scaling=scaling,
                  tie_word_embeddings=c["tieWordEmbeddings"])


GGML_F32, GGML_BF16 = 0, 30


def load_manifest_weights(manifest_path: str, cfg: Config, dtype: torch.dtype) -> dict:
    """HF-named weights from the GGUF the manifest describes, cast to `dtype`."""
    with open(manifest_path) as f:
        man = json.load(f)
    mm = np.memmap(man["file"], dtype=np.uint8, mode="c")  # copy-on-write: zero-copy, writable for torch.from_numpy
    w = {}
    for name, t in man["tensors"].items():
        n = int(np.prod(t["shape"]))
        if t["type"] == GGML_BF16:
            raw = mm[t["offset"]:t["offset"] + 2 * n].view(np.int16)
            x = torch.from_numpy(raw).view(torch.bfloat16).reshape(t["shape"])
        elif t["type"] == GGML_F32:
            x = torch.from_numpy(mm[t["offset"]:t["offset"] + 4 * n].view(np.float32)).reshape(t["shape"])
        else:
            raise SystemExit(f"torch_bench: {man['file']}: tensor {name} has ggml type {t['type']}; expected BF16 (30) or F32 (0)")
        if t.get("permute"):
            # gguf rows (n, E/2, 2) -> hf rows (n, 2, E/2), n = heads of this projection
            heads = cfg.num_heads if t["permute"] == "q" else cfg.num_kv_heads
            rows, cols = x.shape
            x = x.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)
        w[name] = x.to(dtype).contiguous()
    return w


def make_linear(w: torch.Tensor, use_mkldnn: bool):
    """x (T, C) -> x wᵀ (T, N)."""
    if use_mkldnn:
        wm = w.to_mkldnn()
        return lambda x: torch._C._nn.mkldnn_linear(x.to_mkldnn(), wm, None).to_dense()
    return lambda x: torch.nn.functional.linear(x, w)


def build(cfg: Config, w: dict, use_mkldnn: bool) -> dict:
    lin = {}
    for n, t in w.items():
        if t.dim() == 2 and n != "model.embed_tokens.weight":
            lin[n] = make_linear(t, use_mkldnn)
    head = w["model.embed_tokens.weight"] if cfg.tie_word_embeddings else w["lm_head.weight"]
    lin["head"] = make_linear(head, use_mkldnn)
    return lin


def prefill_last_logits(cfg: Config, w: dict, lin: dict, ids: list, dtype: torch.dtype) -> torch.Tensor:
    """ids (T) -> logits (V) of the last position."""
    T = len(ids)
    H, K, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]  # (T, D)
    cos, sin = rope_cos_sin(cfg, torch.arange(T), dtype)
    for l in range(cfg.num_layers):
        p = f"model.layers.{l}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = lin[p + "self_attn.q_proj.weight"](h).view(T, H, E)
        k = lin[p + "self_attn.k_proj.weight"](h).view(T, K, E)
        v = lin[p + "self_attn.v_proj.weight"](h).view(T, K, E)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        a = attention(q, k, v).reshape(T, H * E)
        x = x + lin[p + "self_attn.o_proj.weight"](a)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        gate = lin[p + "mlp.gate_proj.weight"](h)  # (T, F)
        up = lin[p + "mlp.up_proj.weight"](h)
        x = x + lin[p + "mlp.down_proj.weight"](torch.nn.functional.silu(gate) * up)
    x = rms_norm(x[-1:], w["model.norm.weight"], cfg.rms_norm_eps)
    return lin["head"](x)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="floe LlamaConfig as JSON")
    ap.add_argument("--manifest", required=True, help="JSON from bench/core.ts describing the BF16 GGUF")
    ap.add_argument("--prompt-file", required=True)
    ap.add_argument("--logits-out", help="write the last-position logits (f32) of the first thread count to PREFIX-<dtype>.bin")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dtypes", default="bf16,f32")
    args = ap.parse_args()
    cfg = config_from_floe(json.loads(args.config))
    with open(args.prompt_file) as f:
        ids = [int(t) for t in f.read().split()]
    threads = [int(t) for t in args.threads.split(",") if t]
    mkldnn = torch.backends.mkldnn.is_available()
    for name in [d for d in args.dtypes.split(",") if d]:
        if name not in DTYPES:
            raise SystemExit(f"torch_bench: unknown dtype {name!r}; known: {', '.join(DTYPES)}")
        dtype = DTYPES[name]
        t0 = time.perf_counter()
        w = load_manifest_weights(args.manifest, cfg, dtype)
        use_mkldnn = mkldnn and dtype == torch.float32
        lin = build(cfg, w, use_mkldnn)
        load_ms = (time.perf_counter() - t0) * 1000
        for n in threads:
            torch.set_num_threads(n)
            with torch.inference_mode():
                prefill_last_logits(cfg, w, lin, ids[:16], dtype)  # warm-up: oneDNN primitive creation, page-in
                t = time.perf_counter()
                logits = prefill_last_logits(cfg, w, lin, ids, dtype)
                ms = (time.perf_counter() - t) * 1000
            if args.logits_out and n == threads[0]:
                logits.float().numpy().tofile(f"{args.logits_out}-{name}.bin")
            print(json.dumps({"engine": "pytorch", "dtype": name, "threads": n, "torch": torch.__version__,
                              "linear": "onednn-mkldnn" if use_mkldnn else "aten", "load_ms": load_ms,
                              "prompt_tokens": len(ids), "prefill_ms": ms, "prefill_tps": len(ids) / (ms / 1000)}), flush=True)
        del w, lin


if __name__ == "__main__":
    main()
