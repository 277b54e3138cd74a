#include "napi_util.h"

namespace lt {
void register_gemm(napi_env, napi_value) {}
}  // namespace lt
