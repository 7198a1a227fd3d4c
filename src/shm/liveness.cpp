#include "shmctx/shm/liveness.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"

namespace shmctx::shm {
namespace {

constexpr std::uint64_t kStopKey = 0;

int dup_cloexec(int fd, const char* what) {
    if (fd < 0) return -1;
    const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
        throw SystemError(std::string("fcntl(F_DUPFD_CLOEXEC) of the ") + what + ": " +
                          std::strerror(errno));
    }
    return copy;
}

std::uint64_t monotonic_ns() {
    // steady_clock is CLOCK_MONOTONIC on Linux: one clock for every process of the machine,
    // so an observer can compute the age of our last beat.
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
            .count());
}

}  // namespace

const char* to_string(LivenessEvent e) noexcept {
    switch (e) {
        case LivenessEvent::dead:
            return "dead";
        case LivenessEvent::unresponsive:
            return "unresponsive";
        case LivenessEvent::responsive:
            return "responsive";
        case LivenessEvent::stalled:
            return "stalled";
    }
    return "?";
}

LivenessWatcher::LivenessWatcher(Heartbeat* own, LivenessCallback callback, LivenessOptions options)
    : callback_(std::move(callback)), options_(options), own_(own) {
    if (options_.heartbeat_interval <= Duration::zero()) {
        options_.heartbeat_interval = std::chrono::milliseconds(100);
    }
    if (options_.stalled_after > Duration::zero()) {
        options_.stalled_after = std::max(options_.stalled_after, options_.unresponsive_after);
    }
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) throw SystemError(std::string("epoll_create1: ") + std::strerror(errno));
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) {
        const int err = errno;
        ::close(epoll_fd_);
        throw SystemError(std::string("eventfd: ") + std::strerror(err));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kStopKey;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev) != 0) {
        const int err = errno;
        ::close(stop_fd_);
        ::close(epoll_fd_);
        throw SystemError(std::string("epoll_ctl(eventfd): ") + std::strerror(err));
    }
    thread_ = std::thread([this] { run(); });
}

LivenessWatcher::~LivenessWatcher() {
    const std::uint64_t one = 1;
    while (::write(stop_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
    thread_.join();
    for (auto& [uuid, peer] : peers_) close_peer(peer);
    ::close(stop_fd_);
    ::close(epoll_fd_);
}

void LivenessWatcher::close_peer(Peer& p) noexcept {
    if (p.pidfd >= 0) {
        (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, p.pidfd, nullptr);
        ::close(p.pidfd);
        p.pidfd = -1;
    }
    if (p.lock_fd >= 0) {
        ::close(p.lock_fd);
        p.lock_fd = -1;
    }
}

void LivenessWatcher::watch(const Uuid& peer, int pidfd, const Heartbeat* heartbeat, int lock_fd) {
    Peer p;
    p.pidfd = dup_cloexec(pidfd, "pidfd");
    try {
        p.lock_fd = dup_cloexec(lock_fd, "actor file");
    } catch (...) {
        close_peer(p);
        throw;
    }
    p.heartbeat = heartbeat;
    // relaxed: the counter is compared with later values of itself; it publishes nothing.
    p.last_beats = heartbeat != nullptr ? heartbeat->beats.load(std::memory_order::relaxed) : 0;
    p.last_progress = Clock::now();
    std::lock_guard lock(mutex_);
    p.key = next_key_++;
    if (p.pidfd >= 0) {
        epoll_event ev{};
        ev.events = EPOLLIN;  // level triggered: a peer that is already gone reports at once
        ev.data.u64 = p.key;
        if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, p.pidfd, &ev) != 0) {
            const int err = errno;
            close_peer(p);
            throw SystemError(std::string("epoll_ctl(pidfd): ") + std::strerror(err));
        }
    }
    if (auto it = peers_.find(peer); it != peers_.end()) {
        close_peer(it->second);
        it->second = p;
    } else {
        peers_.emplace(peer, p);
    }
}

