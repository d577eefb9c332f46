// Shared scalar helpers for the native kernels: dtype codes, exact bf16/f16/fp8 conversions, kernel argument structs.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace floe {

// Must match DTYPE_CODE in src/tensor/tensor.ts (never renumbered).
// DT_Q8_0R is q8_0 repacked for decode (q8r16_* below): the same blocks, 16 rows interleaved; it is not a file dtype.
// DT_BF16R, DT_F16R, DT_FP8R, DT_F32R: bf16 / f16 / fp8 / f32 repacked the same way (r16_*, fp8r_* below); not file
// dtypes either.
enum DType : int { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_FP8 = 3, DT_Q8_0 = 4, DT_I32 = 5, DT_Q8_0R = 6, DT_BF16R = 7, DT_F16R = 8, DT_FP8R = 9, DT_F32R = 10 };
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

// q8_0 repacked in groups of 16 rows (N a multiple of 16): the same bytes as q8_0 in another order, in a 64-byte
// aligned buffer (lines are 64-byte aligned when the block count nb is even, as in every Llama shape). Group g takes nb·Q8R_GROUP_BYTES at g·nb·Q8R_GROUP_BYTES; its blocks go by pairs (2p, 2p + 1):
// 8 lines of 64 bytes for block 2p, 8 for block 2p + 1, then both blocks' 16 f16 scales (1088 bytes, 17 whole lines;
// a lone last block: 8 lines + 32 bytes of scales). Line k of a block = for each row r of the group its quants
// 4k..4k+3, each + 128 (unsigned, as vpdpbusd reads them): one aligned line holds 4 columns of 16 rows, so a GEMV
// broadcasts 4 x bytes against it with no shuffles.
constexpr int Q8R_ROWS = 16;
constexpr int Q8R_GROUP_BYTES = Q8R_ROWS * Q8_BLOCK_BYTES;  // 544 per block of 16 rows
// The 8 lines of block b of the group holding row n, and its 16 f16 scales.
inline const uint8_t* q8r_lines(const uint8_t* data, int64_t nb, int64_t n, int64_t b) {
  return data + (n / Q8R_ROWS) * nb * Q8R_GROUP_BYTES + (b / 2) * 2 * Q8R_GROUP_BYTES + (b % 2) * 512;
}
inline const uint8_t* q8r_scales(const uint8_t* data, int64_t nb, int64_t n, int64_t b) {
  const bool pair = (b | 1) < nb;
  return data + (n / Q8R_ROWS) * nb * Q8R_GROUP_BYTES + (b / 2) * 2 * Q8R_GROUP_BYTES + (pair ? 1024 : 512) + (b % 2) * 32;
}
inline int8_t q8r_at(const uint8_t* lines, int64_t n, int j) { return int8_t(lines[(j / 4) * 64 + (n % Q8R_ROWS) * 4 + j % 4] ^ 0x80); }
inline float q8r_scale(const uint8_t* scales, int64_t n) {
  const uint8_t* s = scales + (n % Q8R_ROWS) * 2;
  return f16_f32(uint16_t(s[0] | (s[1] << 8)));
}
// out (ceil-free: N % 16 == 0) from q8_0 rows src (N, C): groups [g0, g1).
inline void q8r_repack(const uint8_t* src, int64_t N, int64_t C, int64_t g0, int64_t g1, uint8_t* out) {
  const int64_t nb = C / Q8_BLOCK, ldw = nb * Q8_BLOCK_BYTES;
  (void)N;
  for (int64_t g = g0; g < g1; g++)
    for (int64_t b = 0; b < nb; b++) {
      uint8_t* lines = const_cast<uint8_t*>(q8r_lines(out, nb, g * Q8R_ROWS, b));
      uint8_t* scales = const_cast<uint8_t*>(q8r_scales(out, nb, g * Q8R_ROWS, b));
      for (int r = 0; r < Q8R_ROWS; r++) {
        const uint8_t* blk = src + (g * Q8R_ROWS + r) * ldw + b * Q8_BLOCK_BYTES;
        scales[r * 2] = blk[0], scales[r * 2 + 1] = blk[1];
        for (int j = 0; j < Q8_BLOCK; j++) lines[(j / 4) * 64 + r * 4 + j % 4] = uint8_t(blk[2 + j] ^ 0x80);
      }
    }
}
// bf16 / f16 repacked in groups of 16 rows (N a multiple of 16; bf16: C even): the same 2-byte values in another
// order, group g at g·32·C bytes. Each 64-byte line holds one GEMM unit of all 16 rows, so a GEMV broadcasts x against
// whole lines and sums vertically (16 rows in 16 lanes, no per-row horizontal reduction):
//   bf16r16: line u = for each row r the bf16 pair (2u, 2u + 1) (4 bytes at 4r), as vdpbf16ps pairs them.
//   f16r16 : half line c (32 bytes at 32c) = column c of rows 0..15 (2 bytes at 2r), as vcvtph2ps widens 16 lanes.
// Both put column c of row r inside bytes [32c, 32c + 32) of its group (bf16: c even and odd share a line).
// f32 repacked the same way (f32r16, group g at g·64·C bytes): line c = column c of rows 0..15 (4 bytes at 4r).
constexpr int R16_ROWS = 16;
inline int64_t r16_offset(int dtype, int64_t C, int64_t n, int64_t c) {
  const int64_t r = n % R16_ROWS;
  if (dtype == DT_F32R) return (n / R16_ROWS) * R16_ROWS * C * 4 + c * 64 + r * 4;
  const int64_t g = (n / R16_ROWS) * R16_ROWS * C * 2;
  return dtype == DT_BF16R ? g + (c / 2) * 64 + r * 4 + (c % 2) * 2 : g + c * 32 + r * 2;
}
inline uint16_t r16_at(const uint8_t* data, int dtype, int64_t C, int64_t n, int64_t c) {
  const uint8_t* p = data + r16_offset(dtype, C, n, c);
  return uint16_t(p[0] | (p[1] << 8));
}
// out (dtype DT_BF16R, DT_F16R or DT_F32R) from row-major rows src (N, C) of 2 (4) bytes: groups [g0, g1).
inline void r16_repack(const uint8_t* src, int dtype, int64_t C, int64_t g0, int64_t g1, uint8_t* out) {
  for (int64_t n = g0 * R16_ROWS; n < g1 * R16_ROWS; n++) {
    const uint8_t* row = src + n * C * (dtype == DT_F32R ? 4 : 2);
    uint8_t* o = out + r16_offset(dtype, C, n, 0);
    if (dtype == DT_F32R)
      for (int64_t c = 0; c < C; c++) std::memcpy(o + c * 64, row + c * 4, 4);
    else if (dtype == DT_BF16R)
      for (int64_t u = 0; u < C / 2; u++) std::memcpy(o + u * 64, row + u * 4, 4);
    else
      for (int64_t c = 0; c < C; c++) std::memcpy(o + c * 32, row + c * 2, 2);
  }
}

