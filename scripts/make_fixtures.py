"""make_fixtures: writes tiny random Llama checkpoints and float64 PyTorch references to test/fixtures/models/<name>/.

Run by hand (needs torch + numpy; tests and CI only read the committed outputs):
    /usr/bin/python3 scripts/make_fixtures.py [--check-only] [name ...]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test", "fixtures", "models")
N_GREEDY = 16
MIN_DISTINCT = 6
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

LLAMA3_ROPE = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
               "original_max_position_embeddings": 64, "rope_type": "llama3"}

# name -> structure, storage and how the reference treats the weights
SPECS = {
    "gqa_f32": dict(heads=4, kv=2, head_dim=16, ffn=96, tied=False, theta=10000.0, rope=None,
                    store="f32", prompt_len=12, min_margin=0.1),
    # tied: stronger layers so the output is not just the input token's own embedding
    "mha_f32": dict(heads=4, kv=4, head_dim=16, ffn=96, tied=True, theta=10000.0, rope=None, std_linear=0.3,
                    store="f32", prompt_len=12, min_margin=0.1),
    "mqa_headdim_f32": dict(heads=4, kv=1, head_dim=24, ffn=96, tied=False, theta=500000.0, rope=LLAMA3_ROPE,
                            store="f32", prompt_len=80, last_positions=8, min_margin=0.1),
    # same seed, weights and references as mqa_headdim_f32; only config.json differs (transformers v5 style)
    "llama3_rope_parameters_f32": dict(heads=4, kv=1, head_dim=24, ffn=96, tied=False, theta=500000.0,
                                       rope=LLAMA3_ROPE, store="f32", prompt_len=80, last_positions=8,
                                       min_margin=0.1, rope_parameters=True, same_as="mqa_headdim_f32"),
    "bf16": dict(heads=4, kv=2, head_dim=16, ffn=96, tied=False, theta=10000.0, rope=None,
                 store="bf16", prompt_len=12, min_margin=0.2),
    "fp8_block": dict(heads=4, kv=2, head_dim=16, ffn=160, tied=False, theta=10000.0, rope=None,
                      store="fp8_block", prompt_len=12, min_margin=0.2),
    "fp8_channel": dict(heads=4, kv=2, head_dim=16, ffn=160, tied=False, theta=10000.0, rope=None,
                        store="fp8_channel", prompt_len=12, min_margin=0.2),
    "q8_0": dict(heads=4, kv=2, head_dim=16, ffn=96, tied=False, theta=10000.0, rope=None,
                 store="f32", q8_0=True, prompt_len=12, min_margin=0.2),
}
HIDDEN, LAYERS, VOCAB, EPS = 64, 2, 256, 1e-5
STD_LINEAR, STD_EMBED, STD_HEAD, STD_NORM = 0.1, 0.3, 0.3, 0.1


def hf_config(spec: dict) -> dict:
    """config.json as transformers writes it for LlamaForCausalLM (4.45 style; v5 style with rope_parameters)."""
    c = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "head_dim": spec["head_dim"], "hidden_act": "silu",
        "hidden_size": HIDDEN, "initializer_range": 0.02, "intermediate_size": spec["ffn"],
        "max_position_embeddings": 512 if spec["rope"] else 256, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": spec["heads"], "num_hidden_layers": LAYERS, "num_key_value_heads": spec["kv"],
        "pretraining_tp": 1, "rms_norm_eps": EPS, "rope_scaling": spec["rope"], "rope_theta": spec["theta"],
        "tie_word_embeddings": spec["tied"],
        "torch_dtype": "float32" if spec["store"] == "f32" else "bfloat16",
        "transformers_version": "4.45.2", "use_cache": True, "vocab_size": VOCAB,
    }
    if spec.get("rope_parameters"):
        rp = dict(spec["rope"] or {"rope_type": "default"}, rope_theta=spec["theta"])
        del c["rope_scaling"], c["rope_theta"]
        c["rope_parameters"] = rp
        c["dtype"] = c.pop("torch_dtype")
        c["transformers_version"] = "5.0.0"
    if spec["store"] == "fp8_block":
        c["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                    "weight_block_size": [128, 128]}
    if spec["store"] == "fp8_channel":
        weights = {"actorder": None, "block_structure": None, "dynamic": False, "group_size": None, "num_bits": 8,
                   "observer": "minmax", "observer_kwargs": {}, "strategy": "channel", "symmetric": True,
                   "type": "float"}
        c["quantization_config"] = {
            "config_groups": {"group_0": {"format": "float-quantized", "input_activations": None,
                                          "output_activations": None, "targets": ["Linear"], "weights": weights}},
            "format": "float-quantized", "global_compression_ratio": None, "ignore": ["lm_head"],
            "kv_cache_scheme": None, "quant_method": "compressed-tensors", "quantization_status": "compressed"}
    return c


def init_weights(spec: dict, rng: np.random.Generator) -> dict:
    """Random float32 weights keyed by HF names."""
    H, K, E, F, D = spec["heads"], spec["kv"], spec["head_dim"], spec["ffn"], HIDDEN
    f32 = np.float32
    w = {"model.embed_tokens.weight": (rng.standard_normal((VOCAB, D)) * STD_EMBED).astype(f32),
         "model.norm.weight": (1 + rng.standard_normal(D) * STD_NORM).astype(f32)}
    shapes = {"self_attn.q_proj": (H * E, D), "self_attn.k_proj": (K * E, D), "self_attn.v_proj": (K * E, D),
              "self_attn.o_proj": (D, H * E), "mlp.gate_proj": (F, D), "mlp.up_proj": (F, D), "mlp.down_proj": (D, F)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = (1 + rng.standard_normal(D) * STD_NORM).astype(f32)
        w[p + "post_attention_layernorm.weight"] = (1 + rng.standard_normal(D) * STD_NORM).astype(f32)
        for name in LINEARS:
            w[p + name + ".weight"] = (rng.standard_normal(shapes[name]) * spec.get("std_linear", STD_LINEAR)).astype(f32)
    if spec["tied"]:
        w["model.embed_tokens.weight"] *= f32(STD_HEAD / STD_EMBED)
    else:
        w["lm_head.weight"] = (rng.standard_normal((VOCAB, D)) * STD_HEAD).astype(f32)
    return w


def is_linear(name: str) -> bool:
    return any(name.endswith(n + ".weight") for n in LINEARS)


def encode(spec: dict, w: dict) -> dict:
    """float32 weights -> safetensors entries {name: (dtype, raw array)} in the spec's storage format."""
    out = {}
    for name, a in w.items():
        if spec["store"] == "f32":
            out[name] = ("F32", a)
        elif spec["store"] == "fp8_block" and is_linear(name):
            codes, s = tl.fp8_block_quantize(a)
            out[name] = ("F8_E4M3", codes)
            out[name + "_scale_inv"] = ("F32", s)
        elif spec["store"] == "fp8_channel" and is_linear(name):
            codes, s = tl.fp8_channel_quantize(a)
            out[name] = ("F8_E4M3", codes)
            out[name[: -len("weight")] + "weight_scale"] = ("F32", s)
        else:
            out[name] = ("BF16", tl.bf16_bits(a))
    return out


