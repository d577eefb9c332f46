// Run-time ISA selection, per-kernel call counters and the non-ISA kernels (topk).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "isa.h"

namespace floe {

// Highest ISA this CPU supports (FLOE_ISA at load may lower it).
Isa isa_supported();
Isa isa_current();
// Lowers (or restores, up to isa_supported) the active ISA; returns false for an unknown name or one above support.
bool isa_set(const std::string& name);
const char* isa_name(Isa i);
const Kernels& kernels();

// AMX tile units (bf16 GEMM for prefill and training; native/amx.inc): supported when CPUID has amx_tile + amx_bf16,
// the OS enables the tile state (XCR0) and Linux grants this process its use (arch_prctl(ARCH_REQ_XCOMP_PERM)).
// Mode: AMX_OFF, AMX_TILES (the default where supported; FLOE_AMX=0 at load turns it off) or AMX_EMULATE (FLOE_AMX=emulate,
// any host: the same code with the tile operations in scalar C++, for tests). amx_active: a mode other than off and the
// AVX-512 kernels selected. amx_reason: why the tiles are not supported ("" when they are).
enum AmxMode : int { AMX_OFF = 0, AMX_TILES = 1, AMX_EMULATE = 2 };
bool amx_supported();
AmxMode amx_mode();
bool amx_active();
// The int8 tile kernels (q8_0r16; TDPBSUD) need amx_int8 (CPUID leaf 7 EDX bit 25) besides the above; the emulation
// has them everywhere.
bool amx_int8_supported();
bool amx_int8_active();
const char* amx_reason();
// Sets the mode; false for AMX_TILES where the tiles are not supported.
bool amx_set(AmxMode mode);
// Prefill attention's QKᵀ and PV on the bf16 tiles (native/attn_amx.inc; bf16 and fp8 KV caches), when amx_active().
// Setting: 1 on, 0 off, -1 the default: on under the emulation only. The kernel has passed the reference backend under
// the emulation but has not yet run on real tiles, so an AMX host keeps the AVX-512 kernel unless FLOE_AMX_ATTN=1 (at
// load) or amx_attn_set(1) asks for the tiles.
bool amx_attn_active();
int amx_attn_setting();
void amx_attn_set(int setting);

// How the AVX-512 decode GEMVs multiply bf16 pairs (bf16r16, fp8r16; native/gemv512.inc): vdpbf16ps, or f32 FMA on
// the widened halves where this core runs FMA's multiply-adds faster (measured once, at the first such matmul or the
// first call here); forced: FLOE_BF16_DOT=fma|dpbf16 chose. Only meaningful where the AVX-512 kernels can run.
struct DotFacts {
  double fma_gmacs = 0, dp_gmacs = 0;  // multiply-adds per second of one core, G
  bool fma = false, forced = false;
  double ghz = 0, fma_per_cycle = 0;  // the core's clock (a dependent add chain); zmm FMAs retired per cycle
  bool r16_wide = false, wide_forced = false;  // the repacked GEMV past the GEMM's rows (mm512.inc r16_gemv_wide)
};
const DotFacts& avx512_dot_facts();  // AVX-512 (with bf16) hosts only

// Counter for key "<kernel>.<variant>.<isa>" or "<kernel>.<isa>" (variant empty).
void count(const char* kernel, const char* variant, const char* isa);
std::vector<std::pair<std::string, double>> counters_snapshot();

// ids (k), values (k): the k largest of x (n), ties by lower index, NaN last.
void topk(const float* x, int64_t n, int64_t k, int32_t* ids, float* values);

}  // namespace floe
