// Session 20 stand-alone probe (g++ -O3 -march=native -pthread; ./calls THREADS): a plain read split over THREADS
// threads in calls of 1 MB to 1 GB with a spinning barrier per call, as the pool hands out GEMV calls.
#include <immintrin.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
#include <sys/mman.h>
#include <cstdint>
static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
static float sum(const uint8_t* p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 256 <= n; i += 256) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i)); a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 64));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 128)); a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 192));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
int main(int argc, char** argv) {
  int T = argc > 1 ? atoi(argv[1]) : 2;
  size_t bytes = 1ull << 30;
  uint8_t* buf = (uint8_t*)mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(buf, bytes, MADV_HUGEPAGE);
  for (size_t i = 0; i < bytes; i += 4) *(float*)(buf + i) = 1.0f;
  std::atomic<long> gen{0}; std::atomic<int> done{0};
  size_t callBytes = 0; const uint8_t* base = nullptr; volatile float sink = 0; std::atomic<bool> quit{false};
  auto part = [&](int t) { size_t per = (callBytes / T) & ~size_t(255); return std::pair<size_t,size_t>(t * per, t == T - 1 ? callBytes : (t + 1) * per); };
  std::vector<std::thread> ws;
  for (int t = 1; t < T; t++) ws.emplace_back([&, t] { long seen = 0; while (true) { long g; while ((g = gen.load()) == seen) { if (quit) return; _mm_pause(); } seen = g; auto [b, e] = part(t); sink = sink + sum(base + b, e - b); done++; } });
  for (size_t mb : {1, 4, 17, 64, 256, 1024}) {
    callBytes = mb << 20;
    size_t calls = bytes / callBytes;
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
      double t0 = now();
      for (size_t c = 0; c < calls; c++) {
        base = buf + c * callBytes; done = 0; gen++;
        auto [b, e] = part(0); sink = sink + sum(base + b, e - b);
        while (done.load() < T - 1) _mm_pause();
      }
      best = std::min(best, now() - t0);
    }
    printf("T=%d call %5zu MB: %.1f GB/s\n", T, mb, bytes / best / 1e9);
  }
  quit = true; for (auto& w : ws) w.join();
}
