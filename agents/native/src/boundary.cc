#include "boundary.h"

#include <cerrno>
#include <new>
#include <system_error>

#include "common.h"

namespace rbdb {

Napi::Error InternalError(Napi::Env env, const std::string& op, const std::string& detail) {
  Napi::Error err = Napi::Error::New(env, op + ": " + detail);
  err.Set("code", Napi::String::New(env, "ERR_RBDBACKUP_NATIVE"));
  err.Set("op", Napi::String::New(env, op));
  return err;
}

Napi::Error NativeError(Napi::Env env, std::exception_ptr e, const std::string& op) {
  try {
    std::rethrow_exception(e);
  } catch (const Napi::Error& err) {
    return err;
  } catch (const std::bad_alloc&) {
    return CephError(env, -ENOMEM, op);
  } catch (const std::system_error& err) {
    Napi::Error out = InternalError(env, op, std::string(err.what()) + " (std::system_error)");
    const std::error_category& cat = err.code().category();
    if (cat == std::generic_category() || cat == std::system_category()) {
      out.Set("errno", Napi::Number::New(env, err.code().value()));
    }
    return out;
  } catch (const std::exception& err) {
    return InternalError(env, op, err.what());
  } catch (...) {
    return InternalError(env, op, "unknown C++ exception");
  }
}

void ThrowPending(Napi::Env env, std::exception_ptr e, const char* op) noexcept {
  try {
    NativeError(env, e, op).ThrowAsJavaScriptException();
  } catch (...) {
    // Building or throwing the error failed too (out of memory, or an exception already pending).
    napi_throw_error(env, "ERR_RBDBACKUP_NATIVE", "native call failed; no memory to describe the error");
  }
}

void RejectWith(Napi::Env env, Napi::Promise::Deferred& d, std::exception_ptr e, const std::string& op) noexcept {
  try {
    d.Reject(NativeError(env, e, op).Value());
    return;
  } catch (...) {
  }
  try {
    d.Reject(Napi::Error::New(env, "native call failed; no memory to describe the error").Value());
  } catch (...) {
    // Nothing left to try: the promise stays pending.
  }
}

}  // namespace rbdb
