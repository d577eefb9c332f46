// N-API surface of the floe addon: argument checks (expected vs got, never a crash), then the dispatched kernel.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <node_buffer.h>  // node::Buffer::kMaxLength: the longest external ArrayBuffer N-API makes

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <napi.h>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dispatch.h"
#include "napi_args.h"
#include "pool.h"
#include "sample.h"
#include "train_addon.h"
#include "stream.h"
#include "convert.h"

namespace floe {
namespace {

using namespace napi_args;

// y (M, N) = x · wᵀ through the kernel table, counted per weight dtype (unless counted already) and, for the AVX2 and
// scalar tables, per path (the AVX-512 matmul counts the path it takes: matmul.path.<path>.avx512).
void run_matmul(const Kernels& k, float* y, const float* x, const Weight& w, int64_t M, bool count_dtype = true) {
  if (count_dtype) count("matmul", weight_name(w.dtype), k.name);
  if (M <= 0 || w.N <= 0) return;
  if (isa_current() == ISA_AVX2) count("matmul.path", "tiles", k.name);
  else if (isa_current() == ISA_SCALAR) count("matmul.path", "generic", k.name);
  k.matmul(y, x, w, M);
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  const char* op = "matmul";
  need_args(info, op, 10);
  Napi::Env env = info.Env();
  auto y = f32(info, 0, op, "y");
  auto x = f32(info, 1, op, "x");
  Weight w = weight(info, 2, op);
  int64_t M = integer(info, 9, op, "M");
  need_len(env, op, [&] { return "x (M=" + std::to_string(M) + ", C=" + std::to_string(w.C) + ")"; }, x.n, prod(env, op, {M, w.C}));
  need_len(env, op, [&] { return "y (M=" + std::to_string(M) + ", N=" + std::to_string(w.N) + ")"; }, y.n, prod(env, op, {M, w.N}));
  run_matmul(kernels(), y.p, x.p, w, M);
  return env.Undefined();
}

// matmulMany(x (M, C), M, then per weight i: y_i (M, N_i), weight_i as in matmul (data, dtype, N, C, scale, br, bc)):
// the matmuls of one x as one call. All weights need one C. Where the ISA fuses them (repacked layouts at GEMV rows:
// one pool job for q/k/v or gate/up) they run so, else one by one; each y_i gets the bits of its own matmul.
Napi::Value MatmulMany(const Napi::CallbackInfo& info) {
  const char* op = "matmulMany";
  constexpr size_t PER = 8, MAX = 8;
  Napi::Env env = info.Env();
  const size_t len = info.Length();
  if (len < 2 + PER || (len - 2) % PER != 0 || (len - 2) / PER > MAX)
    type_fail(env, op, "expected x, M and 1 to " + str(MAX) + " groups of (y, data, dtype, N, C, scale, br, bc): " + str(int64_t(len)) + " arguments");
  const int n = int((len - 2) / PER);
  auto x = f32(info, 0, op, "x");
  const int64_t M = integer(info, 1, op, "M");
  Weight ws[MAX];
  float* ys[MAX];
  for (int i = 0; i < n; i++) {
    auto y = f32(info, 2 + PER * i, op, "y");
    ws[i] = weight(info, 3 + PER * i, op);
    ys[i] = y.p;
    if (ws[i].C != ws[0].C) fail(env, op, "the weights need one C: weight 0 has C=" + str(ws[0].C) + ", weight " + str(i) + " C=" + str(ws[i].C));
    if (y.n != prod(env, op, {M, ws[i].N}))
      fail(env, op, "y " + str(i) + " (M=" + str(M) + ", N=" + str(ws[i].N) + ") has " + str(y.n) + " elements, expected " + str(M * ws[i].N));
  }
  if (x.n != prod(env, op, {M, ws[0].C}))
    fail(env, op, "x (M=" + str(M) + ", C=" + str(ws[0].C) + ") has " + str(x.n) + " elements, expected " + str(M * ws[0].C));
  const Kernels& k = kernels();
  bool empty = M <= 0;
  for (int i = 0; i < n; i++) empty = empty || ws[i].N <= 0;
  for (int i = 0; i < n; i++) count("matmul", weight_name(ws[i].dtype), k.name);
  if (!empty && k.matmul_many(x.p, M, n, ys, ws)) return env.Undefined();
  for (int i = 0; i < n; i++) run_matmul(k, ys[i], x.p, ws[i], M, false);
  return env.Undefined();
}

// loraSegmented(y (T, N), x (T, C), C, N, segStart Int32Array (G+1), a[G] (r_g, C) | null, bt[G] (r_g, N) | null,
// scales Float32Array (G)): y[rows of g] += scales[g] · (x Aᵀ) Btᵀ... for every segment with an adapter (null: base rows).
Napi::Value LoraSegmented(const Napi::CallbackInfo& info) {
  const char* op = "loraSegmented";
  need_args(info, op, 8);
  Napi::Env env = info.Env();
  auto y = f32(info, 0, op, "y");
  auto x = f32(info, 1, op, "x");
  int64_t C = integer(info, 2, op, "C", 1);
  int64_t N = integer(info, 3, op, "N", 1);
  auto starts = i32(info, 4, op, "segStart");
  if (!info[5].IsArray() || !info[6].IsArray()) type_fail(env, op, "a and bt must be arrays (one Float32Array or null per segment)");
  auto as = info[5].As<Napi::Array>();
  auto bts = info[6].As<Napi::Array>();
  auto scales = f32(info, 7, op, "scales");
  const int64_t G = starts.n - 1;
  if (G < 0) fail(env, op, "segStart needs G + 1 >= 1 offsets, got none");
  need_len(env, op, [&] { return "scales (G=" + str(G) + ")"; }, scales.n, G);
  need_len(env, op, [&] { return "a (G=" + str(G) + ")"; }, int64_t(as.Length()), G);
  need_len(env, op, [&] { return "bt (G=" + str(G) + ")"; }, int64_t(bts.Length()), G);
  if (starts.p[0] != 0) fail(env, op, "segStart[0] must be 0, got " + str(starts.p[0]));
  for (int64_t g = 0; g < G; g++)
    if (starts.p[g + 1] < starts.p[g]) fail(env, op, "segStart must not decrease: segStart[" + str(g + 1) + "] = " + str(starts.p[g + 1]) + " < " + str(starts.p[g]));
  const int64_t T = starts.p[G];
  need_len(env, op, [&] { return "x (T=" + str(T) + ", C=" + str(C) + ")"; }, x.n, prod(env, op, {T, C}));
  need_len(env, op, [&] { return "y (T=" + str(T) + ", N=" + str(N) + ")"; }, y.n, prod(env, op, {T, N}));
  static thread_local std::vector<LoraSeg> segs;
  static thread_local std::vector<float> u;
  segs.clear();
  int64_t u_len = 0;
  for (int64_t g = 0; g < G; g++) {
    Napi::Value av = as[uint32_t(g)], bv = bts[uint32_t(g)];
    if (av.IsNull() || av.IsUndefined()) continue;
    auto is_f32 = [](const Napi::Value& v) { return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array; };
    if (!is_f32(av)) type_fail(env, op, "a[" + str(g) + "] must be a Float32Array or null");
    if (!is_f32(bv)) type_fail(env, op, "bt[" + str(g) + "] must be a Float32Array when a[" + str(g) + "] is given");
    auto a = av.As<Napi::Float32Array>();
    auto bt = bv.As<Napi::Float32Array>();
    const int64_t alen = int64_t(a.ElementLength());
    if (alen == 0 || alen % C != 0) fail(env, op, "a[" + str(g) + "] has " + str(alen) + " elements, expected r × C (C=" + str(C) + ")");
    const int64_t r = alen / C;
    need_len(env, op, [&] { return "bt[" + str(g) + "] (r=" + str(r) + ", N=" + str(N) + ")"; }, int64_t(bt.ElementLength()), prod(env, op, {r, N}));
    const int64_t M = starts.p[g + 1] - starts.p[g];
    if (M == 0) continue;
    segs.push_back(LoraSeg{starts.p[g], M, r, u_len, a.Data(), bt.Data(), scales.p[g]});
    u_len += M * r;
  }
  const Kernels& k = kernels();
  count(op, "", k.name);
  if (segs.empty()) return env.Undefined();
  if (int64_t(u.size()) < u_len) u.resize(size_t(u_len));
  k.lora_segmented(y.p, x.p, C, N, segs.data(), int64_t(segs.size()), u.data());
  return env.Undefined();
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  const char* op = "embedding";
  need_args(info, op, 9);
  Napi::Env env = info.Env();
  auto out = f32(info, 0, op, "out");
  Weight w = weight(info, 1, op);
  auto ids = i32(info, 8, op, "ids");
  need_len(env, op, [&] { return "out (T=" + std::to_string(ids.n) + ", D=" + std::to_string(w.C) + ")"; }, out.n, prod(env, op, {ids.n, w.C}));
  for (int64_t t = 0; t < ids.n; t++)
    if (ids.p[t] < 0 || ids.p[t] >= w.N)
      fail(env, op, "token id " + std::to_string(ids.p[t]) + " at position " + std::to_string(t) + " is outside [0, " + std::to_string(w.N) + ")");
  const Kernels& k = kernels();
  count(op, weight_name(w.dtype), k.name);
  k.embedding(out.p, w, ids.p, ids.n);
  return env.Undefined();
}

Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  const char* op = "rmsnorm";
  need_args(info, op, 5);
  Napi::Env env = info.Env();
  auto y = f32(info, 0, op, "y");
  auto x = f32(info, 1, op, "x");
  auto g = f32(info, 2, op, "g");
  int64_t M = integer(info, 3, op, "M");
  float eps = float(number(info, 4, op, "eps"));
  need_len(env, op, [&] { return "x (M=" + std::to_string(M) + ", D=" + std::to_string(g.n) + ")"; }, x.n, prod(env, op, {M, g.n}));
  need_len(env, op, [&] { return "y (M=" + std::to_string(M) + ", D=" + std::to_string(g.n) + ")"; }, y.n, prod(env, op, {M, g.n}));
  const Kernels& k = kernels();
  count(op, "", k.name);
  k.rmsnorm(y.p, x.p, g.p, M, g.n, eps);
  return env.Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  const char* op = "rope";
  need_args(info, op, 5);
  Napi::Env env = info.Env();
  auto x = f32(info, 0, op, "x");
  auto pos = i32(info, 1, op, "positions");
  int64_t nh = integer(info, 2, op, "nHeads");
  int64_t E = integer(info, 3, op, "headDim");
  auto inv = f32(info, 4, op, "invFreq");
  if (E % 2 != 0) fail(env, op, "headDim must be even, got " + std::to_string(E));
  need_len(env, op, [&] { return "x (T=" + std::to_string(pos.n) + ", heads=" + std::to_string(nh) + ", E=" + std::to_string(E) + ")"; }, x.n, prod(env, op, {pos.n, nh, E}));
  need_len(env, op, "invFreq (E/2)", inv.n, E / 2);
  const Kernels& k = kernels();
  count(op, "", k.name);
  k.rope(x.p, pos.p, pos.n, nh, E, inv.p);
  return env.Undefined();
}

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  const char* op = "swiglu";
  need_args(info, op, 3);
  Napi::Env env = info.Env();
  auto out = f32(info, 0, op, "out");
  auto gate = f32(info, 1, op, "gate");
  auto up = f32(info, 2, op, "up");
  need_len(env, op, "up", up.n, gate.n);
  need_len(env, op, "out", out.n, gate.n);
  const Kernels& k = kernels();
  count(op, "", k.name);
  k.swiglu(out.p, gate.p, up.p, gate.n);
  return env.Undefined();
}

