// N-API argument checks shared by the addon's entry points: typed-array views, integers, lengths, precise errors.
#pragma once

#include <cmath>
#include <cstdint>
#include <napi.h>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "common.h"

namespace floe::napi_args {

template <class T>
struct View {
  T* p;
  int64_t n;
};

[[noreturn]] inline void fail(Napi::Env env, const std::string& op, const std::string& msg) {
  throw Napi::Error::New(env, "floe native " + op + ": " + msg);
}

[[noreturn]] inline void type_fail(Napi::Env env, const std::string& op, const std::string& msg) {
  throw Napi::TypeError::New(env, "floe native " + op + ": " + msg);
}

inline std::string str(int64_t v) { return std::to_string(v); }

inline void need_args(const Napi::CallbackInfo& info, const char* op, size_t n) {
  if (info.Length() < n) type_fail(info.Env(), op, "expected " + str(int64_t(n)) + " arguments, got " + str(int64_t(info.Length())));
}

template <class T, napi_typedarray_type TT>
View<T> typed(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, const char* tname) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TT) type_fail(info.Env(), op, std::string(name) + " must be a " + tname);
  auto a = v.As<Napi::TypedArrayOf<T>>();
  return {a.Data(), int64_t(a.ElementLength())};
}

inline View<float> f32(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return typed<float, napi_float32_array>(info, i, op, name, "Float32Array");
}
inline View<int32_t> i32(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return typed<int32_t, napi_int32_array>(info, i, op, name, "Int32Array");
}
inline View<uint8_t> u8(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  return typed<uint8_t, napi_uint8_array>(info, i, op, name, "Uint8Array");
}

inline int64_t integer(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name, int64_t lo = 0) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) type_fail(info.Env(), op, std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == std::floor(d)) || d < double(lo) || d > 9.0e15)
    fail(info.Env(), op, std::string(name) + " must be an integer >= " + str(lo) + ", got " + v.ToString().Utf8Value());
  return int64_t(d);
}

inline double number(const Napi::CallbackInfo& info, size_t i, const char* op, const char* name) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) type_fail(info.Env(), op, std::string(name) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

// The product of sizes for a length check; one past int64 fails the call (no array is that long), where a wrapped
// product could match an empty array and send a kernel out of bounds.
inline int64_t prod(Napi::Env env, const char* op, std::initializer_list<int64_t> dims) {
  int64_t p = 1;
  for (int64_t d : dims)
    if (__builtin_mul_overflow(p, d, &p)) fail(env, op, "sizes overflow: a product of the dimensions passes 2^63");
  return p;
}

// `what` names the argument: a string, or a callable that builds it, so that a call that passes builds no string (each
// native call checks several lengths; building their names every time cost a few allocations per call).
template <class What>
inline void need_len(Napi::Env env, const char* op, What&& what, int64_t got, int64_t want) {
  if (got == want) return;
  if constexpr (std::is_invocable_v<What>) fail(env, op, std::string(what()) + " has " + str(got) + " elements, expected " + str(want));
  else fail(env, op, std::string(what) + " has " + str(got) + " elements, expected " + str(want));
}

inline const char* weight_name(int dtype) {
  switch (dtype) {
    case DT_F32: return "f32";
    case DT_F16: return "f16";
    case DT_BF16: return "bf16";
    case DT_FP8: return "fp8_e4m3";
    case DT_Q8_0: return "q8_0";
    case DT_Q8_0R: return "q8_0r16";
    case DT_BF16R: return "bf16r16";
    case DT_F16R: return "f16r16";
    case DT_FP8R: return "fp8r16";
    case DT_F32R: return "f32r16";
  }
  return nullptr;
}

// Weight from (data, dtype, N, C, scale | null, br, bc) starting at argument i.
inline Weight weight(const Napi::CallbackInfo& info, size_t i, const char* op) {
  Napi::Env env = info.Env();
  Weight w{};
  auto data = typed<uint8_t, napi_uint8_array>(info, i, op, "weight data", "Uint8Array");
  w.data = data.p;
  w.dtype = int(integer(info, i + 1, op, "weight dtype"));
  if (!weight_name(w.dtype)) fail(env, op, "dtype code " + str(w.dtype) + " is not a weight dtype (f32, f16, bf16, fp8_e4m3, q8_0, q8_0r16, bf16r16, f16r16, fp8r16, f32r16)");
  w.N = integer(info, i + 2, op, "N");
  w.C = integer(info, i + 3, op, "C");
  if ((w.dtype == DT_Q8_0 || w.dtype == DT_Q8_0R) && w.C % Q8_BLOCK != 0) fail(env, op, "q8_0 rows must be a multiple of 32 columns, got C=" + str(w.C));
  if (w.dtype == DT_Q8_0R && w.N % Q8R_ROWS != 0) fail(env, op, "q8_0r16 weights need N a multiple of 16, got N=" + str(w.N));
  if ((w.dtype == DT_BF16R || w.dtype == DT_F16R || w.dtype == DT_FP8R || w.dtype == DT_F32R) && w.N % R16_ROWS != 0) fail(env, op, std::string(weight_name(w.dtype)) + " weights need N a multiple of 16, got N=" + str(w.N));
  if (w.dtype == DT_BF16R && w.C % 2 != 0) fail(env, op, "bf16r16 weights need an even C, got C=" + str(w.C));
  need_len(env, op, [&] { return std::string(weight_name(w.dtype)) + " weight (" + str(w.N) + ", " + str(w.C) + ") bytes"; }, data.n, w.N * w.row_bytes());
  if (w.dtype == DT_FP8R && w.C % 4 != 0) fail(env, op, "fp8r16 weights need C a multiple of 4, got C=" + str(w.C));
  if (w.dtype == DT_FP8 || w.dtype == DT_FP8R) {
    if (!info[i + 4].IsTypedArray()) type_fail(env, op, "fp8_e4m3 weight needs a Float32Array scale grid");
    auto sc = f32(info, i + 4, op, "fp8 scale");
    w.br = integer(info, i + 5, op, "scale block rows", 1);
    w.bc = integer(info, i + 6, op, "scale block cols", 1);
    need_len(env, op, [&] { return "fp8 scale grid for block [" + str(w.br) + "," + str(w.bc) + "]"; }, sc.n, ((w.N + w.br - 1) / w.br) * w.grid_cols());
    w.scale = sc.p;
    if (w.dtype == DT_FP8R && w.bc < w.C && w.bc % 4 != 0)
      fail(env, op, "fp8r16 weights need scale column blocks of a multiple of 4 columns, got " + str(w.bc));
  }
  return w;
}

}  // namespace floe::napi_args
