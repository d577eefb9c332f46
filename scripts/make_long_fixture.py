"""make_long_fixture: a tiny Llama with `llama3` RoPE scaling and a 131072-token window, with float64 PyTorch
references for a 32K-token prompt and for a short run at positions next to 131071; writes test/fixtures/long/.

Run by hand (needs torch + numpy; the tests only read the committed files; ~5 min on a busy 2-core box):
    /usr/bin/python3 scripts/make_long_fixture.py [--length 32800] [--threads 2]

Dimension letters: T tokens, D hidden, H heads, K kv heads, E head dim, V vocab, C query chunk.
Attention runs in query chunks of C rows against the keys up to the chunk's end, so no (T, T) matrix ever exists.
The prompt is not stored: it is xorshift32(seed) ids, which test/model/long-context.test.ts regenerates.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test", "fixtures", "long")

SEED = 20240723
PROMPT_SEED = 0x5EED1234
D, LAYERS, H, K, E, F, V, EPS = 64, 2, 1, 1, 16, 96, 256, 1e-5
# Llama 3.1's scaling constants, with an original window of 8192 so that a 32K prompt goes far past it:
# wavelengths (theta 5e5, E 16) 6, 32, 167, 860 kept; 4440 blended; 23K, 118K, 610K divided by 8
ROPE = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"}
THETA, MAX_POS = 500000.0, 131072
N_LAST = 8  # logprobs stored for the last N_LAST prompt positions
HIGH_LEN = 48  # the short run sits at positions MAX_POS - HIGH_LEN .. MAX_POS - 1
CHUNK = 256  # C


def xorshift_ids(seed: int, n: int, vocab: int) -> list:
    """n ids in [0, vocab): x ^= x << 13; x ^= x >> 17; x ^= x << 5 (uint32), id = x % vocab."""
    x, out = seed & 0xFFFFFFFF, []
    for _ in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(x % vocab)
    return out


def hf_config() -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "head_dim": E, "hidden_act": "silu", "hidden_size": D,
        "initializer_range": 0.02, "intermediate_size": F, "max_position_embeddings": MAX_POS, "mlp_bias": False,
        "model_type": "llama", "num_attention_heads": H, "num_hidden_layers": LAYERS, "num_key_value_heads": K,
        "pretraining_tp": 1, "rms_norm_eps": EPS, "rope_scaling": ROPE, "rope_theta": THETA,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.45.2",
        "use_cache": True, "vocab_size": V,
    }


def make_weights(rng: np.random.Generator) -> dict:
    """float32 draws; q/k larger than the rest so that attention is peaked and positions matter."""
    w = {"model.embed_tokens.weight": rng.normal(0, 0.3, (V, D)), "lm_head.weight": rng.normal(0, 0.3, (V, D)),
         "model.norm.weight": 1 + rng.normal(0, 0.1, D)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, D)
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, D)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.15, (H * E, D))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.15, (K * E, D))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.3, (K * E, D))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.3, (D, H * E))
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.15, (F, D))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.15, (F, D))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.15, (D, F))
    return {n: a.astype(np.float32) for n, a in w.items()}


def inv_freq_f64(cfg: tl.Config, scaled: bool = True) -> torch.Tensor:
    """(E/2) llama3 inverse frequencies computed in float64 throughout (the exact-math counterpart of HF's f32)."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, E, 2, dtype=torch.float64) / E))
    s = cfg.rope_scaling
    if not scaled or s is None:
        return inv
    low_wl = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wl = s["original_max_position_embeddings"] / s["high_freq_factor"]
    wl = 2 * math.pi / inv
    smooth = (s["original_max_position_embeddings"] / wl - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
    mid = (1 - smooth) * inv / s["factor"] + smooth * inv
    return torch.where(wl > low_wl, inv / s["factor"], torch.where(wl < high_wl, inv, mid))


def rope_angles(cfg: tl.Config, positions: torch.Tensor, mode: str) -> torch.Tensor:
    """positions (T) -> angles (T, E/2) float64.
    hf: as transformers does, f32 inv_freq times f32 position, product rounded to f32;
    f64: the same f32 inv_freq, product in float64; exact: inv_freq and product in float64;
    unscaled: hf without the llama3 scaling (shows that the scaling matters)."""
    if mode == "hf":
        return (positions.to(torch.float32)[:, None] * tl.rope_inv_freq(cfg)[None, :]).to(torch.float64)
    if mode == "f64":
        return positions.to(torch.float64)[:, None] * tl.rope_inv_freq(cfg).to(torch.float64)[None, :]
    if mode == "exact":
        return positions.to(torch.float64)[:, None] * inv_freq_f64(cfg)[None, :]
    if mode == "unscaled":
        plain = tl.Config(**{**cfg.__dict__, "rope_scaling": None})
        return (positions.to(torch.float32)[:, None] * tl.rope_inv_freq(plain)[None, :]).to(torch.float64)
    raise ValueError(mode)


def cos_sin(ang: torch.Tensor, mode: str):
    """HF takes cos/sin of the f32 angle in f32; the other modes in float64. -> (T, E) each, halves duplicated."""
    if mode in ("hf", "unscaled"):
        c, s = ang.to(torch.float32).cos().to(torch.float64), ang.to(torch.float32).sin().to(torch.float64)
    else:
        c, s = ang.cos(), ang.sin()
    return torch.cat([c, c], -1), torch.cat([s, s], -1)


def bf16_round(x: torch.Tensor) -> torch.Tensor:
    """float64 -> f32 -> bf16 (round to nearest even) -> float64, as kvWrite stores a bf16 cache."""
    return x.to(torch.float32).to(torch.bfloat16).to(torch.float64)


def forward_last(cfg: tl.Config, w: dict, ids: list, positions: torch.Tensor, n_last: int, mode: str,
                 kv_bf16: bool) -> torch.Tensor:
    """ids (T) at `positions` -> float64 log-softmax (n_last, V) of the last n_last rows.
    Causal over the sequence order; the last layer only computes the queries that reach the output."""
    W = {n: torch.from_numpy(a.astype(np.float64)) for n, a in w.items()}
    T = len(ids)
    G = H // K
    cos, sin = cos_sin(rope_angles(cfg, positions, mode), mode)
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]  # (T, D)
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        rows = slice(T - n_last, T) if l == LAYERS - 1 else slice(0, T)  # queries needed downstream
        h = tl.rms_norm(x, W[p + "input_layernorm.weight"], EPS)
        k = tl.apply_rope((h @ W[p + "self_attn.k_proj.weight"].T).view(T, K, E), cos, sin)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, K, E)
        if kv_bf16:
            k, v = bf16_round(k), bf16_round(v)
        hq = h[rows]
        q = tl.apply_rope((hq @ W[p + "self_attn.q_proj.weight"].T).view(hq.shape[0], H, E), cos[rows], sin[rows])
        att = torch.empty_like(q)  # (Tq, H, E)
        q0 = rows.start
        for c0 in range(0, q.shape[0], CHUNK):
            c1 = min(q.shape[0], c0 + CHUNK)
            end = q0 + c1  # keys 0 .. end-1
            qpos = torch.arange(q0 + c0, q0 + c1)
            future = torch.arange(end)[None, :] > qpos[:, None]  # (C, end)
            for kh in range(K):
                kk, vv = k[:end, kh], v[:end, kh]  # (end, E)
                for g in range(G):
                    hh = kh * G + g
                    s = q[c0:c1, hh] @ kk.T / math.sqrt(E)  # (C, end)
                    s.masked_fill_(future, float("-inf"))
                    s.sub_(s.max(dim=1, keepdim=True).values).exp_()
                    att[c0:c1, hh] = (s @ vv) / s.sum(dim=1, keepdim=True)
        o = att.reshape(-1, H * E) @ W[p + "self_attn.o_proj.weight"].T
        x = x[rows] + o
        h = tl.rms_norm(x, W[p + "post_attention_layernorm.weight"], EPS)
        g_ = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g_) * u) @ W[p + "mlp.down_proj.weight"].T
    logits = tl.rms_norm(x, W["model.norm.weight"], EPS) @ W["lm_head.weight"].T
    return torch.log_softmax(logits, dim=-1)


