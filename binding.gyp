{
  "targets": [
    {
      "target_name": "loratune",
      "sources": [
        "native/addon.cc",
        "native/napi_util.cc",
        "native/memory.cc",
        "native/threadpool.cc",
        "native/gemm.cc",
        "native/attention.cc",
        "native/ops.cc"
      ],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-ffp-contract=fast"],
      "cflags!": ["-fno-exceptions"],
      "libraries": ["-lpthread"]
    }
  ]
}
