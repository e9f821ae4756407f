// The exception boundary: no C++ exception leaves the addon, so none can reach std::terminate.
//
// node-addon-api is built in C++-exception mode with its catch-all as a backstop (binding.gyp:
// NODE_ADDON_API_CPP_EXCEPTIONS_ALL), and every entry point V8, libuv or librbd calls catches what it
// runs and turns it into a JS error with a stable code (NativeError):
//   - Napi::Error: as thrown (TypeError for a bad argument, ERR_RBDBACKUP_CLOSED, a Ceph errno error);
//   - std::bad_alloc: errno ENOMEM and `op`, like librbd's own -ENOMEM (the facade names it ENOMEM);
//   - any other std::exception (std::system_error when a thread cannot start...): code
//     ERR_RBDBACKUP_NATIVE, message "<op>: <what()>", `op`, and `errno` when it carries one;
//   - anything else: ERR_RBDBACKUP_NATIVE, "<op>: unknown C++ exception".
// Entry points: methods and module functions (GuardedMethod / GuardedFunction), wrapper constructors
// (Guard), AsyncWorker Execute/OnOK (common.cc), thread-safe-function tasks (CallTask), librbd callbacks
// (image-aio.cc, diff-iterator.cc); destructors and finalizers only release handles, which never throws.
#pragma once

#include <napi.h>

#include <exception>
#include <string>

#include "test-faults.h"

namespace rbdb {

// The JS error for a caught C++ exception (see above). May itself throw Napi::Error.
Napi::Error NativeError(Napi::Env env, std::exception_ptr e, const std::string& op);
// A JS Error with `code` ERR_RBDBACKUP_NATIVE: "<op>: <detail>".
Napi::Error InternalError(Napi::Env env, const std::string& op, const std::string& detail);
// Makes `e` the pending JS exception. Never throws.
void ThrowPending(Napi::Env env, std::exception_ptr e, const char* op) noexcept;
// Rejects `d` with the JS error for `e`. Never throws.
void RejectWith(Napi::Env env, Napi::Promise::Deferred& d, std::exception_ptr e, const std::string& op) noexcept;

// Runs fn; a C++ exception other than Napi::Error is rethrown as NativeError (for constructors and other
// code that node-addon-api itself calls and that may only throw Napi::Error).
template <typename Fn>
auto Guard(Napi::Env env, const char* op, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw NativeError(env, std::current_exception(), op);
  }
}

namespace detail {

template <typename T, Napi::Value (T::*M)(const Napi::CallbackInfo&)>
napi_value CallMethod(napi_env env, napi_callback_info cbinfo) noexcept {
  const char* op = "native method";
  try {
    Napi::CallbackInfo info(env, cbinfo);
    if (info.Data() != nullptr) op = static_cast<const char*>(info.Data());
    FaultPoint(Fault::kMethod);
    T* self = T::Unwrap(info.This().As<Napi::Object>());
    if (self == nullptr) return nullptr;
    return (self->*M)(info);
  } catch (...) {
    ThrowPending(env, std::current_exception(), op);
    return nullptr;
  }
}

template <Napi::Value (*F)(const Napi::CallbackInfo&)>
napi_value CallFunction(napi_env env, napi_callback_info cbinfo) noexcept {
  const char* op = "native function";
  try {
    Napi::CallbackInfo info(env, cbinfo);
    if (info.Data() != nullptr) op = static_cast<const char*>(info.Data());
    FaultPoint(Fault::kMethod);
    return F(info);
  } catch (...) {
    ThrowPending(env, std::current_exception(), op);
    return nullptr;
  }
}

}  // namespace detail

// A class method whose every exception becomes a JS error; `name` (a string literal) is also the `op`.
template <typename T, Napi::Value (T::*M)(const Napi::CallbackInfo&)>
Napi::ClassPropertyDescriptor<T> GuardedMethod(const char* name) {
  napi_property_descriptor d = napi_property_descriptor();
  d.utf8name = name;
  d.method = detail::CallMethod<T, M>;
  d.attributes = napi_default;  // as node-addon-api's InstanceMethod
  d.data = const_cast<char*>(name);
  return Napi::ClassPropertyDescriptor<T>(d);
}

// A module function whose every exception becomes a JS error; `name` (a string literal) is also the `op`.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Function GuardedFunction(Napi::Env env, const char* name) {
  napi_value fn = nullptr;
  napi_status status =
      napi_create_function(env, name, NAPI_AUTO_LENGTH, detail::CallFunction<F>, const_cast<char*>(name), &fn);
  if (status != napi_ok) throw Napi::Error::New(env);
  return Napi::Function(env, fn);
}

}  // namespace rbdb
