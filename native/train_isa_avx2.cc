// AVX2 + FMA + F16C training kernels: the portable kernels compiled for this ISA, with F16C row decoding.
#include <cmath>
#include <cstring>
#include <vector>

#include "isa.h"
#include "pool.h"
#include "train.h"

#if defined(__x86_64__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#pragma GCC diagnostic ignored "-Wunused-function"  // generic.inc's forward kernels are not used here

namespace floe {
namespace train_avx2_isa {

#define FLOE_DQ_F16
static void dq_f16(const uint8_t* src, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * 2))));
  for (; i < n; i++) out[i] = _cvtsh_ss(uint16_t(src[i * 2] | (src[i * 2 + 1] << 8)));
}

#include "generic.inc"
#include "train_generic.inc"
#include "lora_train.inc"

}  // namespace train_avx2_isa

const TrainKernels train_kernels_avx2 = {
    "avx2",
    train_avx2_isa::matmul_bwd_input_generic,
    train_avx2_isa::matmul_bwd_weight_generic,
    train_avx2_isa::rmsnorm_bwd_generic,
    train_avx2_isa::rope_bwd_generic,
    train_avx2_isa::swiglu_bwd_generic,
    train_avx2_isa::attention_dense_generic,
    train_avx2_isa::attention_dense_bwd_generic,
    train_avx2_isa::embedding_bwd_generic,
    train_avx2_isa::cross_entropy_generic,
    train_avx2_isa::lora_fwd_generic,
    train_avx2_isa::lora_bwd_generic,
};

}  // namespace floe
#pragma GCC pop_options
#else
namespace floe { const TrainKernels train_kernels_avx2 = train_kernels_scalar; }
#endif
