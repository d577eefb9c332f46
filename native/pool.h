// Persistent thread pool: parallel_for over task indices, workers spin briefly then sleep.
#pragma once
#include <cstdint>
#include <type_traits>

namespace floe {

using TaskFn = void (*)(void* ctx, int64_t task);

// Runs fn(ctx, t) for t in [0, n) on the pool (caller thread included); returns when all are done.
void pool_run(int64_t n, TaskFn fn, void* ctx);
void pool_set_threads(int n);
int pool_threads();

template <class F>
void parallel_for(int64_t n, F&& f) {
  if (n <= 0) return;
  if (n == 1 || pool_threads() == 1) {
    for (int64_t t = 0; t < n; t++) f(t);
    return;
  }
  using Fn = std::remove_reference_t<F>;
  pool_run(n, [](void* c, int64_t t) { (*static_cast<Fn*>(c))(t); }, const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace floe
