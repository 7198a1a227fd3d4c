// Deadlines for every call that may wait. Thread-safety: value type.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>

namespace shmctx {

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::nanoseconds;

/// An absolute point on the steady clock, or "never". Built from a relative duration (measured
/// from construction), from a time point, or default-constructed as infinite.
class Deadline {
public:
    /// Never expires.
    constexpr Deadline() noexcept = default;
    // Implicit on purpose: `connect(name, 5s)` and `cancel(616ms)` read best.
    template <class Rep, class Period>
    Deadline(std::chrono::duration<Rep, Period> d)  // NOLINT(google-explicit-constructor)
        : at_(Clock::now() + std::chrono::duration_cast<Clock::duration>(d)), infinite_(false) {}
    Deadline(Clock::time_point at) noexcept  // NOLINT(google-explicit-constructor)
        : at_(at), infinite_(false) {}

    static constexpr Deadline never() noexcept { return {}; }

    bool is_infinite() const noexcept { return infinite_; }
    bool expired() const noexcept { return !infinite_ && Clock::now() >= at_; }
    Clock::time_point at() const noexcept { return infinite_ ? Clock::time_point::max() : at_; }
    /// Time left, clamped at zero; Duration::max() when infinite.
    Duration remaining() const noexcept {
        if (infinite_) return Duration::max();
        const auto left = at_ - Clock::now();
        return left.count() > 0 ? std::chrono::duration_cast<Duration>(left) : Duration::zero();
    }

private:
    Clock::time_point at_{};
    bool infinite_ = true;
};

}  // namespace shmctx
