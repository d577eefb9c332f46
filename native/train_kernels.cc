// N-API surface of the training kernels: argument checks (expected vs got, never a crash), then the dispatched kernel.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <napi.h>
#include <string>

#include "dispatch.h"
#include "napi_args.h"
#include "pool.h"
#include "train.h"
#include "train_addon.h"

namespace floe {

const TrainKernels& train_kernels() {
  switch (isa_current()) {
    case ISA_AVX512: return train_kernels_avx512;
    case ISA_AVX2: return train_kernels_avx2;
    default: return train_kernels_scalar;
  }
}

namespace {

using namespace napi_args;

// matmulBackwardInput(dx, dy, w data, dtype, N, C, scale, br, bc, M, accumulate)
Napi::Value MatmulBackwardInput(const Napi::CallbackInfo& info) {
  const char* op = "matmulBackwardInput";
  need_args(info, op, 11);
  Napi::Env env = info.Env();
  auto dx = f32(info, 0, op, "dx");
  auto dy = f32(info, 1, op, "dy");
  Weight w = weight(info, 2, op);
  if (w.dtype == DT_Q8_0R || w.dtype == DT_BF16R || w.dtype == DT_F16R || w.dtype == DT_FP8R || w.dtype == DT_F32R)
    fail(env, op, std::string("a ") + weight_name(w.dtype) + " weight is repacked for inference (openModel); training reads weights in the file's row layout");
  int64_t M = integer(info, 9, op, "M");
  if (!info[10].IsBoolean()) type_fail(env, op, "accumulate must be a boolean");
  bool accumulate = info[10].As<Napi::Boolean>().Value();
  need_len(env, op, [&] { return "dy (M=" + str(M) + ", N=" + str(w.N) + ")"; }, dy.n, prod(env, op, {M, w.N}));
  need_len(env, op, [&] { return "dx (M=" + str(M) + ", C=" + str(w.C) + ")"; }, dx.n, prod(env, op, {M, w.C}));
  const TrainKernels& k = train_kernels();
  count(op, weight_name(w.dtype), k.name);
  if (M == 0 || w.C == 0) return env.Undefined();
  if (w.N == 0) {
    if (!accumulate) std::memset(dx.p, 0, size_t(dx.n) * sizeof(float));
    return env.Undefined();
  }
  // AVX-512: the thin kernels or the packed GEMM first (they count thin_tr / gemm_tr), else the ISA's own dx kernel
  if (isa_current() == ISA_AVX512 && gemm_bwd_input_avx512(dx.p, dy.p, w, M, accumulate)) return env.Undefined();
  count("matmul.path", isa_current() == ISA_AVX512 ? "dx_tiles" : "dx_generic", k.name);
  k.matmul_bwd_input(dx.p, dy.p, w, M, accumulate);
  return env.Undefined();
}

// matmulBackwardWeight(dw, dy, x, M, N, C)
Napi::Value MatmulBackwardWeight(const Napi::CallbackInfo& info) {
  const char* op = "matmulBackwardWeight";
  need_args(info, op, 6);
  Napi::Env env = info.Env();
  auto dw = f32(info, 0, op, "dw");
  auto dy = f32(info, 1, op, "dy");
  auto x = f32(info, 2, op, "x");
  int64_t M = integer(info, 3, op, "M"), N = integer(info, 4, op, "N"), C = integer(info, 5, op, "C");
  need_len(env, op, [&] { return "dw (N=" + str(N) + ", C=" + str(C) + ")"; }, dw.n, prod(env, op, {N, C}));
  need_len(env, op, [&] { return "dy (M=" + str(M) + ", N=" + str(N) + ")"; }, dy.n, prod(env, op, {M, N}));
  need_len(env, op, [&] { return "x (M=" + str(M) + ", C=" + str(C) + ")"; }, x.n, prod(env, op, {M, C}));
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  if (M > 0 && N > 0 && C > 0) {
    // train_avx512.inc: C <= 16 (LoRA's A factor) runs run_dw16, else the tiled dW kernel
    count("matmul.path", isa_current() != ISA_AVX512 ? "dw_generic" : C <= 16 ? "dw_thin" : "dw_tiles", k.name);
    k.matmul_bwd_weight(dw.p, dy.p, x.p, M, N, C);
  }
  return env.Undefined();
}

// rmsnormBackward(dx, dg | null, dy, x, g, M, eps)
Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  const char* op = "rmsnormBackward";
  need_args(info, op, 7);
  Napi::Env env = info.Env();
  auto dx = f32(info, 0, op, "dx");
  View<float> dg{nullptr, 0};
  if (!info[1].IsNull()) dg = f32(info, 1, op, "dg (or null)");
  auto dy = f32(info, 2, op, "dy");
  auto x = f32(info, 3, op, "x");
  auto g = f32(info, 4, op, "g");
  int64_t M = integer(info, 5, op, "M");
  float eps = float(number(info, 6, op, "eps"));
  const int64_t D = g.n;
  const std::string shape = " (M=" + str(M) + ", D=" + str(D) + ")";
  need_len(env, op, [&] { return "x" + shape; }, x.n, prod(env, op, {M, D}));
  need_len(env, op, [&] { return "dy" + shape; }, dy.n, prod(env, op, {M, D}));
  need_len(env, op, [&] { return "dx" + shape; }, dx.n, prod(env, op, {M, D}));
  if (dg.p) need_len(env, op, [&] { return "dg (D=" + str(D) + ")"; }, dg.n, D);
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  if (M > 0 && D > 0) k.rmsnorm_bwd(dx.p, dg.p, dy.p, x.p, g.p, M, D, eps);
  return env.Undefined();
}

// ropeBackward(dx, positions, nHeads, headDim, invFreq)
Napi::Value RopeBackward(const Napi::CallbackInfo& info) {
  const char* op = "ropeBackward";
  need_args(info, op, 5);
  Napi::Env env = info.Env();
  auto x = f32(info, 0, op, "dx");
  auto pos = i32(info, 1, op, "positions");
  int64_t nh = integer(info, 2, op, "nHeads");
  int64_t E = integer(info, 3, op, "headDim");
  auto inv = f32(info, 4, op, "invFreq");
  if (E % 2 != 0) fail(env, op, "headDim must be even, got " + str(E));
  need_len(env, op, [&] { return "dx (T=" + str(pos.n) + ", heads=" + str(nh) + ", E=" + str(E) + ")"; }, x.n, prod(env, op, {pos.n, nh, E}));
  need_len(env, op, "invFreq (E/2)", inv.n, E / 2);
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  if (x.n > 0) k.rope_bwd(x.p, pos.p, pos.n, nh, E, inv.p);
  return env.Undefined();
}

// swigluBackward(dgate, dup, dout, gate, up)
Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  const char* op = "swigluBackward";
  need_args(info, op, 5);
  Napi::Env env = info.Env();
  auto dgate = f32(info, 0, op, "dgate");
  auto dup = f32(info, 1, op, "dup");
  auto dout = f32(info, 2, op, "dout");
  auto gate = f32(info, 3, op, "gate");
  auto up = f32(info, 4, op, "up");
  need_len(env, op, "up", up.n, gate.n);
  need_len(env, op, "dout", dout.n, gate.n);
  need_len(env, op, "dgate", dgate.n, gate.n);
  need_len(env, op, "dup", dup.n, gate.n);
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  if (gate.n > 0) k.swiglu_bwd(dgate.p, dup.p, dout.p, gate.p, up.p, gate.n);
  return env.Undefined();
}