def reference_weights(spec: dict, path: str, config: dict) -> tuple:
    """Float64 weights the reference uses: the stored (dequantized) values, then q8_0 round trip if asked."""
    w = tl.load_dense_weights(path, config)
    quantized = []
    if spec.get("q8_0"):
        for name in sorted(w):
            if w[name].ndim == 2:
                w[name] = tl.q8_0_roundtrip(w[name]).astype(np.float64)
                quantized.append(name)
    return w, quantized


def as_torch(w: dict) -> dict:
    return {n: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)) for n, a in w.items()}


def prompt_for(spec: dict, rng: np.random.Generator) -> list:
    return [int(t) for t in rng.integers(3, VOCAB, size=spec["prompt_len"])]  # ids 0..2 are pad/bos/eos


def candidate(spec: dict, seed: int):
    """(weights, prompt) for a seed, deterministic."""
    rng = np.random.default_rng(seed)
    w = init_weights(spec, rng)
    return w, prompt_for(spec, rng)


def pick_seed(name: str, spec: dict, tmp: str, tries: int = 200) -> int:
    """First seed whose float64 greedy path (on the stored weights) has min top1-top2 gap >= spec min_margin
    and is not degenerate (at least MIN_DISTINCT different tokens)."""
    cfg = tl.Config.from_hf(hf_config(spec))
    best = (-1.0, None)
    for seed in range(1000, 1000 + tries):
        w, prompt = candidate(spec, seed)
        tl.write_safetensors(tmp, encode(spec, w))
        rw, _ = reference_weights(spec, tmp, hf_config(spec))
        ids, margins = tl.greedy(cfg, as_torch(rw), prompt, N_GREEDY)
        if len(set(ids)) < MIN_DISTINCT:
            continue
        if min(margins) > best[0]:
            best = (min(margins), seed)
        if min(margins) >= spec["min_margin"]:
            print(f"{name}: seed {seed}, greedy_min_margin {min(margins):.4f}")
            return seed
    raise SystemExit(f"{name}: no seed in {tries} reaches margin {spec['min_margin']} (best {best})")


