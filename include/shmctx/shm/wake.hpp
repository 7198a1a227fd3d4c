// The wake protocol (DESIGN.md §2 "Wake protocol"): how a thread blocked inside the library is
// woken from another process.
//
// Every thread that blocks owns a 32-bit wake counter (a WakeSlot) in its actor's segment and
// advertises the slot in the WakeCell of whatever it waits on (a ring's consumer block, a scope).
//
//   waiter                                         waker
//   seen = slot.counter.load(acquire) [wake.observe]
//   cell.waiter = slot + 1                          publish the change (release)
//   [wake.storeload] seq_cst fence                 [wake.storeload] seq_cst fence
//   re-check the condition; if ready: return        w = cell.waiter
//   futex_wait(slot.counter, seen)                  if w: slot[w-1].counter += 1 [wake.bump]
//                                                         futex_wake(slot[w-1].counter)
//
// The two fences make a Dekker pair: either the waiter's re-check sees the change, or the waker
// sees the advertisement and bumps the counter, which makes futex_wait return at once (value no
// longer `seen`) or wakes it. The futex is shared (no FUTEX_PRIVATE_FLAG), so it works across
// processes; std::atomic::wait is process-private in libstdc++ 12 and is never used.
// A waker may skip the fence and the wake when the cell's mode says the waiter busy-spins (it
// never blocks). Without its fence, such a waker's mode load may be satisfied before its own
// change is visible, and read busy_spin although the waiter has switched to block and missed
// the change. So after a Waiter switches any cell away from busy_spin, every futex wait it starts
// within kModeSwitchWait of the switch ends by then, and the re-check after it sees the change
// (a store buffer drains in microseconds; a context switch drains it too).
//
// Thread-safety: WakeTable and free functions are thread-safe; a Waiter belongs to one thread;
// WakeSlotAllocator is thread-safe.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <thread>
#include <vector>

#include "shmctx/deadline.hpp"
#include "shmctx/shm/layout.hpp"

namespace shmctx::shm {

/// One thread's wake counter, in the actor segment's wake table. Writer table: `counter` is
/// incremented by any waker (any process); `owner_tid` is written by the owning actor only.
struct WakeSlot {
    std::atomic<std::uint32_t> counter;    ///< futex word; bumped by wakers
    std::atomic<std::uint32_t> owner_tid;  ///< diagnostic: the thread using the slot, 0 = free
    std::byte reserved[kCacheLine - 8];
};
static_assert(sizeof(WakeSlot) == kCacheLine);
static_assert(std::is_standard_layout_v<WakeSlot> && std::is_trivially_destructible_v<WakeSlot>);

/// How a waiter waits; published in the cell so that wakers know whether to wake.
enum class WaitMode : std::uint32_t {
    block = 0,       ///< spin briefly, then futex-wait (the default: idle threads use no CPU)
    spin_yield = 1,  ///< spin, yielding the CPU between rounds, then futex-wait
    busy_spin = 2,   ///< never blocks: wakers skip the fence and the wake
};

/// Where a waiter advertises itself; embedded in shared structures (ring consumer block, scope).
/// Writer table: `waiter` and `mode` by the waiting side only; read by wakers.
struct WakeCell {
    std::atomic<std::uint32_t> waiter;  ///< 0: nobody blocked; else wake-slot index + 1
    std::atomic<std::uint32_t> mode;    ///< a WaitMode
};
static_assert(sizeof(WakeCell) == 8);
static_assert(std::is_standard_layout_v<WakeCell> && std::is_trivially_destructible_v<WakeCell>);

enum class FutexResult { woken, value_changed, timed_out, interrupted };

/// FUTEX_WAIT (shared) while `word == expected`, for at most `timeout` (relative,
/// CLOCK_MONOTONIC); Duration::max() waits forever.
FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       Duration timeout) noexcept;
/// FUTEX_WAKE (shared); returns how many waiters were woken.
int futex_wake(const std::atomic<std::uint32_t>& word, int count = INT_MAX) noexcept;