// Checks q, k, v and segStart of a dense attention call (H, K, E, scale at argument h); returns T.
int64_t dense_args(const Napi::CallbackInfo& info, const char* op, View<float> q, View<float> k, View<float> v, View<int32_t> seg,
                   size_t h, int64_t* H, int64_t* K, int64_t* E, float* scale) {
  Napi::Env env = info.Env();
  *H = integer(info, h, op, "numHeads", 1);
  *K = integer(info, h + 1, op, "numKvHeads", 1);
  *E = integer(info, h + 2, op, "headDim", 1);
  *scale = float(number(info, h + 3, op, "scale"));
  if (*H % *K != 0) fail(env, op, "numHeads " + str(*H) + " is not a multiple of numKvHeads " + str(*K));
  if (q.n % (*H * *E) != 0) fail(env, op, "q length " + str(q.n) + " is not a multiple of H*E=" + str(*H * *E));
  const int64_t T = q.n / (*H * *E);
  need_len(env, op, [&] { return "k (T=" + str(T) + ", K*E=" + str(*K * *E) + ")"; }, k.n, prod(env, op, {T, *K, *E}));
  need_len(env, op, [&] { return "v (T=" + str(T) + ", K*E=" + str(*K * *E) + ")"; }, v.n, prod(env, op, {T, *K, *E}));
  const int64_t S = seg.n - 1;
  if (S < 0 || seg.p[0] != 0 || seg.p[S] != T)
    fail(env, op, "segStart must run from 0 to T=" + str(T) + ", got length " + str(seg.n) + (seg.n > 0 ? " starting at " + str(seg.p[0]) + " ending at " + str(seg.p[S]) : ""));
  for (int64_t s = 0; s < S; s++)
    if (seg.p[s + 1] < seg.p[s]) fail(env, op, "segStart decreases at " + str(s + 1) + ": " + str(seg.p[s]) + " then " + str(seg.p[s + 1]));
  return T;
}

