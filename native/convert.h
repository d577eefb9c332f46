// Registers the load-time weight conversions' N-API functions (native/convert.cc) on the addon's exports.
#pragma once
#include <napi.h>

#include <cstdint>

namespace floe {
void register_convert(Napi::Env env, Napi::Object exports);
// Hands the whole pages of [p, p + bytes) back to the kernel (MADV_PAGEOUT; advice only, failure changes nothing): a
// weight's source once its converted or repacked copy is made. A file mapping re-reads them if touched again, anonymous
// memory keeps its data, so the weight is not resident twice and the process does not hold the checkpoint's pages.
void page_out(const void* p, int64_t bytes);
}  // namespace floe
