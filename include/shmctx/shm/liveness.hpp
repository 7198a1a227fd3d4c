// The liveness watcher (DESIGN.md §2 "Death is decided on kernel evidence only").
//
// One thread per actor waits in epoll on its peers' pidfds (readable when the process has
// exited) and on an eventfd (stop). The epoll timeout is the heartbeat tick: every
// `heartbeat_interval` it bumps our own heartbeat and looks at each peer's:
//   - dead: the pidfd became readable, or the peer's actor-file lock was found free. Kernel
//     evidence only, reported once per watch.
//   - unresponsive: the peer's heartbeat counter has not moved for `unresponsive_after`
//     (measured on our clock, not the peer's). A stale heartbeat is never "dead": a stopped
//     (SIGSTOP), swapped or overloaded peer comes back, and `responsive` is reported then.
//   - stalled: (only with `stalled_after` set) the heartbeat has not moved for that long; the
//     owner may give up on the peer. Reported once per stall, after `unresponsive`.
// Death by exit is reported as soon as the process has exited (the pidfd turns readable when it
// becomes a zombie, before anyone reaps it; epoll wakes at once); the tick bounds only the
// heartbeat and lock checks.
//
// Thread-safety: watch()/unwatch() are thread-safe and may be called from the callback. The
// callback runs on the watcher thread, never under the watcher's lock, and must not block.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "shmctx/deadline.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/uuid.hpp"

namespace shmctx::shm {

enum class LivenessEvent {
    dead,          ///< kernel evidence: the process exited, or it no longer holds its name
    unresponsive,  ///< heartbeat stalled for unresponsive_after (the peer may come back)
    responsive,    ///< heartbeat moves again after `unresponsive`
    stalled,       ///< heartbeat stalled for stalled_after (alive, but we may give up on it)
};

const char* to_string(LivenessEvent e) noexcept;

using LivenessCallback = std::function<void(const Uuid& peer, LivenessEvent event)>;

struct LivenessOptions {
    Duration heartbeat_interval = std::chrono::milliseconds(100);
    Duration unresponsive_after = std::chrono::seconds(2);
    /// Zero: never reported. Else at least unresponsive_after (a smaller value is raised to it).
    Duration stalled_after = Duration::zero();
};

class LivenessWatcher {
public:
    /// Starts the thread. `own` (may be null) is our heartbeat, bumped every interval; it must
    /// outlive the watcher. `callback` must not block and must not throw.
    LivenessWatcher(Heartbeat* own, LivenessCallback callback, LivenessOptions options = {});
    LivenessWatcher(const LivenessWatcher&) = delete;
    LivenessWatcher& operator=(const LivenessWatcher&) = delete;
    /// Stops and joins the thread.
    ~LivenessWatcher();

    /// Watches `peer`: `pidfd` is duplicated (the caller keeps its own), `heartbeat` (may be
    /// null) must stay mapped until unwatch() returns, `lock_fd` (may be -1; duplicated) is
    /// the peer's actor file, probed every tick. Re-watching a uuid replaces the old entry.
    void watch(const Uuid& peer, int pidfd, const Heartbeat* heartbeat, int lock_fd = -1);
    /// Stops watching; after it returns the watcher no longer touches that peer's heartbeat.
    void unwatch(const Uuid& peer);
    /// Peers currently watched (dead ones included until unwatched).
    std::size_t watched() const;

private:
    struct Peer {
        std::uint64_t key = 0;  // epoll data: survives a stale event after unwatch
        int pidfd = -1;
        int lock_fd = -1;
        const Heartbeat* heartbeat = nullptr;
        std::uint64_t last_beats = 0;
        Clock::time_point last_progress{};
        bool dead = false;
        bool unresponsive = false;
        bool stalled = false;
    };
    struct Pending {
        Uuid peer;
        LivenessEvent event;
    };

    void run() noexcept;
    void tick(Clock::time_point now, std::vector<Pending>& out);
    void mark_dead(const Uuid& uuid, Peer& p, std::vector<Pending>& out) noexcept;
    void close_peer(Peer& p) noexcept;

    LivenessCallback callback_;
    LivenessOptions options_;
    Heartbeat* own_;
    int epoll_fd_ = -1;
    int stop_fd_ = -1;
    mutable std::mutex mutex_;
    std::map<Uuid, Peer> peers_;  // guarded by mutex_
    std::uint64_t next_key_ = 1;  // guarded by mutex_; 0 is the stop eventfd's key
    std::thread thread_;
};

}  // namespace shmctx::shm