// addRmsnorm(x (M, D), d (M, D), y (M, D), g (D), M, eps): x += d, then y = rmsnorm(x) · g: the residual add and the
// next norm of a layer as one call, by the add and rmsnorm kernels themselves (the bits of the two calls).
Napi::Value AddRmsnorm(const Napi::CallbackInfo& info) {
  const char* op = "addRmsnorm";
  need_args(info, op, 6);
  Napi::Env env = info.Env();
  auto x = f32(info, 0, op, "x");
  auto d = f32(info, 1, op, "d");
  auto y = f32(info, 2, op, "y");
  auto g = f32(info, 3, op, "g");
  int64_t M = integer(info, 4, op, "M");
  float eps = float(number(info, 5, op, "eps"));
  need_len(env, op, [&] { return "x (M=" + std::to_string(M) + ", D=" + std::to_string(g.n) + ")"; }, x.n, prod(env, op, {M, g.n}));
  need_len(env, op, [&] { return "d (M=" + std::to_string(M) + ", D=" + std::to_string(g.n) + ")"; }, d.n, x.n);
  need_len(env, op, [&] { return "y (M=" + std::to_string(M) + ", D=" + std::to_string(g.n) + ")"; }, y.n, x.n);
  const Kernels& k = kernels();
  count(op, "", k.name);
  k.add(x.p, d.p, x.n);
  k.rmsnorm(y.p, x.p, g.p, M, g.n, eps);
  return env.Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  const char* op = "add";
  need_args(info, op, 2);
  Napi::Env env = info.Env();
  auto y = f32(info, 0, op, "y");
  auto x = f32(info, 1, op, "x");
  need_len(env, op, "x", x.n, y.n);
  const Kernels& k = kernels();
  count(op, "", k.name);
  k.add(y.p, x.p, y.n);
  return env.Undefined();
}

