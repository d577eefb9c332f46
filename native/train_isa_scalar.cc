// Scalar training kernels: the portable fallback (baseline ISA), also forced with FLOE_ISA=scalar.
#include <cmath>
#include <cstring>
#include <vector>

#include "isa.h"
#include "pool.h"
#include "train.h"

#pragma GCC diagnostic ignored "-Wunused-function"  // generic.inc's forward kernels are not used here

namespace floe {
namespace train_scalar_isa {
#include "generic.inc"
#include "train_generic.inc"
#include "lora_train.inc"
}  // namespace train_scalar_isa

const TrainKernels train_kernels_scalar = {
    "scalar",
    train_scalar_isa::matmul_bwd_input_generic,
    train_scalar_isa::matmul_bwd_weight_generic,
    train_scalar_isa::rmsnorm_bwd_generic,
    train_scalar_isa::rope_bwd_generic,
    train_scalar_isa::swiglu_bwd_generic,
    train_scalar_isa::attention_dense_generic,
    train_scalar_isa::attention_dense_bwd_generic,
    train_scalar_isa::embedding_bwd_generic,
    train_scalar_isa::cross_entropy_generic,
    train_scalar_isa::lora_fwd_generic,
    train_scalar_isa::lora_bwd_generic,
};

}  // namespace floe
