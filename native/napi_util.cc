#include "napi_util.h"

#include <cmath>
#include <new>

namespace lt {

namespace {

std::string status_message(napi_env env) {
  const napi_extended_error_info* info = nullptr;
  napi_get_last_error_info(env, &info);
  return info && info->error_message ? info->error_message : "unknown Node-API error";
}

napi_value trampoline(napi_env env, napi_callback_info info) {
  void* data = nullptr;
  size_t argc = 0;
  napi_get_cb_info(env, info, &argc, nullptr, nullptr, &data);
  auto* entry = static_cast<std::pair<const char*, Kernel>*>(data);
  try {
    Args args(env, info, entry->first);
    entry->second(args);
    if (args.result) return args.result;
  } catch (const Error& e) {
    napi_throw_error(env, "LORATUNE_NATIVE", (std::string(entry->first) + ": " + e.what()).c_str());
  } catch (const std::bad_alloc&) {
    napi_throw_error(env, "LORATUNE_NATIVE_OOM", (std::string(entry->first) + ": out of memory").c_str());
  } catch (const std::exception& e) {
    napi_throw_error(env, "LORATUNE_NATIVE", (std::string(entry->first) + ": " + e.what()).c_str());
  } catch (...) {
    napi_throw_error(env, "LORATUNE_NATIVE", (std::string(entry->first) + ": unknown failure").c_str());
  }
  return nullptr;
}

}  // namespace

float* View::f32(const char* name) const {
  check(dtype == DType::F32, std::string(name) + " must be a Float32Array");
  return static_cast<float*>(data);
}
uint16_t* View::bf16(const char* name) const {
  check(dtype == DType::BF16, std::string(name) + " must be a Uint16Array (bf16)");
  return static_cast<uint16_t*>(data);
}
int32_t* View::i32(const char* name) const {
  check(dtype == DType::I32, std::string(name) + " must be an Int32Array");
  return static_cast<int32_t*>(data);
}
const View& View::need(size_t n, const char* name) const {
  check(length >= n, std::string(name) + " has " + std::to_string(length) + " elements, needs " +
                         std::to_string(n));
  return *this;
}

Args::Args(napi_env env_, napi_callback_info info, const char* fn_name) : env(env_), fn(fn_name) {
  argc_ = sizeof(argv_) / sizeof(argv_[0]);
  if (napi_get_cb_info(env, info, &argc_, argv_, nullptr, nullptr) != napi_ok) fail(status_message(env));
  if (argc_ > sizeof(argv_) / sizeof(argv_[0])) argc_ = sizeof(argv_) / sizeof(argv_[0]);
}

void Args::fail(const std::string& what) const { throw Error(what); }

View Args::optional_array(size_t i, const char* name) const {
  View v;
  if (i >= argc_) return v;
  napi_valuetype t;
  napi_typeof(env, argv_[i], &t);
  if (t == napi_null || t == napi_undefined) return v;
  bool is_ta = false;
  napi_is_typedarray(env, argv_[i], &is_ta);
  if (!is_ta) fail(std::string("argument ") + name + " must be a typed array");
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  napi_get_typedarray_info(env, argv_[i], &type, &v.length, &v.data, &buffer, &offset);
  switch (type) {
    case napi_float32_array: v.dtype = DType::F32; break;
    case napi_uint16_array: v.dtype = DType::BF16; break;
    case napi_int32_array: v.dtype = DType::I32; break;
    case napi_uint8_array: v.dtype = DType::U8; break;
    default: v.dtype = DType::Other;
  }
  v.present = true;
  return v;
}

View Args::array(size_t i, const char* name) const {
  View v = optional_array(i, name);
  if (!v.present) fail(std::string("argument ") + name + " is missing");
  return v;
}

double Args::number(size_t i, const char* name) const {
  if (i >= argc_) fail(std::string("argument ") + name + " is missing");
  double x;
  if (napi_get_value_double(env, argv_[i], &x) != napi_ok)
    fail(std::string("argument ") + name + " must be a number");
  return x;
}

int64_t Args::integer(size_t i, const char* name) const {
  double x = number(i, name);
  if (!(x >= 0 && x <= 9007199254740991.0) || std::floor(x) != x)
    fail(std::string("argument ") + name + " must be a non-negative integer");
  return static_cast<int64_t>(x);
}

bool Args::boolean(size_t i, const char* name) const {
  if (i >= argc_) fail(std::string("argument ") + name + " is missing");
  bool b;
  if (napi_get_value_bool(env, argv_[i], &b) != napi_ok)
    fail(std::string("argument ") + name + " must be a boolean");
  return b;
}

void define(napi_env env, napi_value exports, const char* name, Kernel kernel) {
  // Lives as long as the module: one small allocation per exported function.
  auto* entry = new std::pair<const char*, Kernel>(name, kernel);
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, trampoline, entry, &fn);
  napi_set_named_property(env, exports, name, fn);
}

}  // namespace lt
