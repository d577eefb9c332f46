// bf16 FLOP ceiling probe: N threads each issue independent vdpbf16ps (AVX512-BF16) chains; prints one JSON line.
//
// usage: train-peak [--threads N] [--ms 300] [--reps 5] [--amx] [--int8]
// gflops: wall clock; gflops_per_cpu_time: summed per-thread FLOPs per thread CPU-second (what a quiet machine gives).
// One zmm vdpbf16ps = 16 lanes x 2 bf16 products + 2 adds = 64 FLOPs. Without AVX512-BF16 the probe measures f32
// FMA (zmm or ymm) instead and says so in "isa". Best of `reps` timed rounds, each about `ms` long.
// --amx: the AMX tile peak instead (TDPBF16PS on four 16 x 16 f32 accumulators, 16·16·32·2 FLOPs each), where the
// compiler targets AMX (-march=native on such a host) and Linux grants the tile state; else an error.
// --int8: the int8 peak instead, in GOP/s (a product and an add are 2 ops, as for FLOPs): vpdpbusd zmm (16 lanes x 4
// u8·s8 products = 128 ops), or with --amx TDPBSSD (16·16·64·2 ops each; needs amx_int8). The q8_0 kernels' figures
// are fractions of these.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <time.h>
#include <vector>

namespace {

constexpr int kAcc = 16;  // independent accumulators: covers latency x throughput of the dot/FMA unit

#if defined(__AVX512BF16__)
const char* kIsa = "avx512_bf16 vdpbf16ps zmm";
constexpr double kFlopsPerOp = 64.0;
float chain(long iters, float seed) {
  __m512 acc[kAcc];
  for (int j = 0; j < kAcc; j++) acc[j] = _mm512_set1_ps(seed * j);
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x0001);  // tiny bf16 keeps sums finite
  for (long i = 0; i < iters; i++) {
    for (int j = 0; j < kAcc; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < kAcc; j++) s = _mm512_add_ps(s, acc[j]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0] + out[15];
}
#elif defined(__AVX512F__)
const char* kIsa = "f32 fma zmm (no avx512_bf16)";
constexpr double kFlopsPerOp = 32.0;
float chain(long iters, float seed) {
  __m512 acc[kAcc];
  for (int j = 0; j < kAcc; j++) acc[j] = _mm512_set1_ps(seed * j);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; i++) {
    for (int j = 0; j < kAcc; j++) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < kAcc; j++) s = _mm512_add_ps(s, acc[j]);
  float out[16];
  _mm512_storeu_ps(out, s);
  return out[0] + out[15];
}
#else
const char* kIsa = "f32 fma ymm (no avx512)";
constexpr double kFlopsPerOp = 16.0;
float chain(long iters, float seed) {
  __m256 acc[kAcc];
  for (int j = 0; j < kAcc; j++) acc[j] = _mm256_set1_ps(seed * j);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; i++) {
    for (int j = 0; j < kAcc; j++) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  }
  float out[8];
  __m256 s = acc[0];
  for (int j = 1; j < kAcc; j++) s = _mm256_add_ps(s, acc[j]);
  _mm256_storeu_ps(out, s);
  return out[0];
}
#endif