const char* kv_name(int dtype) { return dtype == KV_F32 ? "f32kv" : dtype == KV_BF16 ? "bf16kv" : dtype == KV_FP8 ? "fp8kv" : nullptr; }

// fp8 caches: kScale, vScale Float32Array (numBlocks, L, K) at arguments i, i+1.
void kv_scales(const Napi::CallbackInfo& info, size_t i, const char* op, KvCache& kv) {
  if (kv.dtype != KV_FP8) return;
  need_args(info, op, i + 2);
  auto ks = f32(info, i, op, "kScale");
  auto vs = f32(info, i + 1, op, "vScale");
  need_len(info.Env(), op, "kScale (numBlocks*L*K)", ks.n, kv.num_blocks * kv.L * kv.K);
  need_len(info.Env(), op, "vScale (numBlocks*L*K)", vs.n, kv.num_blocks * kv.L * kv.K);
  kv.k_scale = ks.p;
  kv.v_scale = vs.p;
}

// KvCache from (k bytes, v bytes, dtype, numBlocks, L, K, E) starting at argument i.
KvCache kv_cache(const Napi::CallbackInfo& info, size_t i, const char* op) {
  Napi::Env env = info.Env();
  auto kb = u8(info, i, op, "cache k");
  auto vb = u8(info, i + 1, op, "cache v");
  KvCache kv{kb.p, vb.p, int(integer(info, i + 2, op, "kv dtype")), 0, 0, 0, 0, nullptr, nullptr};
  if (!kv_name(kv.dtype)) fail(env, op, "kv dtype code " + std::to_string(kv.dtype) + " is not a KV cache dtype (f32=0, bf16=2, fp8_e4m3=3)");
  kv.num_blocks = integer(info, i + 3, op, "numBlocks");
  kv.L = integer(info, i + 4, op, "blockSize", 1);
  kv.K = integer(info, i + 5, op, "numKvHeads", 1);
  kv.E = integer(info, i + 6, op, "headDim", 1);
  int64_t bytes = kv.num_blocks * kv.L * kv.K * kv.E * (kv.dtype == KV_F32 ? 4 : kv.dtype == KV_FP8 ? 1 : 2);
  need_len(env, op, "cache k bytes (numBlocks*L*K*E*elem)", kb.n, bytes);
  need_len(env, op, "cache v bytes (numBlocks*L*K*E*elem)", vb.n, bytes);
  return kv;
}

// k and v (T, K*E) for T = slots.n tokens, every slot inside the cache.
void need_kv_rows(Napi::Env env, const char* op, const KvCache& kv, const View<float>& k, const View<float>& v, const View<int32_t>& slots) {
  const int64_t KE = kv.K * kv.E, num_slots = kv.num_blocks * kv.L;
  need_len(env, op, [&] { return "k (T=" + std::to_string(slots.n) + ", K*E=" + std::to_string(KE) + ")"; }, k.n, prod(env, op, {slots.n, KE}));
  need_len(env, op, [&] { return "v (T=" + std::to_string(slots.n) + ", K*E=" + std::to_string(KE) + ")"; }, v.n, prod(env, op, {slots.n, KE}));
  for (int64_t t = 0; t < slots.n; t++)
    if (slots.p[t] < 0 || slots.p[t] >= num_slots)
      fail(env, op, "slot " + std::to_string(slots.p[t]) + " of token " + std::to_string(t) + " is outside [0, " + std::to_string(num_slots) + ")");
}

