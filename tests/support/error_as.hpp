// The exception inside an exception_ptr as a given type, for tests and their helper processes
// (gtest-free: the multiproc helpers include it too). Header-only.
#pragma once

#include <exception>
#include <string>

#include "shmctx/errors.hpp"

namespace shmctx::test {

/// The exception in `e` as E, or nullptr. The object lives as long as any exception_ptr to it
/// (rethrow_exception does not copy it), so the pointer stays valid while `e` does.
template <class E>
const E* error_as(const std::exception_ptr& e) {
    if (!e) return nullptr;
    try {
        std::rethrow_exception(e);
    } catch (const E& typed) {
        return &typed;
    } catch (...) {
        return nullptr;
    }
}

/// The text of the exception in `e`, for failure messages: its what(), "shmctx::Cancelled",
/// "no error" for a null pointer.
inline std::string describe_error(const std::exception_ptr& e) {
    if (!e) return "no error";
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (const Cancelled&) {
        return "shmctx::Cancelled";
    } catch (...) {
        return "a non-std exception";
    }
}

}  // namespace shmctx::test
