"""torch_lora_bench: PyTorch CPU LoRA training step throughput and peak RSS for one config, one JSON line on stdout.

usage: python3 scripts/torch_lora_bench.py --config '<json LlamaConfig>' --manifest M --tokens F --dtype f32|bf16
                                          [--threads 2] [--seq 512] [--rank 16] [--warmup 1] [--steps 3] [--ckpt]

The model is bench/train.ts's random-weight BF16 GGUF (read through the manifest, as scripts/torch_bench.py does),
written in plain torch: frozen base (no grad), LoRA A (r, C) / B (N, r) on q,k,v,o,gate,up,down with alpha = 2r,
PEFT init (A kaiming-uniform, B = 0), f32 LoRA parameters, torch.optim.AdamW on them only; loss = mean
cross-entropy over every row. One step = zero_grad + forward + backward + AdamW, timed after warm-up steps.
Run one config per process: ru_maxrss is the process peak.

Precision: f32 = f32 weights and activations; bf16 = bf16 weights and activations (LoRA factors cast to bf16 in
the forward, softmax and loss in f32). Debian's torch has no BLAS (generic gemm, ~1.5 GFLOPS), so every f32 matmul
(linears, head, attention) goes through oneDNN's inner product (mkldnn_linear, which has autograd) instead; bf16
matmuls already use oneDNN.
Dimension letters: T tokens, D hidden, H heads, K kv heads, E head dim, F intermediate, V vocab, r rank.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn.functional as Fn
import torch.utils.checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bench import config_from_floe, load_manifest_weights  # noqa: E402
from torch_llama import apply_rope, rms_norm, rope_cos_sin  # noqa: E402

TARGETS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
           "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def mm_onednn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (M, C) @ b (N, C)ᵀ -> (M, N) in f32 through oneDNN (autograd: mkldnn_linear_backward)."""
    return torch._C._nn.mkldnn_linear(a.contiguous().to_mkldnn(), b.contiguous(), None).to_dense()


def mm_aten(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return Fn.linear(a, b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="floe LlamaConfig as JSON")
    ap.add_argument("--manifest", required=True, help="JSON describing the BF16 GGUF (bench/train.ts writes it)")
    ap.add_argument("--tokens", required=True, help="whitespace-separated token ids, at least seq + 1")
    ap.add_argument("--dtype", choices=["f32", "bf16"], required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--ckpt", action="store_true", help="activation checkpointing per decoder layer")
    args = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config_from_floe(json.loads(args.config))
    dtype = torch.float32 if args.dtype == "f32" else torch.bfloat16
    mm = mm_onednn if dtype == torch.float32 else mm_aten
    with open(args.tokens) as f:
        ids = [int(t) for t in f.read().split()]
    T = args.seq
    if len(ids) < T + 1:
        raise SystemExit(f"torch_lora_bench: {args.tokens} has {len(ids)} ids, need seq + 1 = {T + 1}")
    tokens = torch.tensor(ids[:T])
    targets = torch.tensor(ids[1:T + 1])

    w = load_manifest_weights(args.manifest, cfg, dtype)  # frozen: requires_grad stays False
    weight_bytes = sum(t.numel() * t.element_size() for t in w.values())
    H, K, E, L = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.num_layers
    r = args.rank
    scale = (2 * r) / r
    lora = {}  # (layer, target) -> (A, B)
    params = []
    for l in range(L):
        for t, mod in TARGETS.items():
            N, C = w[f"model.layers.{l}.{mod}.weight"].shape
            a = torch.empty(r, C).uniform_(-1 / math.sqrt(C), 1 / math.sqrt(C)).requires_grad_(True)
            b = torch.zeros(N, r).requires_grad_(True)
            lora[(l, t)] = (a, b)
            params += [a, b]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    cos, sin = rope_cos_sin(cfg, torch.arange(T), dtype)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    group = H // K

    def linear(x: torch.Tensor, l: int, t: str) -> torch.Tensor:
        a, b = lora[(l, t)]
        if dtype != torch.float32:
            a, b = a.to(dtype), b.to(dtype)
        return mm(x, w[f"model.layers.{l}.{TARGETS[t]}.weight"]) + scale * mm(mm(x, a), b)

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (T, H, E), k/v (T, K, E) -> (T, H*E), causal, GQA."""
        if dtype == torch.float32:
            outs = []
            for h in range(H):
                s = mm(q[:, h, :], k[:, h // group, :]) / math.sqrt(E)  # (T, T)
                p = torch.softmax(s.masked_fill(causal, float("-inf")), dim=-1)
                outs.append(mm(p, v[:, h // group, :].t()))  # (T, E)
            return torch.cat(outs, dim=1)
        kk = k.repeat_interleave(group, dim=1).transpose(0, 1)  # (H, T, E)
        vv = v.repeat_interleave(group, dim=1).transpose(0, 1)
        s = torch.matmul(q.transpose(0, 1), kk.transpose(1, 2)) / math.sqrt(E)  # (H, T, T)
        p = torch.softmax(s.float().masked_fill(causal, float("-inf")), dim=-1).to(dtype)
        return torch.matmul(p, vv).transpose(0, 1).reshape(T, H * E)

    def block(l: int, x: torch.Tensor) -> torch.Tensor:
        p = f"model.layers.{l}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = linear(h, l, "q").view(T, H, E)
        k = linear(h, l, "k").view(T, K, E)
        v = linear(h, l, "v").view(T, K, E)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        x = x + linear(attention(q, k, v), l, "o")
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        return x + linear(Fn.silu(linear(h, l, "gate")) * linear(h, l, "up"), l, "down")

    head = w["model.embed_tokens.weight"] if cfg.tie_word_embeddings else w["lm_head.weight"]

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        x = w["model.embed_tokens.weight"][tokens]  # (T, D)
        for l in range(L):
            if args.ckpt:
                x = torch.utils.checkpoint.checkpoint(block, l, x, use_reentrant=False)
            else:
                x = block(l, x)
        x = rms_norm(x, w["model.norm.weight"], cfg.rms_norm_eps)
        loss = Fn.cross_entropy(mm(x, head).float(), targets)  # (T, V) logits
        loss.backward()
        opt.step()
        return float(loss)

    load_ms = (time.perf_counter() - t_start) * 1000
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    warm, warm_losses = [], []
    for _ in range(args.warmup):
        t0 = time.perf_counter()
        warm_losses.append(step())
        warm.append((time.perf_counter() - t0) * 1000)
    ms, losses = [], []
    cpu0 = time.process_time()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        ms.append((time.perf_counter() - t0) * 1000)
    cpu_ms = (time.process_time() - cpu0) * 1000 / args.steps  # ≈ threads × wall time on a quiet machine
    med = sorted(ms)[(len(ms) - 1) // 2]
    print(json.dumps({
        "engine": "pytorch", "torch": torch.__version__, "dtype": args.dtype, "threads": args.threads, "seq": T,
        "rank": r, "ckpt": args.ckpt, "matmul": "onednn mkldnn_linear" if dtype == torch.float32 else "aten (onednn bf16)",
        "load_ms": load_ms, "warmup_ms": warm, "step_ms": ms, "median_step_ms": med, "tokens_per_s": T / (med / 1000),
        "mean_tokens_per_s": T * len(ms) / (sum(ms) / 1000), "cpu_ms_per_step": cpu_ms, "losses": losses,
        "first_loss": (warm_losses + losses)[0],  # LoRA B = 0: the base model's loss
        "lora_params": sum(p.numel() for p in params), "weight_bytes": weight_bytes,
        "peak_rss_after_load": rss_after_load, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }), flush=True)


if __name__ == "__main__":
    main()