#if defined(__AVX512VNNI__)
constexpr bool kHasVnni = true;
float chain_int8(long iters, float seed) {
  __m512i acc[kAcc];
  for (int j = 0; j < kAcc; j++) acc[j] = _mm512_set1_epi32(int(seed) * j);
  const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(1);
  for (long i = 0; i < iters; i++) {
    for (int j = 0; j < kAcc; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  __m512i s = acc[0];
  for (int j = 1; j < kAcc; j++) s = _mm512_add_epi32(s, acc[j]);
  int32_t out[16];
  _mm512_storeu_si512(out, s);
  return float(out[0] + out[15]);
}
#else
constexpr bool kHasVnni = false;
float chain_int8(long, float) { return 0; }
#endif

#if defined(__AMX_TILE__)
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
constexpr TileConfig make_config() {
  TileConfig c{};
  c.palette = 1;
  for (int t = 0; t < 8; t++) c.colsb[t] = 64, c.rows[t] = 16;
  return c;
}
alignas(64) const TileConfig kTileConfig = make_config();  // in memory: see native/amx.inc on GCC and ldtilecfg
// iters × four tile products (dp: into tmm0-3 from tmm4-5 × tmm6-7, all loaded from `ones`, 16 × 64 bytes)
template <class Dp>
float chain_tiles(long iters, float seed, const void* ones, Dp dp) {
  _tile_loadconfig(&kTileConfig);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
  for (long i = 0; i < iters; i++) dp();
  alignas(64) int32_t out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  return float(out[0] & 0xff) + seed;
}
#endif

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
constexpr bool kHasAmx = true;
constexpr double kAmxFlopsPerIter = 4.0 * 16 * 16 * 32 * 2;  // four TDPBF16PS per iteration
alignas(64) uint16_t kOnes[16 * 32];
float chain_amx(long iters, float seed) {
  for (auto& v : kOnes) v = 0x3f80;  // bf16 1.0
  return chain_tiles(iters, seed, kOnes, [] {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  });
}
#else
constexpr bool kHasAmx = false;
constexpr double kAmxFlopsPerIter = 0;
float chain_amx(long, float) { return 0; }
#endif

#if defined(__AMX_TILE__) && defined(__AMX_INT8__)
constexpr bool kHasAmxInt8 = true;
alignas(64) int8_t kOnes8[16 * 64];
float chain_amx_int8(long iters, float seed) {
  for (auto& v : kOnes8) v = 1;
  return chain_tiles(iters, seed, kOnes8, [] {
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6);
    _tile_dpbssd(3, 5, 7);
  });
}
#else
constexpr bool kHasAmxInt8 = false;
float chain_amx_int8(long, float) { return 0; }
#endif

double thread_cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, ms = 300, reps = 5;
  bool amx = false, int8 = false;
  for (int i = 1; i < argc; i += 2) {
    if (!strcmp(argv[i], "--amx")) { amx = true; i--; continue; }
    if (!strcmp(argv[i], "--int8")) { int8 = true; i--; continue; }
    if (i + 1 >= argc) { fprintf(stderr, "train-peak: %s needs a value\n", argv[i]); return 2; }
    if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--ms")) ms = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    else { fprintf(stderr, "train-peak: unknown flag %s\n", argv[i]); return 2; }
  }
  if (threads < 1 || ms < 1 || reps < 1) { fprintf(stderr, "train-peak: --threads, --ms, --reps must be >= 1\n"); return 2; }
  if (int8 && !amx && !kHasVnni) { fprintf(stderr, "train-peak: --int8: built without AVX512-VNNI\n"); return 2; }
  if (int8 && amx && !kHasAmxInt8) { fprintf(stderr, "train-peak: --amx --int8: built without AMX-INT8 (g++ -march=native on a host with amx_int8)\n"); return 2; }
  if (amx && !kHasAmx) { fprintf(stderr, "train-peak: --amx: built without AMX (g++ -march=native on a host with amx_tile, amx_bf16)\n"); return 2; }
  if (amx && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
    fprintf(stderr, "train-peak: --amx: Linux refused the tile state (arch_prctl)\n");
    return 2;
  }
  float (*const run)(long, float) = int8 ? (amx ? chain_amx_int8 : chain_int8) : amx ? chain_amx : chain;
  const double flops_per_iter = int8 ? (amx ? 4.0 * 16 * 16 * 64 * 2 : kAcc * 128.0) : amx ? kAmxFlopsPerIter : kAcc * kFlopsPerOp;
  const char* isa = int8 ? (amx ? "amx_int8 tdpbssd" : "avx512_vnni vpdpbusd zmm") : amx ? "amx_bf16 tdpbf16ps" : kIsa;
  // calibrate iterations per thread for about `ms` on one thread
  long iters = 1 << 16;
  for (;;) {
    double t = now_s();
    volatile float sink = run(iters, 1.0f);
    (void)sink;
    t = now_s() - t;
    if (t > 0.02) { iters = (long)(iters * (ms / 1000.0) / t) + 1; break; }
    iters *= 4;
  }
  double best = 0, best_cpu = 0, sum = 0;
  std::vector<double> rounds;
  for (int r = 0; r < reps; r++) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    std::vector<float> sinks(threads);
    std::vector<double> cpu(threads);
    for (int t = 0; t < threads; t++) {
      pool.emplace_back([&, t] {
        ready++;
        while (!go.load()) {}
        const double c0 = thread_cpu_s();
        sinks[t] = run(iters, 1.0f + t);
        cpu[t] = thread_cpu_s() - c0;
      });
    }
    while (ready.load() < threads) {}
    double t0 = now_s();
    go = true;
    for (auto& th : pool) th.join();
    double dt = now_s() - t0;
    double gflops = threads * (double)iters * flops_per_iter / dt / 1e9;
    rounds.push_back(gflops);
    best = std::max(best, gflops);
    // per CPU-second of each thread: what the threads reach when they own their cores (robust to a busy machine)
    double per_cpu = 0;
    for (int t = 0; t < threads; t++) per_cpu += (double)iters * flops_per_iter / cpu[t] / 1e9;
    best_cpu = std::max(best_cpu, per_cpu);
    sum += sinks[0];
  }
  printf("{\"threads\":%d,\"isa\":\"%s\",\"gflops\":%.2f,\"gflops_per_cpu_time\":%.2f,\"rounds\":[", threads, isa, best, best_cpu);
  for (size_t i = 0; i < rounds.size(); i++) printf("%s%.2f", i ? "," : "", rounds[i]);
  printf("],\"iters\":%ld,\"checksum\":%g}\n", iters, (double)sum);
  return 0;
}