// k and v into the cache at the slots (checked by need_kv_rows), by the cache dtype's kernel, counted as op.<dtype>.
void write_kv(const Kernels& kn, const char* op, const KvCache& kv, const float* k, const float* v, const View<int32_t>& slots) {
  count(op, kv.dtype == KV_F32 ? "f32" : kv.dtype == KV_FP8 ? "fp8" : "bf16", kn.name);
  (kv.dtype == KV_FP8 ? kn.kv_write_fp8 : kn.kv_write)(kv, k, v, slots.p, slots.n);
}

Napi::Value KvWrite(const Napi::CallbackInfo& info) {
  const char* op = "kvWrite";
  need_args(info, op, 10);
  Napi::Env env = info.Env();
  KvCache kv = kv_cache(info, 0, op);
  auto k = f32(info, 7, op, "k");
  auto v = f32(info, 8, op, "v");
  auto slots = i32(info, 9, op, "slots");
  kv_scales(info, 10, op, kv);
  need_kv_rows(env, op, kv, k, v, slots);
  write_kv(kernels(), op, kv, k.p, v.p, slots);
  return env.Undefined();
}

// ropeKvWrite(q (T, H*E), k (T, K*E), v (T, K*E), positions (T), H, invFreq (E/2), kBytes, vBytes, kvDtype, numBlocks,
// L, K, E, slots (T)[, kScale, vScale]): RoPE on q and k in place, then k and v into the cache at the slots: a layer's
// three calls between its q/k/v projections and its attention as one, by the rope and kv_write kernels themselves.
Napi::Value RopeKvWrite(const Napi::CallbackInfo& info) {
  const char* op = "ropeKvWrite";
  need_args(info, op, 14);
  Napi::Env env = info.Env();
  auto q = f32(info, 0, op, "q");
  auto k = f32(info, 1, op, "k");
  auto v = f32(info, 2, op, "v");
  auto pos = i32(info, 3, op, "positions");
  const int64_t H = integer(info, 4, op, "numHeads", 1);
  auto inv = f32(info, 5, op, "invFreq");
  KvCache kv = kv_cache(info, 6, op);
  auto slots = i32(info, 13, op, "slots");
  kv_scales(info, 14, op, kv);
  const int64_t E = kv.E, T = pos.n;
  if (E % 2 != 0) fail(env, op, "headDim must be even, got " + std::to_string(E));
  need_len(env, op, "invFreq (E/2)", inv.n, E / 2);
  need_len(env, op, [&] { return "slots (T=" + std::to_string(T) + ")"; }, slots.n, T);
  need_len(env, op, [&] { return "q (T=" + std::to_string(T) + ", H*E=" + std::to_string(H * E) + ")"; }, q.n, prod(env, op, {T, H, E}));
  need_kv_rows(env, op, kv, k, v, slots);
  const Kernels& kn = kernels();
  kn.rope(q.p, pos.p, T, H, E, inv.p);
  kn.rope(k.p, pos.p, T, kv.K, E, inv.p);
  write_kv(kn, op, kv, k.p, v.p, slots);
  return env.Undefined();
}

// attention(out, q, kBytes, vBytes, kvDtype, numBlocks, L, K, E, H, scale, S, qStart, ctxLen, blockTables, maxBlocks[, kScale, vScale])
Napi::Value Attention(const Napi::CallbackInfo& info) {
  const char* op = "attention";
  need_args(info, op, 16);
  Napi::Env env = info.Env();
  AttnArgs a{};
  auto out = f32(info, 0, op, "out");
  auto q = f32(info, 1, op, "q");
  a.kv = kv_cache(info, 2, op);
  a.H = integer(info, 9, op, "numHeads", 1);
  a.scale = float(number(info, 10, op, "scale"));
  a.S = integer(info, 11, op, "numSeqs");
  auto qs = i32(info, 12, op, "qStart");
  auto ctx = i32(info, 13, op, "ctxLen");
  auto bt = i32(info, 14, op, "blockTables");
  a.max_blocks = integer(info, 15, op, "maxBlocks");
  kv_scales(info, 16, op, a.kv);
  const int64_t K = a.kv.K, E = a.kv.E, L = a.kv.L, HE = a.H * E;
  if (a.H % K != 0) fail(env, op, "numHeads " + std::to_string(a.H) + " is not a multiple of numKvHeads " + std::to_string(K));
  need_len(env, op, "qStart (S+1)", qs.n, a.S + 1);
  need_len(env, op, "ctxLen (S)", ctx.n, a.S);
  if (bt.n < a.S * a.max_blocks)
    fail(env, op, "blockTables has " + std::to_string(bt.n) + " elements, expected at least S*maxBlocks = " + std::to_string(a.S * a.max_blocks));
  if (qs.p[0] < 0) fail(env, op, "qStart[0] is " + std::to_string(qs.p[0]) + ", expected >= 0");
  const int64_t Tq = qs.p[a.S];
  need_len(env, op, [&] { return "q (Tq=" + std::to_string(Tq) + ", H*E=" + std::to_string(HE) + ")"; }, q.n, prod(env, op, {Tq, HE}));
  need_len(env, op, [&] { return "out (Tq=" + std::to_string(Tq) + ", H*E=" + std::to_string(HE) + ")"; }, out.n, prod(env, op, {Tq, HE}));
  for (int64_t s = 0; s < a.S; s++) {
    int64_t qlen = int64_t(qs.p[s + 1]) - qs.p[s], c = ctx.p[s];
    if (qlen < 0 || qlen > c)
      fail(env, op, "sequence " + std::to_string(s) + " has " + std::to_string(qlen) + " queries but ctxLen " + std::to_string(c));
    if ((c + L - 1) / L > a.max_blocks)
      fail(env, op, "sequence " + std::to_string(s) + " ctxLen " + std::to_string(c) + " needs more than maxBlocks " + std::to_string(a.max_blocks));
    if (qlen == 0) continue;
    for (int64_t b = 0; b < (c + L - 1) / L; b++) {
      int32_t id = bt.p[s * a.max_blocks + b];
      if (id < 0 || id >= a.kv.num_blocks)
        fail(env, op, "sequence " + std::to_string(s) + " block " + std::to_string(b) + " maps to block " + std::to_string(id) +
                          ", outside [0, " + std::to_string(a.kv.num_blocks) + ")");
    }
  }
  a.out = out.p;
  a.q = q.p;
  a.q_start = qs.p;
  a.ctx_len = ctx.p;
  a.blocks = bt.p;
  const Kernels& k = kernels();
  count(op, kv_name(a.kv.dtype), k.name);
  if (Tq > 0) (a.kv.dtype == KV_FP8 ? k.attention_fp8 : k.attention)(a);
  return env.Undefined();
}

