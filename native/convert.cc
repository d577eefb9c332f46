// Weight conversion at load (LoadOptions dtype 'fp8' / 'bf16', src/formats/load.ts): f32 / f16 / bf16 (N, C) -> fp8
// E4M3 with an f32 scale grid, and f32 / f16 -> bf16, split over the thread pool, the same bytes as the TypeScript.
//
// convertFp8(src, dtype, N, C, br, bc, out, scale): out (N, C) fp8 codes, scale (ceil(N/br), ceil(C/bc)).
// convertBf16(src, dtype, N, C, out): out (N, C) bf16, little-endian.
// A trailing `release` true (src is a file mapping) then hands src's pages back (page_out): a model converted at load
// does not keep its checkpoint resident.
// src: the weight's row-major bytes (any alignment); dtype codes as DTYPE_CODE (0 f32, 1 f16, 2 bf16; convertFp8 also 4
// q8_0, dequantized a block row at a time in each task's own f32 buffer). Each call counts
// "convertFp8.<src dtype>.<isa>" / "convertBf16.<src dtype>.<isa>" (counters()).

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "convert.h"
#include "dispatch.h"
#include "napi_args.h"
#include "pool.h"

namespace floe {

namespace convert_scalar {
#include "convert.inc"
}  // namespace convert_scalar

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace convert_avx2 {
#include "convert.inc"
}  // namespace convert_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
namespace convert_avx512 {
#include "convert.inc"
}  // namespace convert_avx512
#pragma GCC pop_options
#endif

namespace {

using napi_args::fail;
using napi_args::integer;
using napi_args::need_args;
using napi_args::need_len;
using napi_args::prod;
using napi_args::str;
using napi_args::weight_name;

using Fp8Fn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, uint8_t*, float*, float);
using Bf16Fn = void (*)(int, const uint8_t*, int64_t, int64_t, uint8_t*);

Fp8Fn fp8_fn() {
#if defined(__x86_64__)
  if (isa_current() == ISA_AVX512) return convert_avx512::fp8_rows;
  if (isa_current() == ISA_AVX2) return convert_avx2::fp8_rows;
#endif
  return convert_scalar::fp8_rows;
}

Bf16Fn bf16_fn() {
#if defined(__x86_64__)
  if (isa_current() == ISA_AVX512) return convert_avx512::bf16_values;
  if (isa_current() == ISA_AVX2) return convert_avx2::bf16_values;
#endif
  return convert_scalar::bf16_values;
}

// The scale quantize.ts stores for a block holding NaN: Math.fround(NaN / 448) of the NaN Math.max returns, which is
// the hardware's default NaN (V8 on x86-64: 0xFFC00000). Made at run time so the compiler does not fold in its own.
float nan_scale() {
  volatile double zero = 0.0;
  return float(zero / zero / 448.0);
}

// Asks for 2 MiB pages over the 2 MiB-aligned part of a fresh output buffer (advice only): its first touch here is most
// of a conversion's cost otherwise (bf16: ~0.15 ns a value to convert, ~0.5-1 to fault in 4 KiB pages of new memory).
void advise_huge(uint8_t* p, int64_t bytes) {
  constexpr uintptr_t H = uintptr_t(2) << 20;
  const uintptr_t a = (uintptr_t(p) + H - 1) / H * H, e = (uintptr_t(p) + uintptr_t(bytes)) / H * H;
  if (e > a) ::madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
}

}  // namespace

void page_out(const void* p, int64_t bytes) {
#ifdef MADV_PAGEOUT
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE)), a = (uintptr_t(p) + page - 1) / page * page,
                  e = (uintptr_t(p) + uintptr_t(bytes)) / page * page;
  if (e > a) ::madvise(reinterpret_cast<void*>(a), e - a, MADV_PAGEOUT);
#else
  (void)p, (void)bytes;
#endif
}

bool released(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && info[i].ToBoolean().Value();
}

