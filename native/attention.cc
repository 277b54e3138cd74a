#include "napi_util.h"

namespace lt {
void register_attention(napi_env, napi_value) {}
}  // namespace lt
