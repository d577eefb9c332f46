// Session 20 stand-alone probe (g++ -O3 -march=native): the f16r16 M = 1 kernel shape against a plain read and a
// vdpbf16ps read over 1 GiB, with software prefetch distances and hints; medians of 11 alternating passes.
#include <immintrin.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <vector>
#include <sys/mman.h>
#include <cstdint>
// f16r16 GEMV stream test: N rows x C cols, groups of 16 rows, column c of a group = 32 bytes (16 f16)
static int PF = 0; static int HINT = 0;
template <int CH, int VAR>
static void kern(const float* x, int64_t C, const uint8_t* g, float* y) {
  __m512 acc[CH];
  for (int k = 0; k < CH; k++) acc[k] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; c += CH) {
    const uint8_t* l = g + c * 32;
    if (PF) for (int k = 0; k < CH; k += 2) { if (HINT == 0) _mm_prefetch((const char*)l + PF + k * 32, _MM_HINT_T0); else if (HINT == 1) _mm_prefetch((const char*)l + PF + k * 32, _MM_HINT_T1); else _mm_prefetch((const char*)l + PF + k * 32, _MM_HINT_NTA); }
    if (VAR == 0) {
#pragma GCC unroll 16
      for (int k = 0; k < CH; k++) acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(x[c + k]), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(l + k * 32))), acc[k]);
    } else {
#pragma GCC unroll 16
      for (int k = 0; k < CH; k += 2) {
        __m512i w = _mm512_loadu_si512(l + k * 32);
        acc[k] = _mm512_fmadd_ps(_mm512_set1_ps(x[c + k]), _mm512_cvtph_ps(_mm512_castsi512_si256(w)), acc[k]);
        acc[k + 1] = _mm512_fmadd_ps(_mm512_set1_ps(x[c + k + 1]), _mm512_cvtph_ps(_mm512_extracti64x4_epi64(w, 1)), acc[k + 1]);
      }
    }
  }
  __m512 s = acc[0];
  for (int k = 1; k < CH; k++) s = _mm512_add_ps(s, acc[k]);
  _mm512_storeu_ps(y, s);
}
template <int CH>
static void kread(const float* x, int64_t C, const uint8_t* g, float* y) {
  __m512i acc[CH];
  for (int k = 0; k < CH; k++) acc[k] = _mm512_setzero_si512();
  for (int64_t c = 0; c < C; c += 2 * CH) {
#pragma GCC unroll 16
    for (int k = 0; k < CH; k++) acc[k] = _mm512_add_epi32(acc[k], _mm512_loadu_si512(g + c * 32 + k * 64));
  }
  __m512i s = acc[0];
  for (int k = 1; k < CH; k++) s = _mm512_add_epi32(s, acc[k]);
  _mm512_storeu_si512(y, s);
}
template <int CH>
static void kbf(const float* x, int64_t C, const uint8_t* g, float* y) {
  __m512 acc[CH];
  for (int k = 0; k < CH; k++) acc[k] = _mm512_setzero_ps();
  const uint32_t* xp = (const uint32_t*)x;
  for (int64_t c = 0; c < C; c += 2 * CH) {
#pragma GCC unroll 16
    for (int k = 0; k < CH; k++) acc[k] = _mm512_dpbf16_ps(acc[k], (__m512bh)_mm512_loadu_si512(g + c * 32 + k * 64), (__m512bh)_mm512_set1_epi32(xp[c / 2 + k]));
  }
  __m512 s = acc[0];
  for (int k = 1; k < CH; k++) s = _mm512_add_ps(s, acc[k]);
  _mm512_storeu_ps(y, s);
}
template <int CH, int VAR>
static double run(const float* x, int64_t N, int64_t C, const uint8_t* w, float* y, int reps) {
  double best = 1e9;
  for (int r = 0; r < reps; r++) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t gi = 0; gi < N / 16; gi++) (VAR == 2 ? kread<CH> : VAR == 3 ? kbf<CH> : kern<CH, VAR>)(x, C, w + gi * 16 * C * 2, y + gi * 16);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  return N * C * 2 / best / 1e9;
}

#include <algorithm>
int main(int argc, char** argv) {
  int64_t C = argc > 1 ? atoll(argv[1]) : 2048;
  int64_t bytes = 1LL << 30, N = bytes / (C * 2) / 16 * 16;
  uint8_t* w = (uint8_t*)mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(w, bytes, MADV_HUGEPAGE);
  uint16_t* h = (uint16_t*)w;
  for (int64_t i = 0; i < bytes / 2; i++) h[i] = 0x2000 | (i * 2654435761u >> 22 & 0x3ff);
  std::vector<float> x(C, 0.5f), y(N);

  struct V { int pf, hint; const char* n; };
  V vs[] = {{0,0,"none"},{512,0,"512 T0"},{1024,0,"1K T0"},{2048,0,"2K T0"},{4096,0,"4K T0"},{1024,1,"1K T1"},{2048,1,"2K T1"},{4096,1,"4K T1"},{8192,1,"8K T1"},{-1,0,"read"}};
  const int NV = sizeof(vs)/sizeof(vs[0]);
  std::vector<double> a[16];
  for (int t = 0; t < 11; t++)
    for (int k = 0; k < NV; k++) { PF = vs[k].pf; HINT = vs[k].hint; a[k].push_back(PF < 0 ? run<4, 2>(x.data(), N, C, w, y.data(), 1) : run<4, 0>(x.data(), N, C, w, y.data(), 1)); }
  for (int k = 0; k < NV; k++) { std::sort(a[k].begin(), a[k].end()); printf("%-8s median %.1f  max %.1f GB/s\n", vs[k].n, a[k][5], a[k][10]); }
}
