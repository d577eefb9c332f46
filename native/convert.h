// Registers the load-time weight conversions' N-API functions (native/convert.cc) on the addon's exports.
#pragma once
#include <napi.h>

#include <cstdint>

namespace floe {
void register_convert(Napi::Env env, Napi::Object exports);
// Hands the whole pages of [p, p + bytes) back to the kernel (MADV_PAGEOUT; advice only, failure changes nothing): a
// weight's source, a file mapping, once its converted or repacked copy is made. The kernel re-reads them if touched, so
// the weight is not resident twice and the process does not hold the checkpoint's pages. (Anonymous memory keeps its
// data too, but would go to swap for nothing: callers pass `release` only for mappings.)
void page_out(const void* p, int64_t bytes);
// Whether argument i is given and true: the `release` flag of a conversion or repack (page_out its source, a file mapping).
bool released(const Napi::CallbackInfo& info, size_t i);
}  // namespace floe
