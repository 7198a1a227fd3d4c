// Blocking "until cancelled" for test endpoints and bodies, with a limit: a context whose cancel
// never arrives fails the test instead of hanging it. Header-only; needs shmctx_core.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>

#include "shmctx/context.hpp"

namespace shmctx::test {

/// Waits until `ctx`'s scope is cancelled, then throws shmctx::Cancelled (Context::checkpoint),
/// as any blocking call inside the scope would. Throws std::runtime_error naming the context if
/// no cancel arrives within `limit`.
inline void until_cancelled(Context& ctx, std::chrono::nanoseconds limit) {
    std::mutex m;
    std::condition_variable_any cv;
    {
        std::unique_lock lock(m);
        // Nothing notifies cv: only the stop token (the cancel) or the limit ends the wait.
        (void)cv.wait_for(lock, ctx.stop_token(), limit, [] { return false; });
    }
    ctx.checkpoint();  // throws Cancelled once the scope is cancelled
    throw std::runtime_error(
        "context " + ctx.cid().to_string() + " was not cancelled within " +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(limit).count()) + " s");
}

}  // namespace shmctx::test
