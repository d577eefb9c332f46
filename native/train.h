// Training kernel tables (backward passes, dense packed attention, cross-entropy), one per ISA, chosen at run time.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common.h"

namespace floe {

// Dense causal attention over packed samples: rows seg[s] .. seg[s+1]-1 form sample s (0 = seg[0], seg[S] = T).
struct DenseAttn {
  float* out;              // (T, H*E)
  float* lse;              // (T, H)
  const float* q;          // (T, H*E)
  const float* k;          // (T, K*E)
  const float* v;          // (T, K*E)
  const int32_t* seg;      // (S+1), validated
  int64_t S, T, H, K, E;
  float scale;
};

struct DenseAttnBwd {
  float* dq;               // (T, H*E), overwritten
  float* dk;               // (T, K*E), overwritten
  float* dv;               // (T, K*E), overwritten
  const float* dout;       // (T, H*E)
  const float* q;          // (T, H*E)
  const float* k;          // (T, K*E)
  const float* v;          // (T, K*E)
  const float* out;        // (T, H*E)
  const float* lse;        // (T, H)
  const int32_t* seg;      // (S+1), validated
  int64_t S, T, H, K, E;
  float scale;
};

// A trained LoRA linear (lora_train.inc): a = A (r, C), b = B (N, r), s the scale.
struct LoraFwd {
  float* y;        // (M, N), += u Bᵀ
  float* u;        // (M, r), = s · x Aᵀ
  const float* x;  // (M, C)
  const float* a;
  const float* b;
  float s;
  int64_t M, N, C, r;
};

struct LoraBwd {
  float* dx;        // (M, C), = or += du A
  float* dA;        // (r, C), += duᵀ x with du = s · dy B
  float* dB;        // (N, r), += dyᵀ u
  const float* dy;  // (M, N)
  const float* x;   // (M, C), the forward's input (after dropout)
  const float* u;   // (M, r), the forward's u
  const float* a;
  const float* b;
  float s;
  int64_t M, N, C, r;
  bool accumulate;
};

struct TrainKernels {
  const char* name;
  // dx (M, C) = dy (M, N) · w (N, C), or += when accumulate
  void (*matmul_bwd_input)(float* dx, const float* dy, const Weight& w, int64_t M, bool accumulate);
  // dw (N, C) += dyᵀ (N, M) · x (M, C)
  void (*matmul_bwd_weight)(float* dw, const float* dy, const float* x, int64_t M, int64_t N, int64_t C);
  // dx (M, D); dg (D) += when not null
  void (*rmsnorm_bwd)(float* dx, float* dg, const float* dy, const float* x, const float* g, int64_t M, int64_t D, float eps);
  // in place, dx (T, nh, E)
  void (*rope_bwd)(float* dx, const int32_t* pos, int64_t T, int64_t nh, int64_t E, const float* inv_freq);
  void (*swiglu_bwd)(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n);
  void (*attention_dense)(const DenseAttn& a);
  int64_t (*attention_dense_bwd)(const DenseAttnBwd& a);  // returns the key chunks past one per sample
  // dtable (V, D) += dy (T, D) at rows ids (T), ids validated
  void (*embedding_bwd)(float* dtable, const float* dy, const int32_t* ids, int64_t T, int64_t D);
  // summed loss; dlogits (M, V); targets validated (-1 = ignored)
  double (*cross_entropy)(float* dlogits, const float* logits, const int32_t* targets, int64_t M, int64_t V, float scale);
  void (*lora_fwd)(const LoraFwd& f);
  void (*lora_bwd)(const LoraBwd& g);
};

extern const TrainKernels train_kernels_scalar;
extern const TrainKernels train_kernels_avx2;
extern const TrainKernels train_kernels_avx512;

// The table for the ISA selected now (see dispatch.h).
const TrainKernels& train_kernels();

}  // namespace floe
