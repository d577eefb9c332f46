"""make_train_fixtures: PyTorch float64 references for floe's trainer (LoRA / full fine-tuning gradients, AdamW losses).

Run by hand (Debian python3-torch): /usr/bin/python3 scripts/make_train_fixtures.py
Writes test/fixtures/train/<case>/{fixture.json, tensors.safetensors}; the base models are the committed
test/fixtures/models checkpoints (dequantized exactly, as floe does). Dimension letters: T tokens, D hidden,
H heads, K kv heads, E head dim, V vocab, r LoRA rank, N / C output / input features of a linear.
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import torch_llama as tl  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures")
MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
           "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
ADAM = {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "max_grad_norm": 1.0, "steps": 10}


def make_batch(rng, V, lengths, ignore_first):
    """Packed samples: row t predicts the next token of its sample; the last row of a sample and the first
    ignore_first[i] rows of sample i have no target (-1), like a prompt."""
    tokens, targets, positions, seg = [], [], [], [0]
    for n, skip in zip(lengths, ignore_first):
        ids = [int(x) for x in rng.integers(3, V, size=n)]
        tokens += ids
        targets += [-1 if (j < skip or j == n - 1) else ids[j + 1] for j in range(n)]
        positions += list(range(n))
        seg.append(seg[-1] + n)
    return {"tokens": tokens, "targets": targets, "positions": positions, "segStart": seg}


def loss_fn(cfg, W, lora, scale, batch):
    """Mean cross-entropy over counted rows; each sample runs alone (positions from 0), so packing is not assumed."""
    H, K, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    total = torch.zeros((), dtype=torch.float64)
    count = 0

    def lin(x, l, t):
        y = x @ W[f"model.layers.{l}.{MODULES[t]}.weight"].T
        if (l, t) in lora:
            A, B = lora[(l, t)]
            y = y + scale * ((x @ A.T) @ B.T)
        return y

    seg = batch["segStart"]
    for s in range(len(seg) - 1):
        ids = batch["tokens"][seg[s]:seg[s + 1]]
        tg = batch["targets"][seg[s]:seg[s + 1]]
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
        x = tl.rms_norm(x, W["model.norm.weight"], cfg.rms_norm_eps)
        head = W["model.embed_tokens.weight"] if cfg.tie_word_embeddings else W["lm_head.weight"]
        logp = torch.log_softmax(x @ head.T, dim=-1)
        for j, t in enumerate(tg):
            if t >= 0:
                total = total - logp[j, t]
                count += 1
    return total / count


def load(model):
    d = os.path.join(ROOT, "models", model)
    with open(os.path.join(d, "config.json")) as f:
        hf = json.load(f)
    cfg = tl.Config.from_hf(hf)
    W = {n: torch.tensor(a, dtype=torch.float64) for n, a in tl.load_dense_weights(os.path.join(d, "model.safetensors"), hf).items()}
    return cfg, W


def dims(cfg, t):
    D, F, HE, KE = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return {"q": (HE, D), "k": (KE, D), "v": (KE, D), "o": (D, HE), "gate": (F, D), "up": (F, D), "down": (D, F)}[t]


def f32(a):
    return np.asarray(a.detach().numpy() if torch.is_tensor(a) else a, dtype=np.float32)


def adam_losses(params, decay_flags, closure, lr):
    groups = [{"params": [p for p, d in zip(params, decay_flags) if d], "weight_decay": ADAM["weight_decay"]},
              {"params": [p for p, d in zip(params, decay_flags) if not d], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(ADAM["betas"]), eps=ADAM["eps"])
    losses = []
    for _ in range(ADAM["steps"]):
        opt.zero_grad()
        loss = closure()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, ADAM["max_grad_norm"])
        opt.step()
        losses.append(float(loss))
    return losses


def lora_case(name, model, seed, rank, alpha, targets, rslora, adam):
    rng = np.random.default_rng(seed)
    cfg, W = load(model)
    batch = make_batch(rng, cfg.vocab_size, [7, 5, 9], [0, 2, 3])
    scale = alpha / math.sqrt(rank) if rslora else alpha / rank
    tensors, lora = {}, {}
    for l in range(cfg.num_layers):
        for t in targets:
            N, C = dims(cfg, t)
            A = rng.uniform(-1 / math.sqrt(C), 1 / math.sqrt(C), size=(rank, C)).astype(np.float32)
            B = (rng.standard_normal((N, rank)) * 0.1).astype(np.float32)  # non-zero so dA is not trivially 0
            key = f"base_model.model.model.layers.{l}.{MODULES[t]}"
            tensors[f"init.{key}.lora_A.weight"] = ("F32", A)
            tensors[f"init.{key}.lora_B.weight"] = ("F32", B)
            lora[(l, t)] = (torch.tensor(A, dtype=torch.float64, requires_grad=True), torch.tensor(B, dtype=torch.float64, requires_grad=True))
    loss = loss_fn(cfg, W, lora, scale, batch)
    loss.backward()
    for (l, t), (A, B) in lora.items():
        key = f"base_model.model.model.layers.{l}.{MODULES[t]}"
        tensors[f"grad.{key}.lora_A.weight"] = ("F32", f32(A.grad))
        tensors[f"grad.{key}.lora_B.weight"] = ("F32", f32(B.grad))
    out = {"model": model, "kind": "lora", "rank": rank, "alpha": alpha, "rslora": rslora, "targets": targets,
           "batch": batch, "loss": float(loss)}
    if adam:
        # AdamW from the PEFT start: the stored A, B = 0
        ps = []
        for (A, B) in lora.values():
            A2 = A.detach().clone().requires_grad_(True)
            B2 = torch.zeros_like(B).requires_grad_(True)
            ps.append((A2, B2))
        lora2 = dict(zip(lora.keys(), ps))
        flat = [p for ab in ps for p in ab]
        out["adam"] = dict(ADAM, lr=5e-3, losses=adam_losses(flat, [True] * len(flat), lambda: loss_fn(cfg, W, lora2, scale, batch), 5e-3))
    write(name, out, tensors)


def full_case(name, model, seed, adam):
    rng = np.random.default_rng(seed)
    cfg, W = load(model)
    batch = make_batch(rng, cfg.vocab_size, [6, 8, 4], [1, 0, 2])
    P = {n: w.clone().requires_grad_(True) for n, w in W.items()}
    loss = loss_fn(cfg, P, {}, 0.0, batch)
    loss.backward()
    tensors = {f"grad.{n}": ("F32", f32(p.grad)) for n, p in P.items()}
    out = {"model": model, "kind": "full", "batch": batch, "loss": float(loss)}
    if adam:
        P2 = {n: w.clone().requires_grad_(True) for n, w in W.items()}
        names = sorted(P2)
        out["adam"] = dict(ADAM, lr=1e-3, losses=adam_losses([P2[n] for n in names], [P2[n].dim() == 2 for n in names],
                                                             lambda: loss_fn(cfg, P2, {}, 0.0, batch), 1e-3))
    write(name, out, tensors)


def write(name, meta, tensors):
    d = os.path.join(ROOT, "train", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "fixture.json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")
    tl.write_safetensors(os.path.join(d, "tensors.safetensors"), tensors, {"format": "pt"})
    print(name, "loss", meta["loss"], "adam", meta.get("adam", {}).get("losses"))


def all_cases():
    torch.manual_seed(0)
    lora_case("lora_gqa_f32", "gqa_f32", 4001, 4, 8.0, list(MODULES), False, adam=True)
    lora_case("lora_bf16_subset_rslora", "bf16", 4002, 2, 4.0, ["q", "v", "down"], True, adam=False)
    lora_case("lora_fp8_block", "fp8_block", 4003, 4, 16.0, list(MODULES), False, adam=False)
    full_case("full_gqa_f32", "gqa_f32", 4004, adam=True)
    full_case("full_mha_tied_f32", "mha_f32", 4005, adam=False)


def byte_level_char(b):
    """GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to 256 + n."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    if b in printable:
        return chr(b)
    n = sum(1 for x in range(b) if x not in printable)
    return chr(256 + n)


def write_tokenizer():
    """A tiny byte-level BPE tokenizer for the 256-token fixture models: <unk> 0, <s> 1, </s> 2, printable ASCII,
    newline, and a few merges; BOS added by the post-processor; a small chat template in tokenizer_config.json."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in [10] + list(range(32, 127)):
        vocab[byte_level_char(b)] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                         for c, i in [("<unk>", 0), ("<s>", 1), ("</s>", 2)]],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 256,
           "tokenizer_class": "PreTrainedTokenizerFast",
           "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"}
    d = os.path.join(ROOT, "train", "tokenizer")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f, indent=1, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


if __name__ == "__main__":
    # no argument: everything; "tokenizer" or "cases": one part
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("all", "tokenizer"):
        write_tokenizer()
    if what in ("all", "cases"):
        all_cases()