Napi::Value LogSoftmax(const Napi::CallbackInfo& info) {
  const char* op = "logSoftmax";
  need_args(info, op, 3);
  Napi::Env env = info.Env();
  auto out = f32(info, 0, op, "out");
  auto in = f32(info, 1, op, "logits");
  int64_t M = integer(info, 2, op, "M", 1);
  if (in.n % M != 0) fail(env, op, "logits length " + std::to_string(in.n) + " is not a multiple of M=" + std::to_string(M));
  need_len(env, op, "out", out.n, in.n);
  const Kernels& k = kernels();
  count(op, "", k.name);
  if (in.n > 0) k.log_softmax(out.p, in.p, M, in.n / M);
  return env.Undefined();
}

Napi::Value Topk(const Napi::CallbackInfo& info) {
  const char* op = "topk";
  need_args(info, op, 2);
  Napi::Env env = info.Env();
  auto x = f32(info, 0, op, "x");
  int64_t k = integer(info, 1, op, "k");
  if (k > x.n) fail(env, op, "k=" + std::to_string(k) + " outside [0, " + std::to_string(x.n) + "]");
  auto ids = Napi::Int32Array::New(env, size_t(k));
  auto values = Napi::Float32Array::New(env, size_t(k));
  count(op, "", "scalar");
  topk(x.p, x.n, k, ids.Data(), values.Data());
  Napi::Object r = Napi::Object::New(env);
  r.Set("ids", ids);
  r.Set("values", values);
  return r;
}

// sampleCandidates(z (V), temperature, topK, topP, minP, ids Int32Array, weights Float64Array, sum Float64Array (>= 1))
// → n: the candidates of src/model/sampler.ts's distribution (native/sample.h) in ids, weights [0, n), Σ in sum[0].
Napi::Value SampleCandidates(const Napi::CallbackInfo& info) {
  const char* op = "sampleCandidates";
  need_args(info, op, 8);
  Napi::Env env = info.Env();
  auto z = f32(info, 0, op, "logits");
  const double T = number(info, 1, op, "temperature");
  const double top_k_d = number(info, 2, op, "topK");
  const double top_p = number(info, 3, op, "topP");
  const double min_p = number(info, 4, op, "minP");
  auto ids = typed<int32_t, napi_int32_array>(info, 5, op, "ids", "Int32Array");
  auto weights = typed<double, napi_float64_array>(info, 6, op, "weights", "Float64Array");
  auto sum = typed<double, napi_float64_array>(info, 7, op, "sum", "Float64Array");
  if (!(T > 0) || !std::isfinite(T)) fail(env, op, "temperature must be a finite number > 0, got " + info[1].ToString().Utf8Value());
  if (top_k_d != std::floor(top_k_d) || !std::isfinite(top_k_d)) fail(env, op, "topK must be an integer (<= 0: off), got " + info[2].ToString().Utf8Value());
  if (!(top_p > 0 && top_p <= 1)) fail(env, op, "topP must be in (0, 1], got " + info[3].ToString().Utf8Value());
  if (!(min_p >= 0 && min_p <= 1)) fail(env, op, "minP must be in [0, 1], got " + info[4].ToString().Utf8Value());
  if (z.n < 1) fail(env, op, "logits must hold at least one value, got 0");
  if (z.n > INT32_MAX) fail(env, op, "logits has " + str(z.n) + " values, more than int32 ids can name");
  const int64_t V = z.n, top_k = top_k_d > 0 && top_k_d < double(V) ? int64_t(top_k_d) : 0;
  const int64_t cap = top_k > 0 ? top_k : V;
  if (ids.n < cap) fail(env, op, "ids has " + str(ids.n) + " elements, expected at least " + str(cap) + (top_k > 0 ? " (topK)" : " (V)"));
  if (weights.n < cap) fail(env, op, "weights has " + str(weights.n) + " elements, expected at least " + str(cap) + (top_k > 0 ? " (topK)" : " (V)"));
  if (sum.n < 1) fail(env, op, "sum must hold at least 1 element, got 0");
  SampleResult r = sample_candidates(z.p, V, T, top_k, top_p, min_p, ids.p, weights.p);
  count("sample", r.path, kernels().name);
  sum.p[0] = r.sum;
  return Napi::Number::New(env, double(r.n));
}

// argmax(x (V)) → the first index of the largest value (sampler.ts argmax's rule).
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  const char* op = "argmax";
  need_args(info, op, 1);
  auto x = f32(info, 0, op, "x");
  if (x.n < 1) fail(info.Env(), op, "x must hold at least one value, got 0");
  count(op, "", kernels().name);
  return Napi::Number::New(info.Env(), double(sample_argmax_row(x.p, x.n)));
}

