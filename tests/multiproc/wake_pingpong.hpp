// Test-only shared layout for cross-process wake-protocol tests (wake_xproc_test.cpp and the
// `shm_peer` helper): a tiny "actor segment" holding a wake table of two slots, and one side
// block per process with the count it publishes and the cell where it advertises its waits.
//
//   offset  size  field                 writer
//   0       64    slots[0]              counter: any waker; owner_tid: unused
//   64      64    slots[1]              as slots[0]
//   128     8     side[0].count         process 0 (pings it sent)
//   136     8     side[0].cell          process 0 (waiter, mode); read by process 1
//   256     8     side[1].count         process 1
//   264     8     side[1].cell          process 1; read by process 0
//   384           end
//
// Round k: process 0 publishes count = k and wakes side[1].cell, then waits on side[0].cell
// until side[1].count >= k; process 1 waits on side[1].cell until side[0].count >= k, then
// publishes and wakes side[0].cell. Thread-safety: one thread per side.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>

#include "shmctx/shm/layout.hpp"
#include "shmctx/shm/wake.hpp"

namespace shmctx::test {

struct PingPongBlock {
    shm::WakeSlot slots[2];
    struct alignas(shm::kFalseSharingRange) Side {
        std::atomic<std::uint64_t> count;
        shm::WakeCell cell;
    } side[2];
};
static_assert(std::is_standard_layout_v<PingPongBlock>);
static_assert(std::is_trivially_destructible_v<PingPongBlock>);
static_assert(offsetof(PingPongBlock, side) == 128);
static_assert(sizeof(PingPongBlock::Side) == 128);
static_assert(sizeof(PingPongBlock) == 384);

/// The block at the start of a mapping. `create`: placement-new it (the creator only).
inline PingPongBlock* pingpong_block(std::byte* mapping, bool create) {
    if (create) return new (mapping) PingPongBlock{};
    return std::launder(reinterpret_cast<PingPongBlock*>(mapping));  // NOLINT: mapped layout
}

inline shm::WakeTable pingpong_table(PingPongBlock* block) {
    return shm::WakeTable(
        {reinterpret_cast<std::byte*>(block->slots), sizeof(block->slots)});  // NOLINT: as above
}

struct PingPongResult {
    bool ok = true;
    std::uint64_t failed_round = 0;   ///< the round whose wait did not end `ready`
    shm::WaitStatus failed_status{};  ///< how it ended
    std::uint64_t woken = 0;          ///< wake_cell() calls that found the peer advertised
    std::chrono::nanoseconds elapsed{};
};

/// Plays `role` (0 or 1) for `rounds` round trips; every wait has `per_wait` as its deadline, so
/// a lost wake-up ends the run as a failure instead of hanging.
inline PingPongResult run_pingpong(PingPongBlock& block, const shm::WakeTable& table, int role,
                                   std::uint64_t rounds, shm::WaitPolicy policy,
                                   Duration per_wait) {
    PingPongResult result;
    shm::Waiter waiter(table, static_cast<std::uint32_t>(role));
    auto& mine = block.side[role];
    auto& peer = block.side[1 - role];
    const auto start = Clock::now();
    auto publish = [&](std::uint64_t k) {
        // [pingpong.publish] pairs with [pingpong.observe] in the peer's wait predicate.
        mine.count.store(k, std::memory_order::release);
        if (shm::wake_cell(peer.cell, table) == shm::WakeResult::woken) ++result.woken;
    };
    for (std::uint64_t k = 1; k <= rounds; ++k) {
        if (role == 0) publish(k);
        const auto status = waiter.wait(
            mine.cell,
            [&] {
                // [pingpong.observe] pairs with [pingpong.publish].
                return peer.count.load(std::memory_order::acquire) >= k;
            },
            Deadline(per_wait), {}, policy);
        if (status != shm::WaitStatus::ready) {
            result.ok = false;
            result.failed_round = k;
            result.failed_status = status;
            break;
        }
        if (role == 1) publish(k);
    }
    result.elapsed = Clock::now() - start;
    return result;
}

inline const char* to_string(shm::WaitStatus s) {
    switch (s) {
        case shm::WaitStatus::ready:
            return "ready";
        case shm::WaitStatus::timed_out:
            return "timed_out";
        case shm::WaitStatus::cancelled:
            return "cancelled";
    }
    return "?";
}

}  // namespace shmctx::test