// fp8 e4m3 repacked in groups of 16 rows (N a multiple of 16, C of 4; the scale grid unchanged), group g at g·16·C
// bytes: 64-byte line u = columns 4u..4u+3 of the 16 rows, ordered so that the LUT conversion of a line (conv64:
// unpacks within 128-bit lanes) yields the bf16 pairs (4u, 4u + 1) of rows 0..15 in one zmm and (4u + 2, 4u + 3)
// in the other: byte 16·(r/4) + 8·(j/2) + 2·(r%4) + j%2 holds column 4u + j of row r.
inline int64_t fp8r_offset(int64_t C, int64_t n, int64_t c) {
  const int64_t r = n % R16_ROWS, j = c % 4;
  return (n / R16_ROWS) * R16_ROWS * C + (c / 4) * 64 + 16 * (r / 4) + 8 * (j / 2) + 2 * (r % 4) + j % 2;
}
inline void fp8r_repack(const uint8_t* src, int64_t C, int64_t g0, int64_t g1, uint8_t* out) {
  for (int64_t n = g0 * R16_ROWS; n < g1 * R16_ROWS; n++)
    for (int64_t c = 0; c < C; c++) out[fp8r_offset(C, n, c)] = src[n * C + c];
}

inline float q8_scale(const uint8_t* block) { return f16_f32(uint16_t(block[0] | (block[1] << 8))); }

// A weight matrix w (N, C) in a stored dtype. fp8 scale grid: (ceil(N/br), ceil(C/bc)), row-major.
struct Weight {
  const uint8_t* data;
  int dtype;
  int64_t N, C;
  const float* scale;  // fp8 (and fp8r16) only
  int64_t br, bc;      // fp8 (and fp8r16) only
  int64_t row_bytes() const {
    switch (dtype) {
      case DT_F32: case DT_F32R: return C * 4;
      case DT_F16: case DT_BF16: case DT_F16R: case DT_BF16R: return C * 2;  // R: the average
      case DT_FP8: case DT_FP8R: return C;
      case DT_Q8_0: case DT_Q8_0R: return C / Q8_BLOCK * Q8_BLOCK_BYTES;  // R: the average (rows are interleaved)
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