Napi::Value MmapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "floe native mmapFile: path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto sys_fail = [&](const char* what) {
    int e = errno;
    throw Napi::Error::New(env, "floe native mmapFile: " + std::string(what) + " '" + path + "' failed: " + std::strerror(e) +
                                    " (errno " + std::to_string(e) + ")");
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) sys_fail("open");
  struct stat st;
  if (::fstat(fd, &st) != 0) { int e = errno; ::close(fd); errno = e; sys_fail("fstat"); }
  if (!S_ISREG(st.st_mode)) { ::close(fd); throw Napi::Error::New(env, "floe native mmapFile: '" + path + "' is not a regular file"); }
  size_t len = size_t(st.st_size);
  // mmapFile(path, offset, length): bytes [offset, offset + length) only, mapped from the page that holds `offset`;
  // the ArrayBuffer starts at that page, so the range is at byte offset % 4096 in it (alignment as in the whole file).
  // N-API makes an external ArrayBuffer through node::Buffer, which refuses (and, through node-addon-api, frees twice)
  // one longer than node::Buffer::kMaxLength (buffer.constants.MAX_LENGTH: 4 GiB on Node 20): a larger file is mapped a range at a time.
  size_t off = 0;
  if (info.Length() >= 3) {
    const double o = info[1].As<Napi::Number>().DoubleValue(), n = info[2].As<Napi::Number>().DoubleValue();
    if (!(o >= 0 && n >= 0 && o + n <= double(len)) || o != std::floor(o) || n != std::floor(n)) {
      ::close(fd);
      throw Napi::RangeError::New(env, "floe native mmapFile: range [" + std::to_string(o) + ", +" + std::to_string(n) + ") is not inside '" + path + "' (" + std::to_string(len) + " bytes)");
    }
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    off = size_t(o) / page * page;
    len = size_t(o) + size_t(n) - off;
  }
  if (len == 0) { ::close(fd); return Napi::ArrayBuffer::New(env, 0); }
  if (len > node::Buffer::kMaxLength) {
    ::close(fd);
    throw Napi::RangeError::New(env, "floe native mmapFile: " + std::to_string(len) + " bytes of '" + path + "' in one ArrayBuffer is over Node's external-buffer limit (" + std::to_string(node::Buffer::kMaxLength) + "); map it in ranges (offset, length)");
  }
  // Private + writable: a stray write lands in a private copy instead of faulting.
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, off_t(off));
  if (p == MAP_FAILED) { int e = errno; ::close(fd); errno = e; sys_fail("mmap"); }
  ::close(fd);
  return Napi::ArrayBuffer::New(env, p, len, [](Napi::Env, void* data, size_t* n) { ::munmap(data, *n); delete n; }, new size_t(len));
}

