// Sampling driver (baseline ISA): top-k by a heap behind an ISA threshold scan; top-p by the sorted head of 64 tokens
// when it holds the mass (peaked rows), else by a radix select on mass over the logits' order keys; the ISA kernels
// (native/sample.inc) do max, exp, keys, compaction and the emission of the cut set.
//
//   key(z): f32 bits mapped to an unsigned order (negatives flipped, -0 as +0, NaN lowest), so key order = logit order.
//   select: histogram the mass Σw per bucket of key bits [31:21], walk buckets from the top until the mass reaches
//   `need`; keep the crossing bucket's members, repeat on bits [20:10] then [9:0]; the last bucket is one key value,
//   whose tied ids are taken lowest first until the mass is reached (sampler.ts's tie rule).
#include "sample.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "dispatch.h"

namespace floe {
namespace {

constexpr int64_t SAMPLE_HEAD = 64;  // top-p tries the sorted head of this many tokens before the radix select

inline float key_float(uint32_t k) { return bits_f32((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

struct Cut {
  bool all;     // the mass is never reached: keep everything
  float thr;    // keep z > thr ...
  int64_t ties; // ... and the first `ties` ids with z == thr
};

// The heaviest head of z (by key, ties by id) whose mass Σw reaches need.
Cut select_mass(const Kernels& kn, const float* z, const double* w, int64_t V, double need) {
  uint32_t* key = static_cast<uint32_t*>(scratch(1, size_t(V) * 4));   // (V) order keys
  int32_t* list = static_cast<int32_t*>(scratch(2, size_t(V) * 4));    // members of the crossing bucket
  kn.sample_keys(z, V, key);
  double mass[4][2048];  // 4 interleaved histograms: consecutive tokens in one bucket do not chain their adds
  struct Level { int shift; uint32_t mask; };
  const Level levels[3] = {{21, 0x7ff}, {10, 0x7ff}, {0, 0x3ff}};
  uint32_t prefix = 0;
  int64_t m = V;  // members of the current bucket: list[0, m), or all of [0, V) at level 0
  for (int l = 0; l < 3; l++) {
    const Level lv = levels[l];
    const int nb = int(lv.mask) + 1;
    for (int h = 0; h < 4; h++) std::fill(mass[h], mass[h] + nb, 0.0);
    const int shift = lv.shift;
    const uint32_t mask = lv.mask;
    if (l == 0) {
      int64_t i = 0;
      for (; i + 4 <= V; i += 4) {
        mass[0][key[i] >> 21] += w[i];
        mass[1][key[i + 1] >> 21] += w[i + 1];
        mass[2][key[i + 2] >> 21] += w[i + 2];
        mass[3][key[i + 3] >> 21] += w[i + 3];
      }
      for (; i < V; i++) mass[0][key[i] >> 21] += w[i];
    } else {
      int64_t j = 0;
      for (; j + 4 <= m; j += 4)
        for (int h = 0; h < 4; h++) {
          const int32_t i = list[j + h];
          mass[h][(key[i] >> shift) & mask] += w[i];
        }
      for (; j < m; j++) mass[0][(key[list[j]] >> shift) & mask] += w[list[j]];
    }
    double acc = 0;
    int64_t b = lv.mask;
    for (; b >= 0; b--) {
      const double mb = (mass[0][b] + mass[1][b]) + (mass[2][b] + mass[3][b]);
      if (acc + mb >= need) break;
      acc += mb;
    }
    if (b < 0) return {true, 0, 0};
    need -= acc;
    prefix |= uint32_t(b) << shift;
    // the crossing bucket's members, in increasing id order
    int64_t k = 0;
    if (l == 0) {
      k = kn.sample_compact(key, V, 21, uint32_t(b), list);
    } else {
      for (int64_t j = 0; j < m; j++) {
        const int32_t i = list[j];
        list[k] = i;
        k += ((key[i] >> shift) & mask) == uint32_t(b);
      }
    }
    m = k;
  }
  // one key value left: its ids lowest first until the mass is reached
  int64_t ties = 0;
  double rest = need;
  while (ties < m && rest > 0) rest -= w[list[ties++]];
  return {false, key_float(prefix), ties};
}

// ids, values (k): the k largest of z (V), sorted descending, ties by lower id, NaN last (dispatch.cc topk's order), by
// a heap of the best k whose worst value is the threshold the ISA scan skips to: on a row of random order only
// ~k·ln(V/k) tokens ever reach the heap.
void topk_scan(const Kernels& kn, const float* z, int64_t V, int64_t k, int32_t* ids, float* values) {
  auto before = [z](int32_t a, int32_t b) {  // a ranks before b
    const float va = z[a], vb = z[b];
    const bool na = va != va, nb = vb != vb;
    if (na != nb) return nb;
    if (!na && va != vb) return va > vb;
    return a < b;
  };
  int32_t* heap = ids;  // worst on top
  for (int64_t i = 0; i < k; i++) {
    heap[i] = int32_t(i);
    std::push_heap(heap, heap + i + 1, before);
  }
  int64_t i = k;
  while (i < V) {
    const float worst = z[heap[0]];
    if (worst != worst) {  // a NaN in the heap: every number beats it; plain comparisons for the rest
      for (; i < V; i++)
        if (before(int32_t(i), heap[0])) {
          std::pop_heap(heap, heap + k, before);
          heap[k - 1] = int32_t(i);
          std::push_heap(heap, heap + k, before);
        }
      break;
    }
    // a later id equal to the worst ranks after it: only strictly larger values enter
    i = kn.sample_scan_gt(z, i, V, worst);
    if (i >= V) break;
    std::pop_heap(heap, heap + k, before);
    heap[k - 1] = int32_t(i);
    std::push_heap(heap, heap + k, before);
    i++;
  }
  std::sort(heap, heap + k, before);
  for (int64_t j = 0; j < k; j++) values[j] = z[heap[j]];
}

// ids (n) sorted by logit descending, ties by lower id; weights follow from w.
void sort_candidates(const float* z, int32_t* ids, double* weights, const double* w, int64_t n) {
  std::sort(ids, ids + n, [z](int32_t a, int32_t b) {
    const float va = z[a], vb = z[b];
    return va > vb || (va == vb && a < b);
  });
  for (int64_t j = 0; j < n; j++) weights[j] = w[ids[j]];
}

}  // namespace

int64_t sample_argmax_row(const float* x, int64_t V) {
  float mx;
  return kernels().sample_argmax(x, V, &mx);
}

SampleResult sample_candidates(const float* z, int64_t V, double T, int64_t top_k, double top_p, double min_p,
                               int32_t* ids, double* weights) {
  const Kernels& kn = kernels();
  if (top_k > 0 && top_k < V) {
    // Sampler.truncate on the sorted top k: top-p over the mass of the k, then min-p relative to the best
    thread_local std::vector<float> values;
    values.resize(size_t(top_k));
    topk_scan(kn, z, V, top_k, ids, values.data());
    const double mx = values[0];
    double total = 0;
    for (int64_t j = 0; j < top_k; j++) {
      const double e = std::exp((double(values[size_t(j)]) - mx) / T);
      weights[j] = e == e ? e : 0.0;
      total += weights[j];
    }
    int64_t n = top_k;
    if (top_p < 1) {
      double cum = 0;
      for (int64_t j = 0; j < n; j++) {
        cum += weights[j] / total;
        if (cum >= top_p) { n = j + 1; break; }
      }
    }
    if (min_p > 0) {
      const double floor = min_p * weights[0];
      int64_t m = 1;
      while (m < n && weights[m] >= floor) m++;
      n = m;
    }
    double sum = 0;
    for (int64_t j = 0; j < n; j++) sum += weights[j];
    return {n, sum, "topk"};
  }

  float mx;
  const int64_t best = kn.sample_argmax(z, V, &mx);
  double* w = static_cast<double*>(scratch(0, size_t(V) * sizeof(double)));
  // 1/T capped: a subnormal T must still give the maxima weight 1 (0 · 1e300 = 0, where 0 · inf is NaN)
  const double total = std::isfinite(mx) ? kn.sample_exp(z, V, mx, std::min(1.0 / T, 1e300), w) : 0.0;
  if (!(total > 0) || !std::isfinite(total)) {  // no finite logit: the argmax alone
    ids[0] = int32_t(best), weights[0] = 1;
    return {V > 0 ? 1 : 0, 1.0, "degenerate"};
  }
  if (top_p < 1 && V > SAMPLE_HEAD) {
    // a peaked row: the top-p head usually lies within the first SAMPLE_HEAD tokens (the sorted path of Sampler.truncate)
    thread_local std::vector<float> values;
    values.resize(size_t(SAMPLE_HEAD));
    topk_scan(kn, z, V, SAMPLE_HEAD, ids, values.data());
    double head = 0;
    for (int64_t j = 0; j < SAMPLE_HEAD; j++) head += w[ids[j]];
    if (head >= top_p * total) {
      int64_t n = SAMPLE_HEAD;
      double cum = 0;
      for (int64_t j = 0; j < SAMPLE_HEAD; j++) {
        cum += w[ids[j]] / total;
        if (cum >= top_p) { n = j + 1; break; }
      }
      int64_t m = 1;
      while (m < n && w[ids[m]] >= min_p) m++;
      double sum = 0;
      for (int64_t j = 0; j < m; j++) weights[j] = w[ids[j]], sum += weights[j];
      return {m, sum, "topp"};
    }
  }
  Cut cut{true, 0, 0};
  if (top_p < 1) cut = select_mass(kn, z, w, V, top_p * total);
  if (cut.all) cut = {false, -INFINITY, V};  // every logit >= -inf; NaN stays out (weight 0)
  double sum = 0;
  const int64_t n = kn.sample_emit(z, w, V, cut.thr, cut.ties, min_p, ids, weights, &sum);
  if (n <= SAMPLE_SORTED_MAX) {
    sort_candidates(z, ids, weights, w, n);
  } else {  // the argmax first (it is kept: weight 1, the lowest id of the heaviest key)
    const int64_t at = std::lower_bound(ids, ids + n, int32_t(best)) - ids;
    std::swap(ids[0], ids[at]);
    std::swap(weights[0], weights[at]);
  }
  return {n, sum, top_p < 1 ? "topp" : "all"};
}

}  // namespace floe
