// AVX-512 kernels (F, BW, VL, DQ, BF16, VNNI, VBMI): hand-written matmuls per weight dtype plus the portable kernels.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "dispatch.h"
#include "isa.h"
#include "pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,avx512vbmi")

namespace floe {
namespace avx512_isa {

// Where a far software prefetch lands. Into L1 (prefetcht0), a line fetched from DRAM holds one of L1's few miss
// buffers until it arrives; into L2 (prefetcht1), L2's larger miss queue keeps more lines in flight and L1's buffers
// stay free for the kernel's own loads. Measured (session 35, Zen 4, 2 threads, matmul-micro --rotate 32 --ab
// FLOE_PF_L2=0, the 1B FFN shapes): q8_0r16 at 3-16 rows took 0.49-0.93x the time into L2 (9 rows of 8192 x 2048:
// 0.56 ms against 1.08, the weight read at the DRAM rate), fp8r16 at 2-16 rows 0.65-0.99x; the row-layout GEMVs'
// prefetch (f32, and q8_0 / f16 rows where not repacked) 0.78-0.97x at 1-5 rows, the 1B f32 decode 0.69-0.92x
// (decode-ab, 4 rounds); bf16r16 and f16r16 were level or slower (0.8-1.3x) and keep L1, as do attention's K/V
// prefetches (level) and the batched q8_0r16 GEMM's (level); the repacked one-row GEMVs keep no software prefetch
// (into L2 they were slower too). FLOE_PF_L2=0: all into L1 (A/B).
static const bool pf_l2 = [] { const char* e = std::getenv("FLOE_PF_L2"); return !(e && e[0] == '0'); }();
static inline void pf_far(const void* p) {
  if (pf_l2) _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
  else _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
}

#define FLOE_DQ_F16
static void dq_f16(const uint8_t* src, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i * 2))));
  for (; i < n; i++) out[i] = _cvtsh_ss(uint16_t(src[i * 2] | (src[i * 2 + 1] << 8)));
}

#include "generic.inc"
#include "tiles.inc"
#include "mm512.inc"
#include "attn512.inc"
#include "kv_fp8.inc"
#include "attn_fp8_512.inc"
#define FLOE_LORA_AVX512
#include "lora.inc"
#define FLOE_SAMPLE_AVX512
#include "sample.inc"

}  // namespace avx512_isa

const Kernels kernels_avx512 = {
    "avx512",
    avx512_isa::matmul_avx512,
    avx512_isa::matmul_many_avx512,
    avx512_isa::rmsnorm_generic,
    avx512_isa::rope_generic,
    avx512_isa::swiglu_generic,
    avx512_isa::embedding_generic,
    avx512_isa::add_generic,
    avx512_isa::kv_write_generic,
    avx512_isa::attention_avx512,
    avx512_isa::log_softmax_generic,
    avx512_isa::kv_write_fp8_generic,
    avx512_isa::attention_fp8_avx512,
    avx512_isa::lora_segmented_generic,
    avx512_isa::sample_argmax,
    avx512_isa::sample_exp,
    avx512_isa::sample_emit,
    avx512_isa::sample_scan_gt,
    avx512_isa::sample_keys,
    avx512_isa::sample_compact,
};

bool gemm_bwd_input_avx512(float* dx, const float* dy, const Weight& w, int64_t M, bool accumulate) {
  return avx512_isa::matmul_tr_avx512(dx, dy, w, M, accumulate);
}

const DotFacts& avx512_dot_facts() { return avx512_isa::gemv::dot_facts(); }

}  // namespace floe
#pragma GCC pop_options
#else
namespace floe {
const Kernels kernels_avx512 = kernels_scalar;
bool gemm_bwd_input_avx512(float*, const float*, const Weight&, int64_t, bool) { return false; }
const DotFacts& avx512_dot_facts() {
  static const DotFacts none;
  return none;
}
}  // namespace floe
#endif
