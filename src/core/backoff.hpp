// Spin-then-yield pacing for the runtime's watch-before-sleep loops (DESIGN.md §3: the control
// loop, idle endpoint threads and context waits watch for the next event before they sleep).
// Private to core.
#pragma once

#include <thread>

#include "shmctx/deadline.hpp"
#include "shmctx/shm/wake.hpp"

namespace shmctx::detail {

/// One step of a watch loop: a pause instruction for the first `kPauseFor`, then yielding the
/// CPU. A yield is a system call (about a microsecond on a VM): pausing first keeps the usual
/// sub-microsecond hand-offs of an exchange off it, yielding later lets the other threads of a
/// loaded machine (or of a process pinned to one CPU) run. Thread-safety: single thread.
class Backoff {
public:
    static constexpr Duration kPauseFor = std::chrono::microseconds(2);

    void pause() noexcept {
        if (!yielding_) {
            // The clock is read every 16th pause only: a vDSO clock read costs about as much
            // as the pause itself, and the loop around us reads it too.
            if ((++pauses_ & 15U) != 0 || Clock::now() - start_ < kPauseFor) {
                shm::cpu_relax();
                return;
            }
            yielding_ = true;
        }
        std::this_thread::yield();
    }

    /// For the loop's own deadline: true every `Every`-th call (and on the first), so a spin
    /// loop reads the clock rarely.
    template <unsigned Every = 16>
    bool time_to_check() noexcept {
        return (checks_++ % Every) == 0;
    }

private:
    Clock::time_point start_ = Clock::now();
    unsigned pauses_ = 0;
    unsigned checks_ = 0;
    bool yielding_ = false;
};

}  // namespace shmctx::detail
