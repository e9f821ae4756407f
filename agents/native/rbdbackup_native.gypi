# The addon's one target, shared by binding.gyp (the normal build, build/) and sanitize/binding.gyp
# (the AddressSanitizer + UBSan build, sanitize/build/). Paths are relative to this file.
{
  "targets": [
    {
      "target_name": "rbdbackup_native",
      "sources": [
        "src/addon.cc",
        "src/boundary.cc",
        "src/common.cc",
        "src/handles.cc",
        "src/test-faults.cc",
        "src/cluster.cc",
        "src/io-ctx.cc",
        "src/image.cc",
        "src/image-aio.cc",
        "src/diff-iterator.cc",
        "src/crc32c.cc",
        "src/codec.cc",
        "src/crash-report.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_ADDON_API_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lrados", "-lrbd", "-lzstd", "-llz4"]
    }
  ]
}
