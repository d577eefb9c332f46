// AVX-512 training kernels: hand-written matmul backward (f32 FMA / vdpbf16ps) plus the portable kernels.
#include <cmath>
#include <cstring>
#include <vector>

#include "isa.h"
#include "pool.h"
#include "train.h"

#if defined(__x86_64__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")
#pragma GCC diagnostic ignored "-Wunused-function"  // generic.inc's forward kernels are not used here

namespace floe {
namespace train_avx512_isa {

#define FLOE_DQ_F16
static void dq_f16(const uint8_t* src, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i * 2))));
  for (; i < n; i++) out[i] = _cvtsh_ss(uint16_t(src[i * 2] | (src[i * 2 + 1] << 8)));
}

#include "generic.inc"
#include "train_avx512.inc"
#include "train_generic.inc"
#define FLOE_LORA_TRAIN_AVX512
#include "lora_train.inc"

}  // namespace train_avx512_isa

const TrainKernels train_kernels_avx512 = {
    "avx512",
    train_avx512_isa::matmul_bwd_input_avx512,
    train_avx512_isa::matmul_bwd_weight_avx512,
    train_avx512_isa::rmsnorm_bwd_generic,
    train_avx512_isa::rope_bwd_generic,
    train_avx512_isa::swiglu_bwd_generic,
    train_avx512_isa::attention_dense_generic,
    train_avx512_isa::attention_dense_bwd_generic,
    train_avx512_isa::embedding_bwd_generic,
    train_avx512_isa::cross_entropy_generic,
    train_avx512_isa::lora_fwd_avx512,
    train_avx512_isa::lora_bwd_avx512,
};

}  // namespace floe
#pragma GCC pop_options
#else
namespace floe { const TrainKernels train_kernels_avx512 = train_kernels_scalar; }
#endif
