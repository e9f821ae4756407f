# The normal build (npm run build:native -> build/Release/rbdbackup_native.node). The target itself is
# in rbdbackup_native.gypi, shared with the sanitizer build (sanitize/binding.gyp).
{
  "includes": ["rbdbackup_native.gypi"]
}