// attentionDense(out, lse, q, k, v, segStart, H, K, E, scale)
Napi::Value AttentionDense(const Napi::CallbackInfo& info) {
  const char* op = "attentionDense";
  need_args(info, op, 10);
  Napi::Env env = info.Env();
  auto out = f32(info, 0, op, "out");
  auto lse = f32(info, 1, op, "lse");
  auto q = f32(info, 2, op, "q");
  auto kk = f32(info, 3, op, "k");
  auto v = f32(info, 4, op, "v");
  auto seg = i32(info, 5, op, "segStart");
  DenseAttn a{};
  a.T = dense_args(info, op, q, kk, v, seg, 6, &a.H, &a.K, &a.E, &a.scale);
  need_len(env, op, [&] { return "out (T=" + str(a.T) + ", H*E=" + str(a.H * a.E) + ")"; }, out.n, prod(env, op, {a.T, a.H, a.E}));
  need_len(env, op, [&] { return "lse (T=" + str(a.T) + ", H=" + str(a.H) + ")"; }, lse.n, prod(env, op, {a.T, a.H}));
  a.out = out.p;
  a.lse = lse.p;
  a.q = q.p;
  a.k = kk.p;
  a.v = v.p;
  a.seg = seg.p;
  a.S = seg.n - 1;
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  if (a.T > 0) k.attention_dense(a);
  return env.Undefined();
}

