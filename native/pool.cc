// Persistent thread pool: one job at a time (callers serialize on a mutex), tasks claimed from an atomic counter.
#include "pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FLOE_PAUSE() _mm_pause()
#else
#define FLOE_PAUSE() std::this_thread::yield()
#endif

namespace floe {
namespace {

struct Pool {
  std::mutex run_mu;  // one job at a time (several JS threads may share the addon)
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> workers;
  std::atomic<uint64_t> gen{0};
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};  // tasks finished in the current job
  // Workers inside the current job, plus CLOSED once the caller has seen every task finish: a worker that wakes
  // late skips a closed job, so the caller never waits for a sleeping or descheduled worker to check in.
  static constexpr int CLOSED = 1 << 30;
  std::atomic<int> inside{CLOSED};
  std::atomic<bool> stop{false};
  int64_t n = 0;
  TaskFn fn = nullptr;
  void* ctx = nullptr;
  int threads = 1;

  void work() {
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      fn(ctx, t);
      done.fetch_add(1, std::memory_order_release);
    }
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      // Spin ~50-100 us for the next job, then sleep on the condition variable.
      uint64_t g = gen.load(std::memory_order_acquire);
      for (int i = 0; i < 20000 && g == seen; i++) {
        FLOE_PAUSE();
        g = gen.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop.load() || gen.load(std::memory_order_acquire) != seen; });
        g = gen.load(std::memory_order_acquire);
      }
      if (stop.load()) return;
      seen = g;
      if (!(inside.fetch_add(1, std::memory_order_acq_rel) & CLOSED)) work();
      inside.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void resize(int t) {
    if (t < 1) t = 1;
    std::lock_guard<std::mutex> run(run_mu);
    if (t == threads && int(workers.size()) == t - 1) return;
    shutdown();
    stop = false;
    threads = t;
    for (int i = 0; i < t - 1; i++) workers.emplace_back([this] { worker_loop(); });
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv.notify_all();
    for (auto& w : workers) w.join();
    workers.clear();
  }

  void run(int64_t count, TaskFn f, void* c) {
    std::lock_guard<std::mutex> run(run_mu);
    if (workers.empty()) {
      for (int64_t t = 0; t < count; t++) f(c, t);
      return;
    }
    n = count;
    fn = f;
    ctx = c;
    next.store(0, std::memory_order_relaxed);
    done.store(0, std::memory_order_relaxed);
    inside.fetch_and(~CLOSED, std::memory_order_acq_rel);  // publishes n, fn, ctx to workers that enter
    {
      std::lock_guard<std::mutex> lk(mu);
      gen.fetch_add(1, std::memory_order_acq_rel);
    }
    cv.notify_all();
    work();
    while (done.load(std::memory_order_acquire) < count) FLOE_PAUSE();
    inside.fetch_or(CLOSED, std::memory_order_acq_rel);
    while ((inside.load(std::memory_order_acquire) & ~CLOSED) != 0) FLOE_PAUSE();  // workers still reading this job leave
  }

  ~Pool() { shutdown(); }
};

Pool& pool() {
  static Pool* p = [] {
    auto* q = new Pool();  // leaked on purpose: worker threads must not be joined during static destruction
    unsigned hc = std::thread::hardware_concurrency();
    q->resize(hc ? int(hc) : 1);
    return q;
  }();
  return *p;
}

}  // namespace

void pool_run(int64_t n, TaskFn fn, void* ctx) { pool().run(n, fn, ctx); }
void pool_set_threads(int n) { pool().resize(n); }
int pool_threads() { return pool().threads; }

}  // namespace floe