// A repacked weight's buffer. From 2 MiB up: its own mapping, 2 MiB aligned and asked for 2 MiB pages (a THP
// "madvise" host gives none unasked), ending at the weight's last 4 KiB page so that no huge page reaches past it.
// Measured (core.ts, 1B, 2 threads, five alternating pairs, bench/results/weight-thp-ab-s12.txt): decode medians bf16
// 15.2 -> 16.3 tok/s, fp8 30.7 -> 32.4, f16 18.1 -> 18.3; a 1B bf16 load faults ~1,200 pages instead of ~600,000.
// FLOE_WEIGHT_THP=0: 64-byte aligned heap memory, as before (A/B).
static const bool weight_thp = [] { const char* e = std::getenv("FLOE_WEIGHT_THP"); return !(e && e[0] == '0'); }();
constexpr size_t HUGE_PAGE = size_t(2) << 20;
static size_t weight_span(int64_t bytes) { return (size_t(bytes) + 4095) / 4096 * 4096; }
static bool weight_mapped(int64_t bytes) { return weight_thp && size_t(bytes) >= HUGE_PAGE; }
static void* weight_alloc(int64_t bytes) {
  if (!weight_mapped(bytes)) return std::aligned_alloc(64, size_t((bytes + 63) / 64 * 64));
  const size_t n = weight_span(bytes);
  void* m = ::mmap(nullptr, n + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  const uintptr_t m0 = uintptr_t(m), a = (m0 + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE, m1 = m0 + n + HUGE_PAGE;
  if (a > m0) ::munmap(m, a - m0);
  if (m1 > a + n) ::munmap(reinterpret_cast<void*>(a + n), m1 - (a + n));
  ::madvise(reinterpret_cast<void*>(a), n, MADV_HUGEPAGE);  // advice only: refused, the weight keeps 4 KiB pages
  return reinterpret_cast<void*>(a);
}
static void weight_free(void* p, int64_t bytes) {
  if (weight_mapped(bytes)) ::munmap(p, weight_span(bytes));
  else std::free(p);
}
static Napi::Uint8Array weight_array(Napi::Env env, void* p, int64_t bytes) {
  auto ab = Napi::ArrayBuffer::New(env, p, size_t(bytes), [](Napi::Env, void* q, int64_t* n) { weight_free(q, *n); delete n; },
                                   new int64_t(bytes));
  return Napi::Uint8Array::New(env, size_t(bytes), ab, 0);
}

// q8Repack(src, N, C[, release]) → a new 64-byte aligned buffer holding the q8_0 weight src (N, C) as q8_0r16
// (common.h), filled by the thread pool; with release (src is a file mapping) src's pages are then handed back to the
// kernel (page_out, convert.h).
Napi::Value Q8Repack(const Napi::CallbackInfo& info) {
  const char* op = "q8Repack";
  need_args(info, op, 3);
  Napi::Env env = info.Env();
  auto src = typed<uint8_t, napi_uint8_array>(info, 0, op, "src", "Uint8Array");
  const int64_t N = integer(info, 1, op, "N", 1), C = integer(info, 2, op, "C", 1);
  if (C % Q8_BLOCK != 0) fail(env, op, "q8_0 rows must be a multiple of 32 columns, got C=" + std::to_string(C));
  if (N % Q8R_ROWS != 0) fail(env, op, "q8_0r16 needs N a multiple of 16, got N=" + std::to_string(N));
  const int64_t bytes = N * (C / Q8_BLOCK) * Q8_BLOCK_BYTES;
  need_len(env, op, [&] { return "q8_0 weight (" + std::to_string(N) + ", " + std::to_string(C) + ") bytes"; }, src.n, bytes);
  void* out = weight_alloc(bytes);
  if (!out) fail(env, op, "cannot allocate " + std::to_string(bytes) + " bytes for the repacked weight");
  const int64_t G = N / Q8R_ROWS, chunk = (G + 63) / 64;
  parallel_for((G + chunk - 1) / chunk, [&](int64_t t) {
    q8r_repack(src.p, N, C, t * chunk, std::min(G, (t + 1) * chunk), static_cast<uint8_t*>(out));
  });
  if (released(info, 3)) page_out(src.p, bytes);
  count("q8Repack", "q8_0r16", kernels().name);
  return weight_array(env, out, bytes);
}

// r16Repack(src, dtype, N, C[, release]) → a new 64-byte aligned buffer holding the bf16 (dtype 2), f16 (1), fp8 (3) or
// f32 (0) weight src (N, C) as bf16r16 / f16r16 / fp8r16 / f32r16 (common.h r16_*, fp8r_*; an fp8 scale grid is
// unchanged), filled by the
// thread pool; src's pages are handed back as in q8Repack.
Napi::Value R16Repack(const Napi::CallbackInfo& info) {
  const char* op = "r16Repack";
  need_args(info, op, 4);
  Napi::Env env = info.Env();
  auto src = typed<uint8_t, napi_uint8_array>(info, 0, op, "src", "Uint8Array");
  const int64_t dt = integer(info, 1, op, "dtype"), N = integer(info, 2, op, "N", 1), C = integer(info, 3, op, "C", 1);
  if (dt != DT_BF16 && dt != DT_F16 && dt != DT_FP8 && dt != DT_F32) fail(env, op, "dtype code must be 2 (bf16), 1 (f16), 3 (fp8_e4m3) or 0 (f32), got " + std::to_string(dt));
  const int out_dt = dt == DT_BF16 ? DT_BF16R : dt == DT_F16 ? DT_F16R : dt == DT_F32 ? DT_F32R : DT_FP8R;
  const std::string name = weight_name(out_dt);
  if (N % R16_ROWS != 0) fail(env, op, name + " needs N a multiple of 16, got N=" + std::to_string(N));
  if (out_dt == DT_BF16R && C % 2 != 0) fail(env, op, "bf16r16 needs an even C (bf16 pairs), got C=" + std::to_string(C));
  if (out_dt == DT_FP8R && C % 4 != 0) fail(env, op, "fp8r16 needs C a multiple of 4, got C=" + std::to_string(C));
  const int64_t bytes = N * C * (out_dt == DT_FP8R ? 1 : out_dt == DT_F32R ? 4 : 2);
  need_len(env, op, [&] { return std::string(weight_name(int(dt))) + " weight (" + std::to_string(N) + ", " + std::to_string(C) + ") bytes"; }, src.n, bytes);
  void* out = weight_alloc(bytes);
  if (!out) fail(env, op, "cannot allocate " + std::to_string(bytes) + " bytes for the repacked weight");
  const int64_t G = N / R16_ROWS, chunk = (G + 63) / 64;
  parallel_for((G + chunk - 1) / chunk, [&](int64_t t) {
    if (out_dt == DT_FP8R) fp8r_repack(src.p, C, t * chunk, std::min(G, (t + 1) * chunk), static_cast<uint8_t*>(out));
    else r16_repack(src.p, out_dt, C, t * chunk, std::min(G, (t + 1) * chunk), static_cast<uint8_t*>(out));
  });
  if (released(info, 4)) page_out(src.p, bytes);
  count("r16Repack", weight_name(out_dt), kernels().name);
  return weight_array(env, out, bytes);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Commits the pages of the given buffers on a background thread (madvise MADV_POPULATE_WRITE: every page made resident
// and writable, contents unchanged, so the buffers may be in use meanwhile), and returns at once. For a KV cache: the
// first write to each page otherwise faults inside a decode step. A kernel without MADV_POPULATE_WRITE (EINVAL), or a
// range freed meanwhile (ENOMEM), ends that buffer's pass; nothing else is touched.
Napi::Value Prefault(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "floe native prefault: buffers must be an array of Uint8Array");
  const Napi::Array a = info[0].As<Napi::Array>();
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  std::vector<std::pair<uintptr_t, size_t>> ranges;
  for (uint32_t i = 0; i < a.Length(); i++) {
    const Napi::Value v = a.Get(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(env, "floe native prefault: buffers[" + std::to_string(i) + "] is not a Uint8Array");
    const Napi::Uint8Array b = v.As<Napi::Uint8Array>();
    const uintptr_t p0 = reinterpret_cast<uintptr_t>(b.Data()), p1 = p0 + b.ByteLength();
    const uintptr_t a0 = (p0 + page - 1) / page * page, a1 = p1 / page * page;  // whole pages inside the buffer
    if (a1 > a0) ranges.emplace_back(a0, size_t(a1 - a0));
  }
  size_t bytes = 0;
  for (auto& r : ranges) bytes += r.second;
  count("prefault", "madvise", "native");
  std::thread([ranges = std::move(ranges)] {
    constexpr size_t STEP = size_t(64) << 20;  // 64 MiB per call: a freed buffer stops the pass early
    for (auto [p, n] : ranges) {
      // 2 MiB pages where the host allows them on request (THP "madvise"): a 4 KiB fault costs ~20 us in a VM
      madvise(reinterpret_cast<void*>(p), n, MADV_HUGEPAGE);
      for (size_t o = 0; o < n; o += STEP)
        if (madvise(reinterpret_cast<void*>(p + o), std::min(STEP, n - o), MADV_POPULATE_WRITE) != 0) break;
    }
  }).detach();
  return Napi::Number::New(env, double(bytes));
}

Napi::Value IsaName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), isa_name(isa_current())); }
Napi::Value SupportedIsa(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), isa_name(isa_supported())); }

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "floe native setIsa: name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  if (!isa_set(name))
    throw Napi::Error::New(env, "floe native setIsa: '" + name + "' is not one of scalar, avx2, avx512 up to this CPU's " +
                                    isa_name(isa_supported()));
  return env.Undefined();
}

