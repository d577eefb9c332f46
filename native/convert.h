// Registers the load-time weight conversions' N-API functions (native/convert.cc) on the addon's exports.
#pragma once
#include <napi.h>

namespace floe {
void register_convert(Napi::Env env, Napi::Object exports);
}  // namespace floe
