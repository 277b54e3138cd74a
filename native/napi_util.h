// Small helpers over Node-API (Node's own C API): argument checking and turning C++ exceptions
// into JavaScript errors, so that nothing inside the addon can abort the process.
#pragma once
#include <node_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lt {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws lt::Error with `message` unless `cond` holds.
inline void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

enum class DType { F32, BF16, I32, U8, Other };

// A typed-array argument: its data pointer, element count and element type
// (Float32Array = f32, Uint16Array = bf16, Int32Array = i32, Uint8Array = u8).
struct View {
  void* data = nullptr;
  size_t length = 0;
  DType dtype = DType::Other;
  bool present = false;  // false for an optional argument given as null/undefined

  float* f32(const char* name) const;
  uint16_t* bf16(const char* name) const;
  int32_t* i32(const char* name) const;
  bool is_bf16() const { return dtype == DType::BF16; }
  // Requires at least `n` elements (names the argument in the error).
  const View& need(size_t n, const char* name) const;
};

class Args {
 public:
  Args(napi_env env, napi_callback_info info, const char* fn_name);
  napi_env env;
  const char* fn;
  size_t count() const { return argc_; }
  View array(size_t i, const char* name) const;           // required typed array
  View optional_array(size_t i, const char* name) const;  // typed array, or null/undefined
  double number(size_t i, const char* name) const;
  int64_t integer(size_t i, const char* name) const;       // a non-negative safe integer
  bool boolean(size_t i, const char* name) const;
  napi_value value(size_t i) const { return argv_[i]; }
  napi_value result = nullptr;  // set by a kernel that returns a value
  [[noreturn]] void fail(const std::string& what) const;

 private:
  size_t argc_ = 0;
  napi_value argv_[24];
};

using Kernel = void (*)(Args&);

// Exports `kernel` as `exports[name]`; exceptions thrown by it become JavaScript errors.
void define(napi_env env, napi_value exports, const char* name, Kernel kernel);

}  // namespace lt
