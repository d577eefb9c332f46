// Native sampling: a logits row (V) → the candidate set src/model/sampler.ts defines, and argmax (native/sample.cc).
#pragma once
#include <cstdint>

namespace floe {

struct SampleResult {
  int64_t n;         // candidates written to ids / weights
  double sum;        // Σ weights[0, n)
  const char* path;  // "topk" | "topp" | "all" | "degenerate" (counters)
};

// First index of the largest non-NaN value of x (V), 0 when x[0] is NaN: sampler.ts argmax's rule.
int64_t sample_argmax_row(const float* x, int64_t V);

// Candidates of z (V) at temperature T > 0 with top-k (<= 0 or >= V: off), top-p (1: off), min-p (0: off), as
// Sampler.distribution defines them: weights exp((z - max) / T) (f64); top-k keeps the k largest logits (ties by lower
// id) and renormalizes; top-p keeps the smallest head (by logit, ties by lower id) whose mass reaches top_p of the
// remaining total; min-p then drops weights below min_p (the best weighs 1). ids[0] is the argmax; the rest are sorted
// descending (ties by id) when top-k is on or n <= SAMPLE_SORTED_MAX, else in increasing id order (but for the token
// that swapped places with the argmax).
// ids, weights hold at least k (top-k on) or V entries.
SampleResult sample_candidates(const float* z, int64_t V, double T, int64_t top_k, double top_p, double min_p,
                               int32_t* ids, double* weights);

constexpr int64_t SAMPLE_SORTED_MAX = 1024;

}  // namespace floe
