# The addon built with AddressSanitizer and UndefinedBehaviorSanitizer, into sanitize/build/ so that it
# never replaces the normal build. Used by test/asan.sh (npm run test:asan); load it with
# RBDBACKUP_NATIVE_PATH and libasan preloaded (the script does both).
{
  "includes": ["../rbdbackup_native.gypi"],
  "target_defaults": {
    "cflags_cc": [
      "-fsanitize=address,undefined",
      "-fno-sanitize-recover=undefined",
      "-fno-omit-frame-pointer",
      "-g",
      "-O1"
    ],
    "ldflags": ["-fsanitize=address,undefined"]
  }
}