namespace {

// Source dtype argument: f32, f16, or (fp8 only) bf16 and q8_0.
int source_dtype(const Napi::CallbackInfo& info, size_t i, const char* op, bool fp8) {
  const int64_t dt = integer(info, i, op, "dtype");
  if (dt != DT_F32 && dt != DT_F16 && !(fp8 && (dt == DT_BF16 || dt == DT_Q8_0)))
    fail(info.Env(), op, std::string("dtype code must be 0 (f32), 1 (f16)") + (fp8 ? ", 2 (bf16) or 4 (q8_0)" : "") + ", got " + str(dt));
  return int(dt);
}

Napi::Value ConvertFp8(const Napi::CallbackInfo& info) {
  const char* op = "convertFp8";
  need_args(info, op, 8);
  Napi::Env env = info.Env();
  auto src = napi_args::u8(info, 0, op, "src");
  const int dt = source_dtype(info, 1, op, true);
  const int64_t N = integer(info, 2, op, "N"), C = integer(info, 3, op, "C");
  const int64_t br = integer(info, 4, op, "scale block rows", 1), bc = integer(info, 5, op, "scale block cols", 1);
  auto out = napi_args::u8(info, 6, op, "out");
  auto scale = napi_args::f32(info, 7, op, "scale");
  const int64_t n = prod(env, op, {N, C});
  const std::string shape = "(" + str(N) + ", " + str(C) + ")";
  if (dt == DT_Q8_0 && C % Q8_BLOCK != 0) fail(env, op, "q8_0 rows must be a multiple of 32 columns, got C=" + str(C));
  const int64_t src_bytes = dt == DT_Q8_0 ? n / Q8_BLOCK * Q8_BLOCK_BYTES : n * (dt == DT_F32 ? 4 : 2);
  need_len(env, op, [&] { return std::string(weight_name(dt)) + " src " + shape + " bytes"; }, src.n, src_bytes);
  need_len(env, op, [&] { return "fp8 out " + shape + " bytes"; }, out.n, n);
  const int64_t gr = (N + br - 1) / br, gc = (C + bc - 1) / bc;
  need_len(env, op, [&] { return "scale grid for block [" + str(br) + ", " + str(bc) + "]"; }, scale.n, gr * gc);
  const Fp8Fn fn = fp8_fn();
  const float ns = nan_scale();
  advise_huge(out.p, out.n);
  const int64_t chunk = (gr + 63) / 64;  // block rows a task: up to 64 tasks
  if (n > 0) {
    parallel_for((gr + chunk - 1) / chunk, [&](int64_t t) {
      fn(dt, src.p, N, C, br, bc, t * chunk, std::min(gr, (t + 1) * chunk), out.p, scale.p, ns);
    });
  }
  if (released(info, 8)) page_out(src.p, src.n);
  count(op, weight_name(dt), kernels().name);
  return env.Undefined();
}

Napi::Value ConvertBf16(const Napi::CallbackInfo& info) {
  const char* op = "convertBf16";
  need_args(info, op, 5);
  Napi::Env env = info.Env();
  auto src = napi_args::u8(info, 0, op, "src");
  const int dt = source_dtype(info, 1, op, false);
  const int64_t N = integer(info, 2, op, "N"), C = integer(info, 3, op, "C");
  auto out = napi_args::u8(info, 4, op, "out");
  const int64_t n = prod(env, op, {N, C});
  const std::string shape = "(" + str(N) + ", " + str(C) + ")";
  need_len(env, op, [&] { return std::string(weight_name(dt)) + " src " + shape + " bytes"; }, src.n, n * (dt == DT_F32 ? 4 : 2));
  need_len(env, op, [&] { return "bf16 out " + shape + " bytes"; }, out.n, n * 2);
  const Bf16Fn fn = bf16_fn();
  advise_huge(out.p, out.n);
  const int64_t chunk = std::max<int64_t>(1 << 16, (n + 63) / 64);  // values a task: up to 64 tasks
  parallel_for((n + chunk - 1) / chunk, [&](int64_t t) { fn(dt, src.p, t * chunk, std::min(n, (t + 1) * chunk), out.p); });
  if (released(info, 5)) page_out(src.p, src.n);
  count(op, weight_name(dt), kernels().name);
  return env.Undefined();
}

}  // namespace

void register_convert(Napi::Env env, Napi::Object exports) {
  exports.Set("convertFp8", Napi::Function::New(env, ConvertFp8));
  exports.Set("convertBf16", Napi::Function::New(env, ConvertBf16));
}

}  // namespace floe
