// The exception inside an exception_ptr as a given type, for tests and their helper processes
// (gtest-free: the multiproc helpers include it too). Header-only.
#pragma once

#include <exception>

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

}  // namespace shmctx::test