// attentionDenseBackward(dq, dk, dv, dout, q, k, v, out, lse, segStart, H, K, E, scale)
Napi::Value AttentionDenseBackward(const Napi::CallbackInfo& info) {
  const char* op = "attentionDenseBackward";
  need_args(info, op, 14);
  Napi::Env env = info.Env();
  auto dq = f32(info, 0, op, "dq");
  auto dk = f32(info, 1, op, "dk");
  auto dv = f32(info, 2, op, "dv");
  auto dout = f32(info, 3, op, "dout");
  auto q = f32(info, 4, op, "q");
  auto kk = f32(info, 5, op, "k");
  auto v = f32(info, 6, op, "v");
  auto out = f32(info, 7, op, "out");
  auto lse = f32(info, 8, op, "lse");
  auto seg = i32(info, 9, op, "segStart");
  DenseAttnBwd a{};
  a.T = dense_args(info, op, q, kk, v, seg, 10, &a.H, &a.K, &a.E, &a.scale);
  const std::string qs = " (T=" + str(a.T) + ", H*E=" + str(a.H * a.E) + ")", ks = " (T=" + str(a.T) + ", K*E=" + str(a.K * a.E) + ")";
  need_len(env, op, [&] { return "dq" + qs; }, dq.n, q.n);
  need_len(env, op, [&] { return "dout" + qs; }, dout.n, q.n);
  need_len(env, op, [&] { return "out" + qs; }, out.n, q.n);
  need_len(env, op, [&] { return "dk" + ks; }, dk.n, kk.n);
  need_len(env, op, [&] { return "dv" + ks; }, dv.n, kk.n);
  need_len(env, op, [&] { return "lse (T=" + str(a.T) + ", H=" + str(a.H) + ")"; }, lse.n, prod(env, op, {a.T, a.H}));
  a.dq = dq.p;
  a.dk = dk.p;
  a.dv = dv.p;
  a.dout = dout.p;
  a.q = q.p;
  a.k = kk.p;
  a.v = v.p;
  a.out = out.p;
  a.lse = lse.p;
  a.seg = seg.p;
  a.S = seg.n - 1;
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  // "chunked": some sample's keys ran as several chunks, their partial dQ summed after (train_generic.inc)
  if (a.T > 0 && k.attention_dense_bwd(a) > 0) count(op, "chunked", k.name);
  return env.Undefined();
}

// embeddingBackward(dtable, dy, ids, D)
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  const char* op = "embeddingBackward";
  need_args(info, op, 4);
  Napi::Env env = info.Env();
  auto dtable = f32(info, 0, op, "dtable");
  auto dy = f32(info, 1, op, "dy");
  auto ids = i32(info, 2, op, "ids");
  int64_t D = integer(info, 3, op, "D", 1);
  if (dtable.n % D != 0) fail(env, op, "dtable length " + str(dtable.n) + " is not a multiple of D=" + str(D));
  const int64_t V = dtable.n / D;
  need_len(env, op, [&] { return "dy (T=" + str(ids.n) + ", D=" + str(D) + ")"; }, dy.n, prod(env, op, {ids.n, D}));
  for (int64_t t = 0; t < ids.n; t++)
    if (ids.p[t] < 0 || ids.p[t] >= V) fail(env, op, "token id " + str(ids.p[t]) + " at position " + str(t) + " is outside [0, " + str(V) + ")");
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  if (ids.n > 0) k.embedding_bwd(dtable.p, dy.p, ids.p, ids.n, D);
  return env.Undefined();
}

// crossEntropy(dlogits, logits, targets, M, scale) -> summed loss
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy";
  need_args(info, op, 5);
  Napi::Env env = info.Env();
  auto dl = f32(info, 0, op, "dlogits");
  auto logits = f32(info, 1, op, "logits");
  auto targets = i32(info, 2, op, "targets");
  int64_t M = integer(info, 3, op, "M", 1);
  float scale = float(number(info, 4, op, "scale"));
  if (logits.n % M != 0) fail(env, op, "logits length " + str(logits.n) + " is not a multiple of M=" + str(M));
  const int64_t V = logits.n / M;
  need_len(env, op, [&] { return "targets (M=" + str(M) + ")"; }, targets.n, M);
  need_len(env, op, [&] { return "dlogits (M=" + str(M) + ", V=" + str(V) + ")"; }, dl.n, prod(env, op, {M, V}));
  for (int64_t m = 0; m < M; m++)
    if (targets.p[m] != -1 && (targets.p[m] < 0 || targets.p[m] >= V))
      fail(env, op, "target " + str(targets.p[m]) + " of row " + str(m) + " is outside [0, " + str(V) + ") and not -1 (ignored)");
  const TrainKernels& k = train_kernels();
  count(op, "", k.name);
  double loss = V > 0 ? k.cross_entropy(dl.p, logits.p, targets.p, M, V, scale) : 0.0;
  return Napi::Number::New(env, loss);
}