def sig7(x: float) -> float:
    return float(f"{x:.7g}")


def build(name: str, spec: dict, seed: int) -> None:
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    config = hf_config(spec)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
    w, prompt = candidate(spec, seed)
    st = os.path.join(d, "model.safetensors")
    tl.write_safetensors(st, encode(spec, w), metadata={"format": "pt"})
    rw, quantized = reference_weights(spec, st, config)
    cfg = tl.Config.from_hf(config)
    tw = as_torch(rw)
    logits = tl.forward(cfg, tw, prompt, torch.float64)  # (T, V)
    lp = torch.log_softmax(logits, dim=-1)
    positions = list(range(len(prompt)))[-spec.get("last_positions", len(prompt)):]
    ids, margins = tl.greedy(cfg, tw, prompt, N_GREEDY)
    # how far quantization moved the logprobs from the unrounded float32 draws (a test tolerance must sit below it)
    lp_raw = torch.log_softmax(tl.forward(cfg, as_torch(w), prompt, torch.float64), dim=-1)
    effect = float((lp - lp_raw)[positions].abs().max())
    ref = {
        "seed": seed,
        "weights_dtype": {"f32": "float32", "bf16": "bfloat16", "fp8_block": "float8_e4m3fn",
                          "fp8_channel": "float8_e4m3fn"}[spec["store"]],
        "reference_quantization": "q8_0" if spec.get("q8_0") else None,
        "quantized_tensors": quantized,
        "reference_dtype": "float64",
        "prompt_ids": prompt,
        "logprob_positions": positions,
        "logprobs": [[sig7(v) for v in lp[t].tolist()] for t in positions],
        "greedy_ids": ids,
        "greedy_margins": [sig7(m) for m in margins],
        "greedy_min_margin": sig7(min(margins)),
        "quantization_effect": sig7(effect) if effect > 0 else None,
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        f.write(json.dumps(ref, separators=(",", ":")) + "\n")
    print(f"{name}: wrote {d} (seed {seed}, min margin {min(margins):.4f}, greedy {ids})")


# ---------------------------------------------------------------------------------------------
# self-checks


def check_codecs() -> None:
    codes = np.arange(256, dtype=np.uint8)
    vals = tl.e4m3_decode(codes)
    finite = ~np.isnan(vals)
    assert np.array_equal(tl.e4m3_encode(vals[finite]), codes[finite]), "e4m3 encode(decode(c)) != c"
    assert vals[0x7E] == 448 and vals[0x01] == 2.0 ** -9 and vals[0x08] == 2.0 ** -6 and vals[0x38] == 1.0
    assert tl.e4m3_encode(np.array([1e6, -1e6]))[0] == 0x7E and tl.e4m3_encode(np.array([-1e6]))[0] == 0xFE
    # ties: 1 + 1/16 lies halfway between 1 (0x38, even) and 1.125 (0x39) -> 0x38; 1.1875 -> 1.25 (0x3A)
    assert tl.e4m3_encode(np.array([1.0625, 1.1875])).tolist() == [0x38, 0x3A]
    assert tl.e4m3_encode(np.array([2.0 ** -10]))[0] == 0x00  # half of the smallest subnormal ties to 0 (even)
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 3
    assert np.array_equal(tl.bf16_bits(x), torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)), \
        "bf16 rounding disagrees with torch"
    # q8_0: values, zero block, and the half-away-from-zero rounding
    w = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    w[1, :32] = 0
    r = tl.q8_0_roundtrip(w)
    assert np.all(r[1, :32] == 0)
    for blk in range(6):
        b = w.reshape(-1, 32)[blk]
        d = np.float32(np.abs(b).max() / np.float32(127))
        assert np.max(np.abs(r.reshape(-1, 32)[blk] - b)) <= float(d) * 0.5 * 1.01 + 1e-12
    print("codecs: ok")


