#include "shmctx/shm/wake.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "shmctx/errors.hpp"

namespace shmctx::shm {

FutexResult futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       Duration timeout) noexcept {
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout != Duration::max()) {
        const auto ns = std::max<std::int64_t>(0, timeout.count());
        ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
        tsp = &ts;
    }
    // FUTEX_WAIT (no FUTEX_PRIVATE_FLAG): the word may be mapped by other processes. The relative
    // timeout is measured on CLOCK_MONOTONIC. The kernel reads the word atomically.
    const long rc = ::syscall(SYS_futex, const_cast<std::atomic<std::uint32_t>*>(&word), FUTEX_WAIT,
                              expected, tsp, nullptr, 0);
    if (rc == 0) return FutexResult::woken;
    switch (errno) {
        case EAGAIN:
            return FutexResult::value_changed;
        case ETIMEDOUT:
            return FutexResult::timed_out;
        // EINTR: a signal; the caller's loop re-checks and recomputes the timeout. EFAULT and
        // EINVAL cannot happen for an aligned word of a live mapping; were they to, the caller's
        // loop still ends at its deadline or stop request rather than sleeping forever.
        default:
            return FutexResult::interrupted;
    }
}

int futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
    const long rc = ::syscall(SYS_futex, const_cast<std::atomic<std::uint32_t>*>(&word), FUTEX_WAKE,
                              count, nullptr, nullptr, 0);
    return rc < 0 ? 0 : static_cast<int>(rc);
}

void storeload_fence() noexcept {
#if defined(SHMCTX_TSAN)
    static std::atomic<std::uint32_t> tsan_fence_word{0};
    // [wake.storeload] stand-in: TSan models RMWs but not fences (GCC -Wtsan).
    tsan_fence_word.fetch_add(0, std::memory_order::seq_cst);
#else
    std::atomic_thread_fence(std::memory_order::seq_cst);  // [wake.storeload]
#endif
}

void ring(WakeSlot& slot) noexcept {
    // [wake.bump] pairs with [wake.observe] in Waiter::wait.
    slot.counter.fetch_add(1, std::memory_order::release);
    futex_wake(slot.counter);
}

WakeTable::WakeTable(std::span<std::byte> region) noexcept {
    // Slots on their own cache lines: a misaligned table would share lines between threads.
    if (reinterpret_cast<std::uintptr_t>(region.data()) % kCacheLine != 0) return;
    slots_ = reinterpret_cast<WakeSlot*>(region.data());  // NOLINT: a layout view over a mapping
    capacity_ = static_cast<std::uint32_t>(
        std::min<std::size_t>(region.size() / sizeof(WakeSlot), UINT32_MAX));
}

WakeResult wake_cell(const WakeCell& cell, const WakeTable& table) noexcept {
    // relaxed: a hint only; see "busy_spin" in the file comment of wake.hpp.
    if (cell.mode.load(std::memory_order::relaxed) ==
        static_cast<std::uint32_t>(WaitMode::busy_spin)) {
        return WakeResult::none_waiting;
    }
    storeload_fence();  // [wake.storeload] pairs with the fence in Waiter::wait
    // relaxed: ordered after our change by [wake.storeload]. Read once, then validated.
    const std::uint32_t advertised = cell.waiter.load(std::memory_order::relaxed);
    if (advertised == 0) return WakeResult::none_waiting;
    WakeSlot* slot = table.slot(advertised - 1);
    if (slot == nullptr) return WakeResult::bad_slot;
    ring(*slot);
    return WakeResult::woken;
}

Waiter::Waiter(const WakeTable& table, std::uint32_t index) : index_(index) {
    slot_ = table.slot(index);
    if (slot_ == nullptr) {
        throw std::out_of_range("wake slot " + std::to_string(index) + " outside a table of " +
                                std::to_string(table.capacity()));
    }
}

WakeSlotAllocator::WakeSlotAllocator(std::uint32_t capacity)
    : allocated_(capacity, false), capacity_(capacity) {
    free_.reserve(capacity);
    for (std::uint32_t i = capacity; i > 0; --i) free_.push_back(i - 1);
}

std::optional<std::uint32_t> WakeSlotAllocator::allocate() {
    std::lock_guard lock(mutex_);
    if (free_.empty()) return std::nullopt;
    const std::uint32_t index = free_.back();
    free_.pop_back();
    allocated_[index] = true;
    return index;
}

void WakeSlotAllocator::release(std::uint32_t index) {
    std::lock_guard lock(mutex_);
    if (index >= capacity_ || !allocated_[index]) {
        std::fprintf(stderr, "shmctx: WakeSlotAllocator::release(%u): slot not allocated\n", index);
        std::abort();
    }
    allocated_[index] = false;
    free_.push_back(index);
}

std::uint32_t WakeSlotAllocator::in_use() const {
    std::lock_guard lock(mutex_);
    return capacity_ - static_cast<std::uint32_t>(free_.size());
}

}  // namespace shmctx::shm
