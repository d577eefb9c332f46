// Run-time ISA selection from CPUID (FLOE_ISA=avx2|scalar lowers it), call counters, scratch memory, topk.
#include "dispatch.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>

#if defined(__x86_64__) && defined(__linux__)
#include <cerrno>
#include <cstring>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace floe {
namespace {

Isa detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni") &&
                __builtin_cpu_supports("avx512vbmi");
  if (avx512) return ISA_AVX512;
  if (avx2) return ISA_AVX2;  // F16C ships with every AVX2 CPU
#endif
  return ISA_SCALAR;
}

Isa parse(const std::string& s, bool* ok) {
  *ok = true;
  if (s == "scalar") return ISA_SCALAR;
  if (s == "avx2") return ISA_AVX2;
  if (s == "avx512") return ISA_AVX512;
  *ok = false;
  return ISA_SCALAR;
}

const Isa g_supported = detect();
std::atomic<int> g_current{[] {
  const char* env = std::getenv("FLOE_ISA");
  bool ok = false;
  Isa want = env ? parse(env, &ok) : g_supported;
  return int(ok && want < g_supported ? want : g_supported);
}()};

// AMX: CPUID leaf 7 EDX bits 22 (amx_bf16) and 24 (amx_tile) (bit 25, amx_int8, is checked on its own); XCR0 bits 17-18 (XTILECFG, XTILEDATA) set by the OS;
// then Linux's per-process permission for the tile data (arch_prctl ARCH_REQ_XCOMP_PERM = 0x1023, feature 18), which
// the kernel may refuse (e.g. when an existing signal stack is too small for the larger state).
std::string g_amx_reason;
bool g_amx_int8 = false;
bool detect_amx() {
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  if (!((d >> 24) & 1) || !((d >> 22) & 1)) {
    g_amx_reason = "this CPU has no amx_tile / amx_bf16 (CPUID)";
    return false;
  }
  const bool int8 = (d >> 25) & 1;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  if (!((c >> 27) & 1)) {
    g_amx_reason = "the OS has not enabled XSAVE (CPUID OSXSAVE)";
    return false;
  }
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) {
    g_amx_reason = "the OS does not enable the tile state (XCR0 bits 17-18)";
    return false;
  }
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
    g_amx_reason = std::string("Linux refused the tile state (arch_prctl ARCH_REQ_XCOMP_PERM): ") + std::strerror(errno);
    return false;
  }
  g_amx_int8 = int8;
  return true;
#else
  g_amx_reason = "AMX needs Linux on x86-64";
  return false;
#endif
}
const bool g_amx_supported = detect_amx();
std::atomic<int> g_amx_mode{[] {
  const char* env = std::getenv("FLOE_AMX");
  if (env && std::string(env) == "emulate") return int(AMX_EMULATE);
  return g_amx_supported && !(env && env[0] == '0') ? int(AMX_TILES) : int(AMX_OFF);
}()};

std::mutex g_count_mu;
// Keyed by the literals' addresses: counting allocates only on a key's first use.
using CountKey = std::tuple<const char*, const char*, const char*>;
std::map<CountKey, double>& count_map() {
  static auto* m = new std::map<CountKey, double>();
  return *m;
}

}  // namespace

Isa isa_supported() { return g_supported; }
Isa isa_current() { return Isa(g_current.load()); }

bool isa_set(const std::string& name) {
  bool ok;
  Isa want = parse(name, &ok);
  if (!ok || want > g_supported) return false;
  g_current.store(int(want));
  return true;
}

bool amx_supported() { return g_amx_supported; }
AmxMode amx_mode() { return AmxMode(g_amx_mode.load(std::memory_order_relaxed)); }
bool amx_active() { return amx_mode() != AMX_OFF && isa_current() == ISA_AVX512; }
bool amx_int8_supported() { return g_amx_supported && g_amx_int8; }
bool amx_int8_active() { return amx_active() && (amx_mode() == AMX_EMULATE || g_amx_int8); }
const char* amx_reason() { return g_amx_reason.c_str(); }
static std::atomic<int> g_amx_attn{[] {
  const char* env = std::getenv("FLOE_AMX_ATTN");
  return env && env[0] == '1' ? 1 : env && env[0] == '0' ? 0 : -1;
}()};
int amx_attn_setting() { return g_amx_attn.load(std::memory_order_relaxed); }
void amx_attn_set(int setting) { g_amx_attn.store(setting < 0 ? -1 : setting ? 1 : 0); }
bool amx_attn_active() {
  const int s = amx_attn_setting();
  return amx_active() && (s == 1 || (s == -1 && amx_mode() == AMX_EMULATE));
}
bool amx_set(AmxMode mode) {
  if (mode == AMX_TILES && !g_amx_supported) return false;
  g_amx_mode.store(int(mode));
  return true;
}

const char* isa_name(Isa i) {
  switch (i) {
    case ISA_SCALAR: return "scalar";
    case ISA_AVX2: return "avx2";
    case ISA_AVX512: return "avx512";
  }
  return "?";
}

const Kernels& kernels() {
  switch (isa_current()) {
    case ISA_AVX512: return kernels_avx512;
    case ISA_AVX2: return kernels_avx2;
    default: return kernels_scalar;
  }
}

void count(const char* kernel, const char* variant, const char* isa) {
  std::lock_guard<std::mutex> lk(g_count_mu);
  count_map()[CountKey(kernel, variant ? variant : "", isa)] += 1;
}

std::vector<std::pair<std::string, double>> counters_snapshot() {
  std::map<std::string, double> named;
  {
    std::lock_guard<std::mutex> lk(g_count_mu);
    for (auto& [key, n] : count_map()) {
      std::string name = std::get<0>(key);
      if (*std::get<1>(key)) name += std::string(".") + std::get<1>(key);
      name += std::string(".") + std::get<2>(key);
      named[name] += n;
    }
  }
  return {named.begin(), named.end()};
}

void* scratch(int slot, size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf bufs[4];
  Buf& b = bufs[slot];
  if (b.n < bytes) {
    std::free(b.p);
    size_t n = (bytes + 63) / 64 * 64 + 64;  // one spare line: SIMD tails may over-read
    b.p = std::aligned_alloc(64, n);
    if (!b.p) throw std::bad_alloc();
    b.n = n - 64;
  }
  return b.p;
}

void topk(const float* x, int64_t n, int64_t k, int32_t* ids, float* values) {
  // "a before b" when a is larger, NaN last, ties by lower index.
  auto before = [x](int32_t a, int32_t b) {
    float va = x[a], vb = x[b];
    bool na = va != va, nb = vb != vb;
    if (na != nb) return nb;
    if (!na && va != vb) return va > vb;
    return a < b;
  };
  // Heap of the best k so far, worst on top.
  std::vector<int32_t> heap;
  heap.reserve(size_t(k));
  for (int32_t i = 0; i < n && k > 0; i++) {
    if (int64_t(heap.size()) < k) {
      heap.push_back(i);
      std::push_heap(heap.begin(), heap.end(), before);
    } else if (before(i, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), before);
      heap.back() = i;
      std::push_heap(heap.begin(), heap.end(), before);
    }
  }
  std::sort(heap.begin(), heap.end(), before);
  for (int64_t j = 0; j < k; j++) {
    ids[j] = heap[size_t(j)];
    values[j] = x[heap[size_t(j)]];
  }
}

}  // namespace floe