def check_chunked_attention(cfg: tl.Config, w: dict) -> float:
    """The chunked forward equals torch_llama.forward (dense (T, T) attention, float64 angles) on a short prompt."""
    ids = xorshift_ids(7, 300, V)
    dense = torch.log_softmax(tl.forward(cfg, {n: torch.from_numpy(a) for n, a in w.items()}, ids), -1)[-N_LAST:]
    mine = forward_last(cfg, w, ids, torch.arange(len(ids)), N_LAST, "f64", False)
    return float((dense - mine).abs().max())


def rounded(t: torch.Tensor) -> list:
    return [[float(f"{v:.7g}") for v in row] for row in t.tolist()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=32800)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(OUT, exist_ok=True)
    cfg_json = hf_config()
    cfg = tl.Config.from_hf(cfg_json)
    w = make_weights(np.random.default_rng(SEED))

    err = check_chunked_attention(cfg, w)
    assert err < 1e-12, f"chunked attention differs from torch_llama.forward by {err}"

    # positions next to the limit: a short run, every angle variant
    hp = torch.arange(MAX_POS - HIGH_LEN, MAX_POS)
    hids = xorshift_ids(PROMPT_SEED ^ 0xABCDEF, HIGH_LEN, V)
    high = {m: forward_last(cfg, w, hids, hp, N_LAST, m, False) for m in ("hf", "f64", "exact", "unscaled")}
    high_bf16 = forward_last(cfg, w, hids, hp, N_LAST, "hf", True)
    dev = lambda m: float((high[m] - high["hf"]).abs().max())  # noqa: E731
    ang_hf, ang_exact = rope_angles(cfg, hp, "hf"), rope_angles(cfg, hp, "exact")
    print(f"high positions: |hf - f64| {dev('f64'):.2e}, |hf - exact| {dev('exact'):.2e}, unscaled {dev('unscaled'):.2e}, "
          f"max angle error {float((ang_hf - ang_exact).abs().max()):.2e} rad", flush=True)

    # the long prompt: f32-angle (HF) reference with an exact KV cache, and with K/V rounded to bf16
    ids = xorshift_ids(PROMPT_SEED, a.length, V)
    pos = torch.arange(a.length)
    t0 = time.time()
    ref = forward_last(cfg, w, ids, pos, N_LAST, "hf", False)
    print(f"long reference: {time.time() - t0:.0f} s", flush=True)
    ref_bf16 = forward_last(cfg, w, ids, pos, N_LAST, "hf", True)
    print(f"long bf16-KV reference: {time.time() - t0:.0f} s", flush=True)

    tensors = {n: ("F32", arr) for n, arr in w.items()}
    tl.write_safetensors(os.path.join(OUT, "model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2, sort_keys=True)
        f.write("\n")
    out = {
        "seed": SEED,
        "reference_dtype": "float64",
        "rope_angles": "f32 position * f32 inv_freq rounded to f32, cos/sin in f32 (transformers)",
        "long": {
            "prompt": {"generator": "xorshift32", "seed": PROMPT_SEED, "length": a.length, "vocab": V,
                       "sum": int(sum(ids)), "first": ids[:4], "last": ids[-4:]},
            "logprob_positions": list(range(a.length - N_LAST, a.length)),
            "logprobs": rounded(ref),
            "logprobs_bf16_kv": rounded(ref_bf16),
            "bf16_kv_effect": float((ref - ref_bf16).abs().max()),
        },
        "high": {
            "prompt": {"generator": "xorshift32", "seed": PROMPT_SEED ^ 0xABCDEF, "length": HIGH_LEN, "vocab": V,
                       "sum": int(sum(hids))},
            "first_position": MAX_POS - HIGH_LEN,
            "logprob_positions": list(range(MAX_POS - N_LAST, MAX_POS)),
            "logprobs": rounded(high["hf"]),
            "logprobs_bf16_kv": rounded(high_bf16),
            "logprobs_f64_angles": rounded(high["f64"]),
            "f64_angle_deviation": dev("f64"),
            "exact_deviation": dev("exact"),
            "unscaled_effect": dev("unscaled"),
            "max_angle_error_rad": float((ang_hf - ang_exact).abs().max()),
        },
        "chunked_vs_dense": err,
    }
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(json.dumps({k: v for k, v in out["long"].items() if "logprobs" not in k}))
    print(json.dumps({k: v for k, v in out["high"].items() if "logprobs" not in k}))


if __name__ == "__main__":
    main()
