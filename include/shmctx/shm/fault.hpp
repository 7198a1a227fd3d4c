// Fault points: named places where a test can make this process die, stall or corrupt, so that
// "a peer dies at any instruction" is tested at every named point rather than by luck
// (STYLE.md §2.7). Compiled only with SHMCTX_FAULT_POINTS (test builds); otherwise every
// SHMCTX_FAULT_POINT is the constant `false` and costs nothing.
//
// Driven by the environment, read once per process:
//   SHMCTX_FAULT="ring.after_claim=kill,arena.after_carve=stall@3,ring.header=corrupt"
// action: kill (SIGKILL to self), stall (block forever in pause()), abort, corrupt (the point
// returns true and the call site corrupts what it names), jitter (a random pause of 0-50 us,
// yield or sleep, every hit unless "@N"; the point returns false: for TSan and stress schedules
// that widen the race windows around the point). "@N" fires on the N-th hit (1-based)
// and only then; without it the point fires on every hit. N counts the hits of the point, so
// "p=corrupt@1,p=kill@3" corrupts on the first hit of p and dies on the third; when several
// items fire on the same hit, the first one listed wins. A malformed item
// (no '=', unknown action, "@0", "@x") aborts the process with a message on stderr at the first
// fault point reached: a typo must not silently turn a fault test into a no-op.
//
// Thread-safety: thread-safe.
#pragma once

namespace shmctx::shm {

/// Returns true when the fault configured for `name` is `corrupt` and fires on this hit.
/// kill, stall and abort do not return.
bool fault_point(const char* name) noexcept;

/// True when SHMCTX_FAULT names `name` (whatever its action): a call site whose fault needs a
/// slower shape of the code (a record written in two halves) takes it only then.
bool fault_point_armed(const char* name) noexcept;

/// True when this build has fault points compiled in.
constexpr bool fault_points_enabled() noexcept {
#if defined(SHMCTX_FAULT_POINTS)
    return true;
#else
    return false;
#endif
}

}  // namespace shmctx::shm

#if defined(SHMCTX_FAULT_POINTS)
#define SHMCTX_FAULT_POINT(name) (::shmctx::shm::fault_point(name))
#else
#define SHMCTX_FAULT_POINT(name) (false)
#endif
