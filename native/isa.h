// Per-ISA kernel tables: the same kernels compiled for scalar, AVX2 and AVX-512, chosen at run time.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common.h"

namespace floe {

enum Isa : int { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

// One adapter segment of the segmented LoRA delta (native/lora.inc): rows [r0, r0 + M), A (r, C), Bᵀ (r, N), scale s;
// u0: the segment's offset in the (Σ M·r) scratch.
struct LoraSeg {
  int64_t r0, M, r, u0;
  const float* a;
  const float* bt;
  float scale;
};

struct Kernels {
  const char* name;
  void (*matmul)(float* y, const float* x, const Weight& w, int64_t M);  // y (M, N) = x (M, C) · wᵀ
  // y_i = x · ws[i]ᵀ for i < n as one call where the ISA has a fused path for these weights at M; false: nothing done
  bool (*matmul_many)(const float* x, int64_t M, int n, float* const* ys, const Weight* ws);
  void (*rmsnorm)(float* y, const float* x, const float* g, int64_t M, int64_t D, float eps);
  void (*rope)(float* x, const int32_t* pos, int64_t T, int64_t nh, int64_t E, const float* inv_freq);
  void (*swiglu)(float* out, const float* gate, const float* up, int64_t n);
  void (*embedding)(float* out, const Weight& table, const int32_t* ids, int64_t T);  // ids already validated
  void (*add)(float* y, const float* x, int64_t n);
  void (*kv_write)(const KvCache& kv, const float* k, const float* v, const int32_t* slots, int64_t T);
  void (*attention)(const AttnArgs& a);  // block ids and lengths already validated
  void (*log_softmax)(float* out, const float* in, int64_t M, int64_t V);
  void (*kv_write_fp8)(const KvCache& kv, const float* k, const float* v, const int32_t* slots, int64_t T);  // native/kv_fp8.inc
  void (*attention_fp8)(const AttnArgs& a);
  void (*lora_segmented)(float* y, const float* x, int64_t C, int64_t N, const LoraSeg* segs, int64_t G, float* u);  // native/lora.inc
  // sampling primitives over one logits row (native/sample.inc; the driver is native/sample.cc)
  int64_t (*sample_argmax)(const float* x, int64_t V, float* mx);
  double (*sample_exp)(const float* z, int64_t V, float mx, double invT, double* w);
  int64_t (*sample_emit)(const float* z, const double* w, int64_t V, float thr, int64_t ties, double floor, int32_t* ids,
                         double* weights, double* sum);
  int64_t (*sample_scan_gt)(const float* z, int64_t from, int64_t V, float thr);
  void (*sample_keys)(const float* z, int64_t V, uint32_t* key);
  int64_t (*sample_compact)(const uint32_t* key, int64_t V, int shift, uint32_t want, int32_t* list);
};

extern const Kernels kernels_scalar;
extern const Kernels kernels_avx2;
extern const Kernels kernels_avx512;

// AVX-512 dx (M, w.C) (+)= dy (M, w.N) · w (training) by the thin f32 kernels or the packed GEMM; false when neither
// applies to this call
// (then the training kernel's own path runs). Always false without AVX-512.
bool gemm_bwd_input_avx512(float* dx, const float* dy, const Weight& w, int64_t M, bool accumulate);

// Grow-only per-thread scratch, 64-byte aligned; `slot` separates buffers alive at the same time.
void* scratch(int slot, size_t bytes);

}  // namespace floe
