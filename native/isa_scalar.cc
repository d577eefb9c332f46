// Scalar kernels: the portable fallback (baseline ISA), also forced with FLOE_ISA=scalar.
#include <cmath>
#include <cstring>
#include <vector>

#include "isa.h"
#include "pool.h"

namespace floe {
namespace scalar_isa {
#include "generic.inc"
#include "kv_fp8.inc"
#include "lora.inc"
#include "sample.inc"
}  // namespace scalar_isa

const Kernels kernels_scalar = {
    "scalar",
    scalar_isa::matmul_generic,
    scalar_isa::matmul_many_none,
    scalar_isa::rmsnorm_generic,
    scalar_isa::rope_generic,
    scalar_isa::swiglu_generic,
    scalar_isa::embedding_generic,
    scalar_isa::add_generic,
    scalar_isa::kv_write_generic,
    scalar_isa::attention_generic,
    scalar_isa::log_softmax_generic,
    scalar_isa::kv_write_fp8_generic,
    scalar_isa::attention_fp8_generic,
    scalar_isa::lora_segmented_generic,
    scalar_isa::sample_argmax,
    scalar_isa::sample_exp,
    scalar_isa::sample_emit,
    scalar_isa::sample_scan_gt,
    scalar_isa::sample_keys,
    scalar_isa::sample_compact,
};

}  // namespace floe
