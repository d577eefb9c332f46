"""torch_llama: a plain-torch Llama forward pass, pure-python safetensors I/O and fp8/q8_0/bf16 codecs (reference only).

Dimension letters: T tokens, D hidden, H heads, K kv heads, E head dim, F intermediate, V vocab.
Written from the architecture (RMSNorm, rotate-half RoPE with HF `llama3` scaling, GQA, SwiGLU);
weights are a dict keyed by HF tensor names. Runs in any torch dtype; float64 gives the references.
"""
import json
import math
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch


# ---------------------------------------------------------------------------------------------
# config


@dataclass
class Config:
    vocab_size: int  # V
    hidden_size: int  # D
    intermediate_size: int  # F
    num_layers: int
    num_heads: int  # H
    num_kv_heads: int  # K
    head_dim: int  # E
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Optional[dict]  # None or {"rope_type": "llama3", factor, low_freq_factor, ...}
    tie_word_embeddings: bool

    @staticmethod
    def from_hf(c: dict) -> "Config":
        """Reads HF config.json: rope either as rope_theta + rope_scaling or as the newer rope_parameters."""
        rp = c.get("rope_parameters")
        if rp is not None:
            theta = float(rp["rope_theta"])
            kind = rp.get("rope_type", "default")
            scaling = None if kind == "default" else dict(rp)
        else:
            theta = float(c.get("rope_theta", 10000.0))
            scaling = c.get("rope_scaling")
        if scaling is not None:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind not in ("llama3", "linear"):
                raise ValueError(f"rope type {kind!r} is not supported")
            scaling = dict(scaling, rope_type=kind)
        H = c["num_attention_heads"]
        return Config(
            vocab_size=c["vocab_size"],
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=H,
            num_kv_heads=c.get("num_key_value_heads", H),
            head_dim=c.get("head_dim") or c["hidden_size"] // H,
            rms_norm_eps=float(c["rms_norm_eps"]),
            rope_theta=theta,
            rope_scaling=scaling,
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        )


def rope_inv_freq(cfg: Config) -> torch.Tensor:
    """(E/2) float32 inverse frequencies, computed in float32 the way transformers does (default / linear / llama3)."""
    E = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, E, 2, dtype=torch.int64).to(torch.float32) / E))
    s = cfg.rope_scaling
    if s is None:
        return inv
    if s["rope_type"] == "linear":
        return inv / s["factor"]
    # llama3: long wavelengths divided by factor, short kept, the band between blended (all float32 ops)
    factor = s["factor"]
    low, high = s["low_freq_factor"], s["high_freq_factor"]
    old_ctx = s["original_max_position_embeddings"]
    low_wavelen = old_ctx / low
    high_wavelen = old_ctx / high
    wavelen = 2 * math.pi / inv
    out = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, out)


# ---------------------------------------------------------------------------------------------
# model


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x (T, D) -> (T, D); statistics in at least float32, like HF LlamaRMSNorm."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(acc)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * y.to(x.dtype)


def rope_cos_sin(cfg: Config, positions: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """positions (T) -> cos, sin (T, E): angle pos * inv_freq (float32 inv_freq, product in float64), halves duplicated."""
    inv = rope_inv_freq(cfg).to(torch.float64)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]  # (T, E/2)
    ang = torch.cat([ang, ang], dim=-1)  # (T, E)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (T, n, E): rotate-half layout, pair (i, i + E/2) rotated by angle i."""
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q (T, H, E), k/v (T, K, E) -> (T, H, E); causal, query head h reads kv head h // (H/K)."""
    T, H, E = q.shape
    K = k.shape[1]
    k = k.repeat_interleave(H // K, dim=1)  # (T, H, E)
    v = v.repeat_interleave(H // K, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(E)  # (H, T, T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    p = torch.softmax(scores.to(acc), dim=-1).to(q.dtype)
    return torch.einsum("hts,shd->thd", p, v)


def forward(cfg: Config, w: Dict[str, torch.Tensor], ids: List[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """ids (T) -> logits (T, V), positions 0..T-1; every weight is cast to `dtype` first."""
    W = {n: t.to(dtype) for n, t in w.items()}
    T = len(ids)
    H, K, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]  # (T, D)
    cos, sin = rope_cos_sin(cfg, torch.arange(T), dtype)
    for l in range(cfg.num_layers):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, H, E)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, K, E)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, K, E)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        a = attention(q, k, v).reshape(T, H * E)
        x = x + a @ W[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        g = h @ W[p + "mlp.gate_proj.weight"].T  # (T, F)
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, W["model.norm.weight"], cfg.rms_norm_eps)
    head = W["model.embed_tokens.weight"] if cfg.tie_word_embeddings else W["lm_head.weight"]
    return x @ head.T  # (T, V)


