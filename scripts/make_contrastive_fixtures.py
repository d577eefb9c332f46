"""make_contrastive_fixtures: PyTorch float64 references for floe's contrastive objective (src/train/contrastive.ts).

Run by hand (Debian python3-torch): /usr/bin/python3 scripts/make_contrastive_fixtures.py
Writes test/fixtures/contrastive/<case>/{fixture.json, tensors.safetensors}: a batch of (query, positive[, negative])
token sequences on a committed tiny test/fixtures/models checkpoint, pooled (mean or last row of the final-normed
hidden states), L2-normalised, InfoNCE with in-batch negatives at temperature tau (mean over queries), and every
trainable gradient by autograd (full: all weights; LoRA: A and B). T tokens, D hidden, H/K heads, E head dim.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import torch_llama as tl  # noqa: E402
from make_train_fixtures import MODULES, dims, f32, load  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "contrastive")


def hidden(cfg, W, lora, scale, ids):
    """Final-normed hidden states (T, D) of one sequence, positions from 0."""
    H, K, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def lin(x, l, t):
        y = x @ W[f"model.layers.{l}.{MODULES[t]}.weight"].T
        if (l, t) in lora:
            A, B = lora[(l, t)]
            y = y + scale * ((x @ A.T) @ B.T)
        return y

    T = len(ids)
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    cos, sin = tl.rope_cos_sin(cfg, torch.arange(T), torch.float64)
    for l in range(cfg.num_layers):
        p = f"model.layers.{l}."
        h = tl.rms_norm(x, W[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = lin(h, l, "q").view(T, H, E)
        k = lin(h, l, "k").view(T, K, E)
        v = lin(h, l, "v").view(T, K, E)
        q, k = tl.apply_rope(q, cos, sin), tl.apply_rope(k, cos, sin)
        x = x + lin(tl.attention(q, k, v).reshape(T, H * E), l, "o")
        h = tl.rms_norm(x, W[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        x = x + lin(torch.nn.functional.silu(lin(h, l, "gate")) * lin(h, l, "up"), l, "down")
    return tl.rms_norm(x, W["model.norm.weight"], cfg.rms_norm_eps)


def embed(cfg, W, lora, scale, ids, pooling):
    h = hidden(cfg, W, lora, scale, ids)
    v = h.mean(dim=0) if pooling == "mean" else h[-1]
    return torch.nn.functional.normalize(v, dim=0)


def info_nce(cfg, W, lora, scale, pairs, pooling, tau):
    q = torch.stack([embed(cfg, W, lora, scale, p["query"], pooling) for p in pairs])
    docs = [p["positive"] for p in pairs] + [p["negative"] for p in pairs if "negative" in p]
    d = torch.stack([embed(cfg, W, lora, scale, x, pooling) for x in docs])
    logits = q @ d.T / tau
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(pairs)))


def make_pairs(rng, V, shapes):
    out = []
    for s in shapes:
        p = {k: [int(x) for x in rng.integers(3, V, size=n)] for k, n in zip(["query", "positive", "negative"], s)}
        out.append(p)
    return out


def case(name, model, seed, pooling, tau, shapes, lora_spec):
    rng = np.random.default_rng(seed)
    cfg, W = load(model)
    pairs = make_pairs(rng, cfg.vocab_size, shapes)
    tensors = {}
    meta = {"model": model, "pooling": pooling, "temperature": tau, "pairs": pairs}
    if lora_spec is None:
        P = {n: w.clone().requires_grad_(True) for n, w in W.items()}
        loss = info_nce(cfg, P, {}, 0.0, pairs, pooling, tau)
        loss.backward()
        # the LM head is unused by the pooled loss: its gradient is zero
        tensors = {f"grad.{n}": ("F32", f32(p.grad if p.grad is not None else torch.zeros_like(p))) for n, p in P.items()}
        meta["kind"] = "full"
    else:
        rank, alpha, targets = lora_spec
        scale = alpha / rank
        lora = {}
        for l in range(cfg.num_layers):
            for t in targets:
                N, C = dims(cfg, t)
                A = rng.uniform(-1 / math.sqrt(C), 1 / math.sqrt(C), size=(rank, C)).astype(np.float32)
                B = (rng.standard_normal((N, rank)) * 0.1).astype(np.float32)  # non-zero so dA is not trivially 0
                key = f"base_model.model.model.layers.{l}.{MODULES[t]}"
                tensors[f"init.{key}.lora_A.weight"] = ("F32", A)
                tensors[f"init.{key}.lora_B.weight"] = ("F32", B)
                lora[(l, t)] = (torch.tensor(A, dtype=torch.float64, requires_grad=True), torch.tensor(B, dtype=torch.float64, requires_grad=True))
        loss = info_nce(cfg, W, lora, scale, pairs, pooling, tau)
        loss.backward()
        for (l, t), (A, B) in lora.items():
            key = f"base_model.model.model.layers.{l}.{MODULES[t]}"
            tensors[f"grad.{key}.lora_A.weight"] = ("F32", f32(A.grad))
            tensors[f"grad.{key}.lora_B.weight"] = ("F32", f32(B.grad))
        meta.update({"kind": "lora", "rank": rank, "alpha": alpha, "targets": targets})
    meta["loss"] = float(loss)
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    import json
    with open(os.path.join(d, "fixture.json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")
    tl.write_safetensors(os.path.join(d, "tensors.safetensors"), tensors, {"format": "pt"})
    print(name, "loss", meta["loss"])


if __name__ == "__main__":
    torch.manual_seed(0)
    case("full_mean_gqa_f32", "gqa_f32", 5001, "mean", 0.05, [(5, 9, 7), (3, 12), (8, 6, 10), (4, 4)], None)
    case("lora_last_gqa_f32", "gqa_f32", 5002, "last", 0.1, [(6, 8), (9, 5), (3, 11)], (4, 8.0, list(MODULES)))
