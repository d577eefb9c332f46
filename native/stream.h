// Registers the weight-streaming reader's N-API functions (native/stream.cc) on the addon's exports.
#pragma once
#include <napi.h>

namespace floe {
void register_stream(Napi::Env env, Napi::Object exports);
}  // namespace floe
