// AVX2 + FMA + F16C kernels: register-tiled matmuls plus the portable kernels compiled for this ISA.
#include <cmath>
#include <cstring>
#include <vector>

#include "dispatch.h"
#include "isa.h"
#include "pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace floe {
namespace avx2_isa {

#define FLOE_DQ_F16
static void dq_f16(const uint8_t* src, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * 2))));
  for (; i < n; i++) out[i] = _cvtsh_ss(uint16_t(src[i * 2] | (src[i * 2 + 1] << 8)));
}

#include "generic.inc"
#include "kv_fp8.inc"
#include "tiles.inc"
#include "mm256.inc"
#include "lora.inc"
#define FLOE_SAMPLE_AVX2
#include "sample.inc"
}  // namespace avx2_isa

const Kernels kernels_avx2 = {
    "avx2",
    avx2_isa::matmul_avx2,
    avx2_isa::matmul_many_none,
    avx2_isa::rmsnorm_generic,
    avx2_isa::rope_generic,
    avx2_isa::swiglu_generic,
    avx2_isa::embedding_generic,
    avx2_isa::add_generic,
    avx2_isa::kv_write_generic,
    avx2_isa::attention_generic,
    avx2_isa::log_softmax_generic,
    avx2_isa::kv_write_fp8_generic,
    avx2_isa::attention_fp8_generic,
    avx2_isa::lora_segmented_generic,
    avx2_isa::sample_argmax,
    avx2_isa::sample_exp,
    avx2_isa::sample_emit,
    avx2_isa::sample_scan_gt,
    avx2_isa::sample_keys,
    avx2_isa::sample_compact,
};

}  // namespace floe
#pragma GCC pop_options
#else
namespace floe { const Kernels kernels_avx2 = kernels_scalar; }
#endif
