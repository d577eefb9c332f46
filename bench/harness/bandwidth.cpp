// bandwidth: native read-bandwidth probe; N threads sum disjoint slices of one large buffer, best of R passes.
//
// usage: bandwidth [--mib 1024] [--threads 1] [--reps 5]  -> one JSON line {"threads":..,"gbps":..}

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

static double now_s() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Sum of 32-bit floats in [p, p + n); four independent accumulators keep several loads in flight.
static float sum_slice(const float * p, size_t n) {
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    __m256 t = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float b[8];
    _mm256_storeu_ps(b, t);
    float s = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7];
#else
    float s = 0;
    size_t i = 0;
#endif
    for (; i < n; i++) s += p[i];
    return s;
}

int main(int argc, char ** argv) {
    size_t mib = 1024;
    int threads = 1, reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--mib") mib = strtoull(argv[i + 1], nullptr, 10);
        else if (a == "--threads") threads = atoi(argv[i + 1]);
        else if (a == "--reps") reps = atoi(argv[i + 1]);
        else { fprintf(stderr, "bandwidth: unknown argument %s\n", a.c_str()); return 1; }
    }
    if (threads < 1 || reps < 1 || mib < 1) { fprintf(stderr, "bandwidth: threads, reps and mib must be >= 1\n"); return 1; }
    const size_t n = mib * (size_t) (1 << 20) / sizeof(float);
    float * buf = (float *) aligned_alloc(64, n * sizeof(float));
    if (!buf) { fprintf(stderr, "bandwidth: cannot allocate %zu MiB\n", mib); return 1; }

    // first touch by the thread that will read the slice (NUMA-local pages)
    const size_t per = (n / threads) & ~(size_t) 63;
    auto slice = [&](int t, size_t & b, size_t & e) { b = t * per; e = t == threads - 1 ? n : b + per; };
    {
        std::vector<std::thread> ws;
        for (int t = 0; t < threads; t++) ws.emplace_back([&, t] { size_t b, e; slice(t, b, e); for (size_t i = b; i < e; i++) buf[i] = (float) (i & 7); });
        for (auto & w : ws) w.join();
    }

    double best = 0;
    volatile float sink = 0;
    for (int r = 0; r < reps; r++) {
        std::atomic<int> ready{0};
        std::atomic<bool> go{false};
        std::vector<float> sums(threads);
        std::vector<std::thread> ws;
        for (int t = 0; t < threads; t++) {
            ws.emplace_back([&, t] {
                size_t b, e;
                slice(t, b, e);
                ready++;
                while (!go.load()) {}
                sums[t] = sum_slice(buf + b, e - b);
            });
        }
        while (ready.load() < threads) {}
        double t0 = now_s();
        go = true;
        for (auto & w : ws) w.join();
        double dt = now_s() - t0;
        for (float s : sums) sink = sink + s;
        best = std::max(best, n * sizeof(float) / dt / 1e9);
    }
    printf("{\"threads\":%d,\"mib\":%zu,\"reps\":%d,\"gbps\":%.3f}\n", threads, mib, reps, best);
    free(buf);
    return 0;
}
