// Persistent thread pool: one job at a time (callers serialize on a mutex), tasks claimed from an atomic counter.
#include "pool.h"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <system_error>
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

  // Where the OS refuses a thread (ulimit -u, a container's pids limit), the pool goes back to the size it had (or to
  // the calling thread alone) and the call throws std::system_error naming the thread: an uncaught one from the
  // std::thread constructor would end the process (terminate, exit 134).
  void resize(int t) {
    if (t < 1) t = 1;
    std::lock_guard<std::mutex> run(run_mu);
    if (t == threads && int(workers.size()) == t - 1) return;
    const int before = threads;
    shutdown();
    stop = false;
    if (start(t) == t) return;
    const std::string why = "the OS refused worker thread " + std::to_string(workers.size() + 1) + " of the " + std::to_string(t - 1) +
                            " a pool of " + std::to_string(t) + " threads needs";
    shutdown();
    stop = false;
    if (start(before) != before) {
      shutdown();
      stop = false;
      threads = 1;
    }
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again), why);
  }

  // t - 1 workers; the count reached (threads = it) if the OS refuses one
  int start(int t) {
    threads = 1;
    for (int i = 0; i < t - 1; i++) {
      try {
        workers.emplace_back([this] { worker_loop(); });
      } catch (const std::system_error&) {
        return threads = int(workers.size()) + 1, threads;
      }
    }
    return threads = t;
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
    try {
      q->resize(hc ? int(hc) : 1);
    } catch (const std::system_error&) {  // fewer threads than cores: resize kept the calling thread alone
    }
    return q;
  }();
  return *p;
}

}  // namespace

void pool_run(int64_t n, TaskFn fn, void* ctx) { pool().run(n, fn, ctx); }
void pool_set_threads(int n) { pool().resize(n); }
int pool_threads() { return pool().threads; }

}  // namespace floe