const char* amx_mode_name(AmxMode m) { return m == AMX_TILES ? "tiles" : m == AMX_EMULATE ? "emulate" : "off"; }

Napi::Value Amx(const Napi::CallbackInfo& info) {
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("supported", amx_supported());
  r.Set("mode", amx_mode_name(amx_mode()));
  r.Set("active", amx_active());
  r.Set("int8", amx_int8_supported());
  r.Set("reason", std::string(amx_reason()));
  r.Set("attn", amx_attn_active());
  r.Set("attnSetting", amx_attn_setting() < 0 ? "default" : amx_attn_setting() ? "on" : "off");
  return r;
}

// setAmxAttn('on' | 'off' | 'default'): prefill attention on the tiles (dispatch.h amx_attn_set)
Napi::Value SetAmxAttn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string v = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (v != "on" && v != "off" && v != "default")
    throw Napi::TypeError::New(env, "floe native setAmxAttn: setting must be 'on', 'off' or 'default'");
  amx_attn_set(v == "on" ? 1 : v == "off" ? 0 : -1);
  return env.Undefined();
}

// bf16Dot(): null where the AVX-512 kernels cannot run; else how the bf16 / fp8 decode GEMVs multiply (DotFacts;
// measures the host on the first call if no such matmul has yet)
Napi::Value Bf16Dot(const Napi::CallbackInfo& info) {
  if (isa_supported() != ISA_AVX512) return info.Env().Null();
  const DotFacts& d = avx512_dot_facts();
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("mode", d.fma ? "fma" : "dpbf16");
  r.Set("forced", d.forced);
  r.Set("fmaGmacs", d.fma_gmacs);
  r.Set("dpbf16Gmacs", d.dp_gmacs);
  r.Set("ghz", d.ghz);
  r.Set("fmaPerCycle", d.fma_per_cycle);
  r.Set("r16Wide", d.r16_wide);
  r.Set("r16WideForced", d.wide_forced);
  return r;
}

Napi::Value SetAmx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string name = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  const AmxMode mode = name == "tiles" ? AMX_TILES : name == "emulate" ? AMX_EMULATE : AMX_OFF;
  if (name != "tiles" && name != "emulate" && name != "off")
    throw Napi::TypeError::New(env, "floe native setAmx: mode must be 'tiles', 'emulate' or 'off'");
  if (!amx_set(mode)) throw Napi::Error::New(env, std::string("floe native setAmx: AMX tiles are not available here: ") + amx_reason());
  return env.Undefined();
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  const int n = int(integer(info, 0, "setThreads", "n", 1));
  try {
    pool_set_threads(n);
  } catch (const std::system_error& e) {
    throw Napi::Error::New(info.Env(), std::string("floe native setThreads(") + std::to_string(n) + "): " + e.what() + "; the pool kept " + std::to_string(pool_threads()) + " threads");
  }
  return info.Env().Undefined();
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pool_threads()); }

Napi::Value Counters(const Napi::CallbackInfo& info) {
  Napi::Object r = Napi::Object::New(info.Env());
  for (auto& [k, v] : counters_snapshot()) r.Set(k, v);
  return r;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("matmulMany", Napi::Function::New(env, MatmulMany));
  exports.Set("addRmsnorm", Napi::Function::New(env, AddRmsnorm));
  exports.Set("ropeKvWrite", Napi::Function::New(env, RopeKvWrite));
  exports.Set("embedding", Napi::Function::New(env, Embedding));
  exports.Set("rmsnorm", Napi::Function::New(env, Rmsnorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("swiglu", Napi::Function::New(env, Swiglu));
  exports.Set("add", Napi::Function::New(env, Add));
  exports.Set("loraSegmented", Napi::Function::New(env, LoraSegmented));
  exports.Set("kvWrite", Napi::Function::New(env, KvWrite));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("logSoftmax", Napi::Function::New(env, LogSoftmax));
  exports.Set("topk", Napi::Function::New(env, Topk));
  exports.Set("sampleCandidates", Napi::Function::New(env, SampleCandidates));
  exports.Set("argmax", Napi::Function::New(env, Argmax));
  exports.Set("mmapFile", Napi::Function::New(env, MmapFile));
  exports.Set("prefault", Napi::Function::New(env, Prefault));
  exports.Set("q8Repack", Napi::Function::New(env, Q8Repack));
  exports.Set("r16Repack", Napi::Function::New(env, R16Repack));
  exports.Set("isa", Napi::Function::New(env, IsaName));
  exports.Set("supportedIsa", Napi::Function::New(env, SupportedIsa));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa));
  exports.Set("amx", Napi::Function::New(env, Amx));
  exports.Set("setAmx", Napi::Function::New(env, SetAmx));
  exports.Set("setAmxAttn", Napi::Function::New(env, SetAmxAttn));
  exports.Set("bf16Dot", Napi::Function::New(env, Bf16Dot));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads));
  exports.Set("counters", Napi::Function::New(env, Counters));
  register_train_kernels(env, exports);
  register_stream(env, exports);
  register_convert(env, exports);
  return exports;
}

}  // namespace
}  // namespace floe

static Napi::Object InitFloe(Napi::Env env, Napi::Object exports) { return floe::Init(env, exports); }
NODE_API_MODULE(floe, InitFloe)