def check_model(name: str, spec: dict) -> None:
    """Reload from disk, recompute in float64, compare with reference.json and with the loop formulation."""
    d = os.path.join(ROOT, name)
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(d, "reference.json")) as f:
        ref = json.load(f)
    rw, quantized = reference_weights(spec, os.path.join(d, "model.safetensors"), config)
    assert quantized == ref["quantized_tensors"], f"{name}: quantized_tensors mismatch"
    cfg = tl.Config.from_hf(config)
    tw = as_torch(rw)
    prompt = ref["prompt_ids"]
    logits = tl.forward(cfg, tw, prompt, torch.float64)
    lp = torch.log_softmax(logits, dim=-1)[ref["logprob_positions"]].numpy()
    err = np.max(np.abs(lp - np.array(ref["logprobs"])) / np.maximum(1e-3, np.abs(lp)))
    assert err < 1e-6, f"{name}: stored logprobs differ from recomputed, rel err {err}"
    ids, _ = tl.greedy(cfg, tw, prompt, N_GREEDY)
    assert ids == ref["greedy_ids"], f"{name}: greedy ids {ids} != stored {ref['greedy_ids']}"
    loops = tl.forward_loops_np(cfg, rw, prompt)
    diff = np.max(np.abs(loops - logits.numpy()))
    assert diff < 1e-9, f"{name}: torch forward and loop forward differ by {diff}"
    # f32 torch run stays close to the float64 reference (what a float32 engine should see)
    l32 = torch.log_softmax(tl.forward(cfg, tw, prompt, torch.float32).to(torch.float64), -1)[ref["logprob_positions"]]
    d32 = float((l32.numpy() - lp).__abs__().max())
    if cfg.rope_scaling is not None:  # the scaling must visibly change the stored positions
        plain = tl.Config(**dict(cfg.__dict__, rope_scaling=None))
        lpp = torch.log_softmax(tl.forward(plain, tw, prompt, torch.float64), -1)[ref["logprob_positions"]].numpy()
        eff = float(np.abs(lpp - lp).max())
        assert eff > 1e-2, f"{name}: rope scaling changes logprobs by only {eff}"
        print(f"{name}: rope scaling moves logprobs by {eff:.3f}")
    print(f"{name}: ok (loops diff {diff:.1e}, f32 logprob diff {d32:.1e}, margin {ref['greedy_min_margin']})")


def check_rope() -> None:
    """llama3 inv_freq by hand in float64 agrees with the float32 torch version to float32 rounding."""
    cfg = tl.Config.from_hf(hf_config(SPECS["mqa_headdim_f32"]))
    inv32 = tl.rope_inv_freq(cfg).numpy().astype(np.float64)
    E, s = cfg.head_dim, LLAMA3_ROPE
    for i in range(E // 2):
        f = cfg.rope_theta ** (-2 * i / E)
        wl = 2 * math.pi / f
        if wl < s["original_max_position_embeddings"] / s["high_freq_factor"]:
            g = f
        elif wl > s["original_max_position_embeddings"] / s["low_freq_factor"]:
            g = f / s["factor"]
        else:
            sm = (s["original_max_position_embeddings"] / wl - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"])
            g = (1 - sm) * f / s["factor"] + sm * f
        assert abs(inv32[i] - g) <= 4e-7 * g, f"inv_freq[{i}] {inv32[i]} vs {g}"
    print("rope: ok")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="*", help="fixtures to (re)build; default all")
    ap.add_argument("--check-only", action="store_true", help="only verify the committed fixtures")
    args = ap.parse_args()
    names = args.names or list(SPECS)
    torch.set_num_threads(1)
    check_codecs()
    check_rope()
    if not args.check_only:
        tmp = os.path.join(ROOT, ".seed-search.safetensors")
        os.makedirs(ROOT, exist_ok=True)
        seeds = {}
        for name in names:
            spec = SPECS[name]
            src = spec.get("same_as")
            if src:
                seeds[name] = seeds.get(src) or pick_seed(src, SPECS[src], tmp)
            else:
                seeds[name] = pick_seed(name, spec, tmp)
            build(name, spec, seeds[name])
        if os.path.exists(tmp):
            os.remove(tmp)
    for name in names:
        check_model(name, SPECS[name])


if __name__ == "__main__":
    main()