void LivenessWatcher::unwatch(const Uuid& peer) {
    std::lock_guard lock(mutex_);
    if (auto it = peers_.find(peer); it != peers_.end()) {
        close_peer(it->second);
        peers_.erase(it);
    }
}

std::size_t LivenessWatcher::watched() const {
    std::lock_guard lock(mutex_);
    return peers_.size();
}

void LivenessWatcher::mark_dead(const Uuid& uuid, Peer& p, std::vector<Pending>& out) noexcept {
    if (p.dead) return;
    p.dead = true;
    if (p.pidfd >= 0) {
        // Level-triggered: stop the readable pidfd from waking us again.
        (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, p.pidfd, nullptr);
    }
    out.push_back({uuid, LivenessEvent::dead});
}

void LivenessWatcher::tick(Clock::time_point now, std::vector<Pending>& out) {
    if (own_ != nullptr) {
        // relaxed: only this thread writes our heartbeat; readers look for progress only.
        own_->beats.fetch_add(1, std::memory_order::relaxed);
        // relaxed: a diagnostic timestamp, read on its own.
        own_->last_beat_mono_ns.store(monotonic_ns(), std::memory_order::relaxed);
    }
    for (auto& [uuid, p] : peers_) {
        if (p.dead) continue;
        if (p.lock_fd >= 0) {
            bool held = true;
            try {
                held = lock_held(p.lock_fd);
            } catch (const Error&) {
                held = true;  // no evidence either way: never declare death on a failed probe
            }
            if (!held) {
                mark_dead(uuid, p, out);
                continue;
            }
        }
        if (p.heartbeat == nullptr) continue;
        // relaxed: progress detection only; read once, compared with our own copy.
        const std::uint64_t beats = p.heartbeat->beats.load(std::memory_order::relaxed);
        if (beats != p.last_beats) {
            p.last_beats = beats;
            p.last_progress = now;
            p.stalled = false;
            if (p.unresponsive) {
                p.unresponsive = false;
                out.push_back({uuid, LivenessEvent::responsive});
            }
            continue;
        }
        const Duration quiet = now - p.last_progress;
        if (!p.unresponsive && quiet >= options_.unresponsive_after) {
            p.unresponsive = true;
            out.push_back({uuid, LivenessEvent::unresponsive});
        }
        if (p.unresponsive && !p.stalled && options_.stalled_after > Duration::zero() &&
            quiet >= options_.stalled_after) {
            p.stalled = true;
            out.push_back({uuid, LivenessEvent::stalled});
        }
    }
}

void LivenessWatcher::run() noexcept {
    constexpr int kMaxEvents = 32;
    epoll_event events[kMaxEvents];
    std::vector<Pending> pending;
    Clock::time_point next_tick = Clock::now();
    for (;;) {
        const auto wait = next_tick - Clock::now();
        const auto wait_ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
        const int n = ::epoll_wait(epoll_fd_, events, kMaxEvents,
                                   static_cast<int>(std::max<decltype(wait_ms)>(0, wait_ms)));
        if (n < 0 && errno != EINTR) return;  // EBADF/EINVAL: cannot happen with our own fds
        bool stop = false;
        pending.clear();
        {
            std::lock_guard lock(mutex_);
            for (int i = 0; i < n; ++i) {
                const std::uint64_t key = events[i].data.u64;
                if (key == kStopKey) {
                    stop = true;
                    continue;
                }
                for (auto& [uuid, p] : peers_) {
                    // A key of an entry unwatched meanwhile matches nothing and is ignored.
                    if (p.key == key) {
                        mark_dead(uuid, p, pending);
                        break;
                    }
                }
            }
            const auto now = Clock::now();
            if (!stop && now >= next_tick) {
                tick(now, pending);
                next_tick += options_.heartbeat_interval;
                if (next_tick <= now) next_tick = now + options_.heartbeat_interval;
            }
        }
        for (const auto& e : pending) callback_(e.peer, e.event);
        if (stop) return;
    }
}

}  // namespace shmctx::shm