// loraForward(y, u, x, a, b, s, M, N, C, r): u (M, r) = s · x (M, C) Aᵀ, then y (M, N) += u Bᵀ; a = A (r, C), b = B (N, r)
Napi::Value LoraForward(const Napi::CallbackInfo& info) {
  const char* op = "loraForward";
  need_args(info, op, 10);
  Napi::Env env = info.Env();
  auto y = f32(info, 0, op, "y");
  auto u = f32(info, 1, op, "u");
  auto x = f32(info, 2, op, "x");
  auto a = f32(info, 3, op, "a (lora_A)");
  auto b = f32(info, 4, op, "b (lora_B)");
  const float s = float(number(info, 5, op, "s"));
  const int64_t M = integer(info, 6, op, "M"), N = integer(info, 7, op, "N"), C = integer(info, 8, op, "C"), r = integer(info, 9, op, "r", 1);
  need_len(env, op, [&] { return "y (M=" + str(M) + ", N=" + str(N) + ")"; }, y.n, prod(env, op, {M, N}));
  need_len(env, op, [&] { return "u (M=" + str(M) + ", r=" + str(r) + ")"; }, u.n, prod(env, op, {M, r}));
  need_len(env, op, [&] { return "x (M=" + str(M) + ", C=" + str(C) + ")"; }, x.n, prod(env, op, {M, C}));
  need_len(env, op, [&] { return "a (r=" + str(r) + ", C=" + str(C) + ")"; }, a.n, prod(env, op, {r, C}));
  need_len(env, op, [&] { return "b (N=" + str(N) + ", r=" + str(r) + ")"; }, b.n, prod(env, op, {N, r}));
  const TrainKernels& k = train_kernels();
  count(op, r <= 64 && isa_current() == ISA_AVX512 ? "fused" : "loops", k.name);
  if (M > 0) k.lora_fwd({y.p, u.p, x.p, a.p, b.p, s, M, N, C, r});
  return env.Undefined();
}

// loraBackward(dx, dA, dB, dy, x, u, a, b, s, M, N, C, r, accumulate): dB (N, r) += dyᵀ u; du = s · dy B;
// dA (r, C) += duᵀ x; dx (M, C) = du A, or += when accumulate
Napi::Value LoraBackward(const Napi::CallbackInfo& info) {
  const char* op = "loraBackward";
  need_args(info, op, 14);
  Napi::Env env = info.Env();
  auto dx = f32(info, 0, op, "dx");
  auto dA = f32(info, 1, op, "dA");
  auto dB = f32(info, 2, op, "dB");
  auto dy = f32(info, 3, op, "dy");
  auto x = f32(info, 4, op, "x");
  auto u = f32(info, 5, op, "u");
  auto a = f32(info, 6, op, "a (lora_A)");
  auto b = f32(info, 7, op, "b (lora_B)");
  const float s = float(number(info, 8, op, "s"));
  const int64_t M = integer(info, 9, op, "M"), N = integer(info, 10, op, "N"), C = integer(info, 11, op, "C"), r = integer(info, 12, op, "r", 1);
  if (!info[13].IsBoolean()) type_fail(env, op, "accumulate must be a boolean");
  const bool accumulate = info[13].As<Napi::Boolean>().Value();
  need_len(env, op, [&] { return "dx (M=" + str(M) + ", C=" + str(C) + ")"; }, dx.n, prod(env, op, {M, C}));
  need_len(env, op, [&] { return "dA (r=" + str(r) + ", C=" + str(C) + ")"; }, dA.n, prod(env, op, {r, C}));
  need_len(env, op, [&] { return "dB (N=" + str(N) + ", r=" + str(r) + ")"; }, dB.n, prod(env, op, {N, r}));
  need_len(env, op, [&] { return "dy (M=" + str(M) + ", N=" + str(N) + ")"; }, dy.n, prod(env, op, {M, N}));
  need_len(env, op, [&] { return "x (M=" + str(M) + ", C=" + str(C) + ")"; }, x.n, prod(env, op, {M, C}));
  need_len(env, op, [&] { return "u (M=" + str(M) + ", r=" + str(r) + ")"; }, u.n, prod(env, op, {M, r}));
  need_len(env, op, [&] { return "a (r=" + str(r) + ", C=" + str(C) + ")"; }, a.n, prod(env, op, {r, C}));
  need_len(env, op, [&] { return "b (N=" + str(N) + ", r=" + str(r) + ")"; }, b.n, prod(env, op, {N, r}));
  const TrainKernels& k = train_kernels();
  count(op, r <= 64 && isa_current() == ISA_AVX512 ? "fused" : "loops", k.name);
  if (M > 0) k.lora_bwd({dx.p, dA.p, dB.p, dy.p, x.p, u.p, a.p, b.p, s, M, N, C, r, accumulate});
  return env.Undefined();
}

