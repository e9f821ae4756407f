{
  "targets": [
    {
      "target_name": "rbdbackup_native",
      "sources": [
        "src/addon.cc",
        "src/common.cc",
        "src/cluster.cc",
        "src/io-ctx.cc",
        "src/image.cc",
        "src/diff-iterator.cc",
        "src/crc32c.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lrados", "-lrbd"]
    }
  ]
}
