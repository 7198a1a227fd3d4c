// Peer processes and CPU placement for the benchmark harness.
//
// The harness runs every measurement across two real processes: it posix_spawns itself
// (/proc/self/exe) with a role argument. The peer's stdin and stdout are pipes carrying short
// text lines ("ready", "go", "done ..."), never on the measured path; its stderr is ours.
//
// Thread-safety: Peer is single thread; free functions are thread-safe.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <atomic>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shmctx/deadline.hpp"

namespace shmctx::bench {

/// A spawned copy of this program in a peer role. The destructor SIGKILLs and reaps it if it
/// still runs (an aborted run never leaves a peer behind).
class Peer {
public:
    /// Spawns /proc/self/exe with `args`; if `pass_fd` >= 0 the peer inherits it as `as_fd`.
    static Peer spawn(const std::vector<std::string>& args, int pass_fd = -1, int as_fd = -1);

    Peer(Peer&& other) noexcept;
    Peer& operator=(Peer&&) = delete;
    Peer(const Peer&) = delete;
    ~Peer();

    pid_t pid() const noexcept { return pid_; }
    /// A pidfd of the peer (readable once it exited), or -1 if the kernel has none.
    int pidfd() const noexcept { return pidfd_; }
    /// The next line from the peer; throws std::runtime_error (with the peer's exit status) on
    /// EOF or when the deadline passes.
    std::string read_line(const Deadline& deadline);
    void write_line(std::string_view line);
    /// Waits for exit; throws unless the peer exited with status 0.
    void wait_success(const Deadline& deadline);
    /// Waits for exit until the deadline; true if it exited (status in describe()).
    bool wait_exit(const Deadline& deadline);
    /// "exited with 3", "killed by signal 9", "running".
    std::string describe();

private:
    Peer(pid_t pid, int pidfd, int in, int out) : pid_(pid), pidfd_(pidfd), in_(in), out_(out) {}
    bool reap(bool block);
    pid_t pid_ = -1;
    int pidfd_ = -1;
    int in_ = -1;
    int out_ = -1;
    std::string buffer_;
    std::optional<int> status_;
};

/// Requests stop on `source` as soon as the peer exits (for whatever reason), so that a run
/// waiting on a dead peer fails at once instead of at its deadline. A thread polls the peer's
/// pidfd (which must outlive the watch) and an eventfd that the destructor signals.
class PeerWatch {
public:
    PeerWatch(int pidfd, std::stop_source source);
    ~PeerWatch();
    PeerWatch(const PeerWatch&) = delete;
    PeerWatch& operator=(const PeerWatch&) = delete;

private:
    int done_fd_;
    std::thread thread_;
};

/// Where the two processes run.
struct Placement {
    int parent_cpu = -1;  ///< -1: not pinned
    int peer_cpu = -1;
    std::string text;  ///< "parent cpu0, peer cpu1" or why not pinned
};

/// Chooses two different allowed CPUs (or `requested` if given) and pins the calling process
/// to the first. The peer pins itself with pin_to().
Placement choose_placement(const std::vector<int>& requested);
/// Pins the calling process to `cpu` (no-op for -1); throws SystemError on failure.
void pin_to(int cpu);

/// The calling thread's CPU mask at construction, given back by restore() and at destruction;
/// pins the thread to `cpu` meanwhile (pin_to; -1 only saves). Threads started meanwhile
/// inherit the pinning. Thread-safety: the constructing thread only.
class AffinityScope {
public:
    explicit AffinityScope(int cpu = -1);
    AffinityScope(const AffinityScope&) = delete;
    AffinityScope& operator=(const AffinityScope&) = delete;
    ~AffinityScope() { restore(); }
    void restore() const noexcept;

private:
    cpu_set_t mask_{};
    bool saved_ = false;
};

/// CPU model from /proc/cpuinfo ("unknown" if absent).
std::string cpu_model();
/// True when /proc/cpuinfo's flags include "hypervisor" (the CPUs are a VM's vCPUs).
bool cpus_are_virtual();
/// `git rev-parse HEAD` in the source tree, or "unknown".
std::string git_commit(const std::string& source_dir);

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (call it first in main, so every
/// thread inherits the mask) and starts a detached thread that waits for one with sigwait,
/// prints "<program>: stopping after the current <unit>" and sets the returned flag. The tools
/// poll it between runs, so that an interrupted run still removes everything it created.
const std::atomic<bool>& stop_on_signals(const char* program, const char* unit);

}  // namespace shmctx::bench