/// [wake.storeload]: the protocol's one standalone fence. Under ThreadSanitizer (which does not
/// model fences) a seq_cst RMW on a dummy atomic stands in for it.
void storeload_fence() noexcept;

/// A pause instruction for spin loops.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

/// Bumps `slot`'s counter and wakes whoever futex-waits on it. [wake.bump] (release) pairs with
/// [wake.observe] (acquire) in Waiter::wait.
void ring(WakeSlot& slot) noexcept;

/// A bounds-checked view of the wake-slot table inside a mapped actor segment.
class WakeTable {
public:
    WakeTable() = default;
    /// capacity = region.size() / sizeof(WakeSlot); a region that is not kCacheLine-aligned
    /// gives an empty table (every slot() is nullptr) rather than misaligned atomics.
    explicit WakeTable(std::span<std::byte> region) noexcept;
    std::uint32_t capacity() const noexcept { return capacity_; }
    /// The slot at `index`, or nullptr if out of range (indices read from shared memory).
    WakeSlot* slot(std::uint32_t index) const noexcept {
        return index < capacity_ ? &slots_[index] : nullptr;
    }

private:
    WakeSlot* slots_ = nullptr;
    std::uint32_t capacity_ = 0;
};

enum class WakeResult {
    none_waiting,  ///< nobody advertised (or the waiter busy-spins)
    woken,         ///< the advertised slot was bumped and woken
    bad_slot,      ///< the cell names a slot outside the table: a ProtocolError for the caller
};

/// Wakes the waiter advertised in `cell`, whose slots live in `table` (the waiter's actor
/// segment as mapped here). Call after publishing the change with release. Does the
/// [wake.storeload] fence itself, or skips fence and wake when the cell's mode is busy_spin.
WakeResult wake_cell(const WakeCell& cell, const WakeTable& table) noexcept;

enum class WaitStatus { ready, timed_out, cancelled };

struct WaitPolicy {
    WaitMode mode = WaitMode::block;
    /// Checks of the condition before blocking (block and spin_yield modes).
    std::uint32_t spin_checks = 2000;
};

/// Window after a Waiter switched a cell away from busy_spin: futex waits that start in it end
/// by its end, so that a waker which read the stale mode cannot leave the waiter asleep (see the
/// file comment). The window is per Waiter, covering every cell it waits on; a cell handed to
/// another Waiter must not have left busy_spin less than kModeSwitchWait before.
inline constexpr Duration kModeSwitchWait = std::chrono::milliseconds(1);

/// A thread's own wake slot, used to wait on conditions that others signal through a WakeCell.
class Waiter {
public:
    Waiter(const WakeTable& table, std::uint32_t index);
    std::uint32_t index() const noexcept { return index_; }
    WakeSlot& slot() const noexcept { return *slot_; }

    /// Waits until `ready()` returns true, the deadline passes or `stop` is requested. `ready`
    /// is called many times and must be cheap; it is always called once more after the
    /// advertisement so that no wake-up is lost.
    template <class Ready>
    WaitStatus wait(WakeCell& cell, Ready&& ready, const Deadline& deadline = {},
                    const std::stop_token& stop = {}, WaitPolicy policy = {});

    /// Wakes this waiter from any thread (used by stop callbacks).
    void interrupt() const noexcept { ring(*slot_); }

private:
    /// Withdraws the advertisement however wait() leaves the blocking loop (also if `ready`
    /// throws), so that no waker bumps a slot on behalf of a wait that is over.
    struct Advertisement {
        WakeCell& cell;
        // relaxed: a waker that still sees the old advertisement only causes a spurious bump.
        ~Advertisement() { cell.waiter.store(0, std::memory_order::relaxed); }
    };

