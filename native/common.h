// Shared scalar helpers for the native kernels: dtype codes, exact bf16/f16/fp8 conversions, kernel argument structs.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace floe {

// Must match DTYPE_CODE in src/tensor/tensor.ts (never renumbered).
enum DType : int { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_FP8 = 3, DT_Q8_0 = 4, DT_I32 = 5 };
// KV cache dtypes, same codes as DType.
enum KvDType : int { KV_F32 = 0, KV_BF16 = 2, KV_FP8 = 3 };

constexpr int Q8_BLOCK = 32;
constexpr int Q8_BLOCK_BYTES = 34;

inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

// Round to nearest even; NaN stays a quiet NaN with its sign.
inline uint16_t f32_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline float f16_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
  float v = float(mant) * 5.9604644775390625e-8f;  // mant * 2^-24, exact
  return sign ? -v : v;
}

// fp8 E4M3FN byte -> f32 (exact; 0x7F/0xFF are NaN, no inf).
inline float fp8_f32(uint8_t b) {
  uint32_t sign = uint32_t(b & 0x80) << 24, exp = (b >> 3) & 0xf, mant = b & 7;
  if (exp == 0xf && mant == 7) return bits_f32(sign | 0x7fc00000u);
  if (exp == 0) { float v = float(mant) * 0.001953125f; return sign ? -v : v; }  // mant * 2^-9
  return bits_f32(sign | ((exp + 120) << 23) | (mant << 20));
}

inline int8_t q8_at(const uint8_t* block, int j) { return int8_t(block[2 + j]); }
inline float q8_scale(const uint8_t* block) { return f16_f32(uint16_t(block[0] | (block[1] << 8))); }

// A weight matrix w (N, C) in a stored dtype. fp8 scale grid: (ceil(N/br), ceil(C/bc)), row-major.
struct Weight {
  const uint8_t* data;
  int dtype;
  int64_t N, C;
  const float* scale;  // fp8 only
  int64_t br, bc;      // fp8 only
  int64_t row_bytes() const {
    switch (dtype) {
      case DT_F32: return C * 4;
      case DT_F16: case DT_BF16: return C * 2;
      case DT_FP8: return C;
      case DT_Q8_0: return C / Q8_BLOCK * Q8_BLOCK_BYTES;
    }
    return 0;
  }
  int64_t grid_cols() const { return (C + bc - 1) / bc; }
};

// One layer's paged cache: k, v (numBlocks, L, K, E).
struct KvCache {
  uint8_t* k;
  uint8_t* v;
  int dtype;
  int64_t num_blocks, L, K, E;
  float* k_scale;  // fp8: (numBlocks, L, K) per-vector scales
  float* v_scale;
};

struct AttnArgs {
  float* out;          // (Tq, H*E)
  const float* q;      // (Tq, H*E)
  KvCache kv;
  int64_t H;
  float scale;
  int64_t S;
  const int32_t* q_start;   // (S+1)
  const int32_t* ctx_len;   // (S)
  const int32_t* blocks;    // (S, max_blocks)
  int64_t max_blocks;
};

}  // namespace floe
