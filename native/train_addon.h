// Registers the training kernels' N-API functions on the addon's exports (called from addon.cc's Init).
#pragma once
#include <napi.h>

namespace floe {
void register_train_kernels(Napi::Env env, Napi::Object exports);
}  // namespace floe