    WakeSlot* slot_;
    std::uint32_t index_;
    /// End of the window after a switch away from busy_spin in which futex waits are bounded;
    /// the epoch means no switch is pending.
    Clock::time_point mode_switch_until_{};
};

/// Hands out the slots of one actor's wake table to its threads. Process-private state.
class WakeSlotAllocator {
public:
    explicit WakeSlotAllocator(std::uint32_t capacity);
    /// A free slot index, or nullopt when all are in use.
    std::optional<std::uint32_t> allocate();
    /// Returns `index`. Releasing an index that is not allocated (twice, or out of range) would
    /// let two threads share one futex word: it aborts with a message (contract violation).
    void release(std::uint32_t index);
    std::uint32_t in_use() const;

private:
    mutable std::mutex mutex_;
    std::vector<std::uint32_t> free_;  // LIFO: a recently used slot is likely still cached
    std::vector<bool> allocated_;
    std::uint32_t capacity_;
};

// ---- implementation of the template ----

template <class Ready>
WaitStatus Waiter::wait(WakeCell& cell, Ready&& ready, const Deadline& deadline,
                        const std::stop_token& stop, WaitPolicy policy) {
    // relaxed: only the waiting side writes `mode`; wakers read it as a hint (see above).
    const auto previous_mode = static_cast<WaitMode>(cell.mode.load(std::memory_order::relaxed));
    if (previous_mode != policy.mode) {
        // relaxed: as above; the window below covers wakers that still read the old mode.
        cell.mode.store(static_cast<std::uint32_t>(policy.mode), std::memory_order::relaxed);
        if (previous_mode == WaitMode::busy_spin) {
            mode_switch_until_ = Clock::now() + kModeSwitchWait;
        }
    }
    std::uint32_t checks = 0;
    for (;;) {  // spin phase; busy_spin never leaves it
        if (ready()) return WaitStatus::ready;
        if ((++checks & 63U) == 0) {
            if (stop.stop_requested()) return WaitStatus::cancelled;
            if (deadline.expired()) return WaitStatus::timed_out;
            if (policy.mode == WaitMode::spin_yield) std::this_thread::yield();
        }
        if (policy.mode != WaitMode::busy_spin && checks >= policy.spin_checks) break;
        cpu_relax();
    }
    // Runs at once if stop was already requested; else on the requesting thread, where its bump
    // makes our futex_wait return (the counter no longer equals `seen`) or wakes it.
    std::stop_callback on_stop(stop, [this]() noexcept { interrupt(); });
    const Advertisement advertised{cell};
    for (;;) {
        const bool switch_pending = mode_switch_until_ != Clock::time_point{};
        const Clock::time_point checked_at = switch_pending ? Clock::now() : Clock::time_point{};
        // [wake.observe] pairs with [wake.bump] in ring(): a bump after this load changes the
        // value, so futex_wait below returns at once.
        const std::uint32_t seen = slot_->counter.load(std::memory_order::acquire);
        // relaxed: ordered before the re-check by [wake.storeload].
        cell.waiter.store(index_ + 1, std::memory_order::relaxed);
        storeload_fence();  // [wake.storeload] pairs with the fence in wake_cell()
        if (ready()) return WaitStatus::ready;
        if (stop.stop_requested()) return WaitStatus::cancelled;
        if (deadline.expired()) return WaitStatus::timed_out;
        Duration timeout = deadline.remaining();
        if (switch_pending) {
            if (checked_at >= mode_switch_until_) {
                // This re-check started after the window: it saw the change of any waker that
                // read the stale busy_spin mode.
                mode_switch_until_ = Clock::time_point{};
            } else {
                timeout = std::min<Duration>(timeout, mode_switch_until_ - checked_at);
            }
        }
        // Any outcome (woken, value changed, timed out, EINTR) leads back to the re-check; the
        // timeout is recomputed from the deadline, so signals never extend it.
        (void)futex_wait(slot_->counter, seen, timeout);
    }
}

}  // namespace shmctx::shm