def greedy(cfg: Config, w: Dict[str, torch.Tensor], prompt: List[int], n: int,
           dtype: torch.dtype = torch.float64) -> Tuple[List[int], List[float]]:
    """n greedy tokens after prompt (full recompute each step), and the top1-top2 logit gap at each step."""
    ids = list(prompt)
    out, margins = [], []
    for _ in range(n):
        logits = forward(cfg, w, ids, dtype)[-1].to(torch.float64)
        top = torch.topk(logits, 2)
        out.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        ids.append(out[-1])
    return out, margins


# ---------------------------------------------------------------------------------------------
# independent check: the same model with explicit per-position / per-head loops in numpy float64


def forward_loops_np(cfg: Config, w: Dict[str, np.ndarray], ids: List[int]) -> np.ndarray:
    """ids (T) -> logits (T, V) in float64; written without torch, loops over positions, heads and keys."""
    W = {n: np.asarray(t, dtype=np.float64) for n, t in w.items()}
    T, H, K, E = len(ids), cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    inv = rope_inv_freq(cfg).numpy().astype(np.float64)  # (E/2)

    def norm(v, g):
        return g * v / math.sqrt(float(np.dot(v, v)) / v.shape[0] + cfg.rms_norm_eps)

    def rope(vec, pos):  # vec (E): pair (i, i + E/2) rotated by pos * inv[i]
        out = np.empty_like(vec)
        for i in range(E // 2):
            c, s = math.cos(pos * inv[i]), math.sin(pos * inv[i])
            a, b = vec[i], vec[i + E // 2]
            out[i] = a * c - b * s
            out[i + E // 2] = b * c + a * s
        return out

    xs = [W["model.embed_tokens.weight"][t].copy() for t in ids]
    for l in range(cfg.num_layers):
        p = f"model.layers.{l}."
        keys, vals = [], []  # per position: (K, E)
        for t in range(T):
            h = norm(xs[t], W[p + "input_layernorm.weight"])
            q = (W[p + "self_attn.q_proj.weight"] @ h).reshape(H, E)
            k = (W[p + "self_attn.k_proj.weight"] @ h).reshape(K, E)
            v = (W[p + "self_attn.v_proj.weight"] @ h).reshape(K, E)
            keys.append(np.stack([rope(k[j], t) for j in range(K)]))
            vals.append(v)
            heads = []
            for hh in range(H):
                qh = rope(q[hh], t)
                kv = hh // (H // K)
                s = [float(np.dot(qh, keys[u][kv])) / math.sqrt(E) for u in range(t + 1)]
                m = max(s)
                e = [math.exp(x - m) for x in s]
                z = sum(e)
                heads.append(sum(e[u] / z * vals[u][kv] for u in range(t + 1)))
            xs[t] = xs[t] + W[p + "self_attn.o_proj.weight"] @ np.concatenate(heads)
            h = norm(xs[t], W[p + "post_attention_layernorm.weight"])
            g = W[p + "mlp.gate_proj.weight"] @ h
            u = W[p + "mlp.up_proj.weight"] @ h
            xs[t] = xs[t] + W[p + "mlp.down_proj.weight"] @ (g / (1 + np.exp(-g)) * u)
    head = W["model.embed_tokens.weight"] if cfg.tie_word_embeddings else W["lm_head.weight"]
    return np.stack([head @ norm(x, W["model.norm.weight"]) for x in xs])


# ---------------------------------------------------------------------------------------------
# codecs: bf16, OCP fp8 E4M3FN, llama.cpp q8_0 (numpy; torch 1.13 has no float8)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even (no NaN inputs expected)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def e4m3_decode(code: np.ndarray) -> np.ndarray:
    """uint8 E4M3FN codes -> float32 (bias 7; exponent 0 is subnormal m/8 * 2^-6; 0x7F/0xFF NaN, no inf)."""
    c = code.astype(np.int64)
    sign = np.where(c & 0x80, -1.0, 1.0)
    e = (c >> 3) & 0xF
    m = c & 0x7
    mag = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7))
    mag = np.where((c & 0x7F) == 0x7F, np.nan, mag)
    return (sign * mag).astype(np.float32)


_E4M3_POS = e4m3_decode(np.arange(0x7F, dtype=np.uint8)).astype(np.float64)  # codes 0..126, increasing, max 448


def e4m3_encode(x: np.ndarray) -> np.ndarray:
    """float -> uint8 E4M3FN codes: round to nearest, ties to even code, saturate to +-448."""
    x = np.asarray(x, dtype=np.float64)
    a = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(_E4M3_POS, a, side="left"), 0, 0x7E)  # first code with value >= a
    lo = np.maximum(hi - 1, 0)
    dlo, dhi = a - _E4M3_POS[lo], _E4M3_POS[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    return code | np.where(np.signbit(x), 0x80, 0).astype(np.uint8)


def fp8_block_quantize(w: np.ndarray, block: Tuple[int, int] = (128, 128)) -> Tuple[np.ndarray, np.ndarray]:
    """w (N, Kin) -> codes (N, Kin) uint8, scale_inv (ceil(N/bn), ceil(Kin/bk)) f32 with w ~= e4m3(codes) * scale_inv."""
    N, Kin = w.shape
    bn, bk = block
    gn, gk = -(-N // bn), -(-Kin // bk)
    s = np.zeros((gn, gk), dtype=np.float32)
    for i in range(gn):
        for j in range(gk):
            amax = float(np.abs(w[i * bn:(i + 1) * bn, j * bk:(j + 1) * bk]).max())
            s[i, j] = np.float32(amax / 448.0) if amax > 0 else np.float32(1.0)
    full = np.repeat(np.repeat(s, bn, 0), bk, 1)[:N, :Kin]
    return e4m3_encode(w.astype(np.float32) / full), s


def fp8_block_dequantize(codes: np.ndarray, scale_inv: np.ndarray, block: Tuple[int, int] = (128, 128)) -> np.ndarray:
    N, Kin = codes.shape
    full = np.repeat(np.repeat(scale_inv.astype(np.float64), block[0], 0), block[1], 1)[:N, :Kin]
    return e4m3_decode(codes).astype(np.float64) * full


def fp8_channel_quantize(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """w (N, Kin) -> codes (N, Kin) uint8, scale (N, 1) f32 with w ~= e4m3(codes) * scale."""
    amax = np.abs(w).max(axis=1, keepdims=True).astype(np.float32)
    s = np.where(amax > 0, amax / np.float32(448.0), np.float32(1.0)).astype(np.float32)
    return e4m3_encode(w.astype(np.float32) / s), s


def fp8_channel_dequantize(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return e4m3_decode(codes).astype(np.float64) * scale.astype(np.float64)


def q8_0_roundtrip(w: np.ndarray) -> np.ndarray:
    """llama.cpp q8_0 (quantize_row_q8_0_ref) then dequantize, per row in blocks of 32, all float32 math."""
    x = np.ascontiguousarray(w, dtype=np.float32)
    if x.shape[-1] % 32:
        raise ValueError(f"q8_0 needs rows that are a multiple of 32, got {x.shape}")
    b = x.reshape(-1, 32)
    d = (np.abs(b).max(axis=1) / np.float32(127)).astype(np.float32)  # per block
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = (b * inv[:, None]).astype(np.float32)
    v64 = v.astype(np.float64)  # exact, so the +0.5 below cannot round
    q = (np.sign(v64) * np.floor(np.abs(v64) + 0.5)).astype(np.int8)  # roundf: half away from zero
    dh = d.astype(np.float16).astype(np.float32)
    return (dh[:, None] * q.astype(np.float32)).reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# safetensors (pure python): u64 LE header length, JSON header {name: {dtype, shape, data_offsets}}, data

_ST_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F8_E4M3": np.uint8,
          "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8}


def write_safetensors(path: str, tensors: Dict[str, Tuple[str, np.ndarray]], metadata: Optional[dict] = None) -> None:
    """tensors: name -> (safetensors dtype, array holding the raw values/bits); names written in sorted order."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        dt, arr = tensors[name]
        raw = np.ascontiguousarray(arr, dtype=_ST_NP[dt]).astype(np.dtype(_ST_NP[dt]).newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # pad so data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def read_safetensors(path: str) -> Tuple[Dict[str, Tuple[str, np.ndarray]], Optional[dict]]:
    """-> (name -> (dtype, raw array: BF16 as uint16 bits, F8_E4M3 as uint8 codes), metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        dt = np.dtype(_ST_NP[info["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(data[base + a:base + b], dtype=dt).reshape(info["shape"])
        out[name] = (info["dtype"], arr.astype(dt.newbyteorder("=")))
    return out, meta


def decode_tensor(dt: str, arr: np.ndarray) -> np.ndarray:
    """raw safetensors array -> float64 values."""
    if dt == "BF16":
        return bf16_to_f32(arr).astype(np.float64)
    if dt == "F8_E4M3":
        return e4m3_decode(arr).astype(np.float64)
    return arr.astype(np.float64)


def load_dense_weights(path: str, config: dict) -> Dict[str, np.ndarray]:
    """Reads model.safetensors and returns float64 dense weights, dequantizing fp8 (block or channel) linears."""
    raw, _ = read_safetensors(path)
    qc = config.get("quantization_config") or {}
    block = qc.get("weight_block_size")
    out = {}
    for name, (dt, arr) in raw.items():
        if name.endswith(".weight_scale_inv") or name.endswith(".weight_scale"):
            continue
        if dt == "F8_E4M3":
            base = name[: -len(".weight")]
            if base + ".weight_scale_inv" in raw:
                out[name] = fp8_block_dequantize(arr, raw[base + ".weight_scale_inv"][1], tuple(block))
            elif base + ".weight_scale" in raw:
                out[name] = fp8_channel_dequantize(arr, raw[base + ".weight_scale"][1])
            else:
                raise ValueError(f"{path}: {name} is F8_E4M3 but has no weight_scale_inv / weight_scale")
        else:
            out[name] = decode_tensor(dt, arr)
    return out