// AdamW on one f32 tensor with exactly the TypeScript update's arithmetic (src/train/optimizer.ts): f64 per element,
// each moment rounded to f32 when stored and used rounded, no fused multiply-adds, so both give the same bits.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
static void adamw_span(float* w, const float* g, float* m, float* v, int64_t n, double b1, double b2, double eps, double decay,
                       double step_size, double sbc2) {
  const double c1 = 1.0 - b1, c2 = 1.0 - b2;
  for (int64_t j = 0; j < n; j++) {
    const double gj = g[j];
    const float mj = float(b1 * double(m[j]) + c1 * gj);
    const float vj = float(b2 * double(v[j]) + c2 * gj * gj);
    m[j] = mj;
    v[j] = vj;
    w[j] = float(double(w[j]) * decay - (step_size * double(mj)) / (std::sqrt(double(vj)) / sbc2 + eps));
  }
}
#pragma GCC pop_options

// adamwUpdate(w, g, m, v, b1, b2, eps, decay, stepSize, sbc2): m, v, w updated in place (all of one length)
Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
  const char* op = "adamwUpdate";
  need_args(info, op, 10);
  Napi::Env env = info.Env();
  auto w = f32(info, 0, op, "w");
  auto g = f32(info, 1, op, "g");
  auto m = f32(info, 2, op, "m");
  auto v = f32(info, 3, op, "v");
  const double b1 = number(info, 4, op, "b1"), b2 = number(info, 5, op, "b2"), eps = number(info, 6, op, "eps");
  const double decay = number(info, 7, op, "decay"), step_size = number(info, 8, op, "stepSize"), sbc2 = number(info, 9, op, "sbc2");
  need_len(env, op, "g (as w)", g.n, w.n);
  need_len(env, op, "m (as w)", m.n, w.n);
  need_len(env, op, "v (as w)", v.n, w.n);
  count(op, "", "f64");
  constexpr int64_t SPAN = 16384;
  parallel_for((w.n + SPAN - 1) / SPAN, [&](int64_t t) {
    const int64_t j0 = t * SPAN, n = std::min<int64_t>(SPAN, w.n - j0);
    adamw_span(w.p + j0, g.p + j0, m.p + j0, v.p + j0, n, b1, b2, eps, decay, step_size, sbc2);
  });
  return env.Undefined();
}

}  // namespace

void register_train_kernels(Napi::Env env, Napi::Object exports) {
  exports.Set("matmulBackwardInput", Napi::Function::New(env, MatmulBackwardInput));
  exports.Set("matmulBackwardWeight", Napi::Function::New(env, MatmulBackwardWeight));
  exports.Set("rmsnormBackward", Napi::Function::New(env, RmsnormBackward));
  exports.Set("ropeBackward", Napi::Function::New(env, RopeBackward));
  exports.Set("swigluBackward", Napi::Function::New(env, SwigluBackward));
  exports.Set("attentionDense", Napi::Function::New(env, AttentionDense));
  exports.Set("attentionDenseBackward", Napi::Function::New(env, AttentionDenseBackward));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy));
  exports.Set("loraForward", Napi::Function::New(env, LoraForward));
  exports.Set("loraBackward", Napi::Function::New(env, LoraBackward));
  exports.Set("adamwUpdate", Napi::Function::New(env, AdamwUpdate));
}

}  // namespace floe
