// The per-actor endpoint thread pool (DESIGN.md §4.6, issue 4 "Actor").
//
// Child endpoints block (receive, send, wait_for_result), so each runs on its own thread: a
// task never shares a thread with another task while it runs. The pool
//   - reuses an idle thread if there is one (the most recently idled: LIFO, so the others stay
//     idle long enough to retire), else starts a new thread;
//   - refuses a task when max_threads tasks are running (the control loop then answers the Start
//     with a boxed TooManyContexts) or when a thread cannot be started;
//   - retires a thread that stayed idle for idle_timeout;
//   - on shutdown() waits for the running tasks (cancel them first) and joins every thread.
//
// try_submit() is called by the control loop, which must never wait: it takes the pool mutex
// (held only for bookkeeping, never across a task, a thread start or a join) and may start a
// thread, but never joins one. A retiring thread joins the previously retired one instead (a
// chain), so at most one finished thread is unjoined at any time, and shutdown() joins it last.
//
// Thread-safety: try_submit() and the observers are thread-safe. shutdown() and the destructor
// are for the owner, never from a task of this pool (that would wait for itself: it aborts).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>

#include "core/canceller_thread.hpp"  // ErrorHandler, report_to_stderr
#include "core/task.hpp"
#include "shmctx/deadline.hpp"

namespace shmctx::detail {

struct EndpointPoolOptions {
    /// Most tasks running at once (ActorOptions::max_endpoints); must be >= 1.
    std::size_t max_threads = 1024;
    /// An idle thread retires after this long without a task.
    Duration idle_timeout = std::chrono::seconds(5);
    /// After a task, a thread watches for the next one this long (yielding the CPU) before
    /// it sleeps on its condition variable: back-to-back tasks then skip a futex wake-up,
    /// which costs tens of microseconds on a VM. Zero: sleep at once.
    Duration spin_before_sleep = std::chrono::microseconds(50);
    /// Called repeatedly while a thread watches for its next task (never under the pool's
    /// lock); returns whether it found work. The actor runtime reads its control rings here,
    /// so a Start can reach an idle thread without a hop through the control loop. Empty: the
    /// thread yields instead. Must not throw.
    std::function<bool()> on_idle_poll;
    /// Called with true when a thread starts watching for its next task and false when it
    /// stops (never under the pool's lock). Must not throw.
    std::function<void(bool watching)> on_idle_watch;
    /// Thread name (at most 15 characters are kept).
    std::string name = "shmctx-endpoint";
    /// Receives exceptions escaping tasks and thread hooks (default: report_to_stderr).
    ErrorHandler on_error;
    /// Run on each new thread before its first task and before it exits (e.g. to take and
    /// return a wake slot, to set CPU affinity). Must not throw (reported to on_error if they do).
    std::function<void()> on_thread_start;
    std::function<void()> on_thread_exit;
};

/// Why try_submit() refused a task.
enum class SubmitRefusal : std::uint8_t {
    at_capacity,          ///< max_threads tasks are running: answer with TooManyContexts
    thread_start_failed,  ///< no idle thread, and the system refused a new one (EAGAIN)
    shut_down,            ///< shutdown() has begun
};
const char* to_string(SubmitRefusal r) noexcept;

/// A snapshot of the pool's counters (stale as soon as it is returned).
struct EndpointPoolStats {
    std::size_t running = 0;       ///< tasks running now
    std::size_t threads = 0;       ///< live threads: running + idle
    std::size_t idle = 0;          ///< threads waiting for a task
    std::size_t peak_running = 0;  ///< most tasks running at once so far
    std::size_t peak_threads = 0;  ///< most live threads at once so far
    std::uint64_t started = 0;     ///< threads ever started
    std::uint64_t retired = 0;     ///< threads that ended (idle timeout or shutdown)
    std::uint64_t completed = 0;   ///< tasks that finished (returned or threw)
    std::uint64_t refused = 0;     ///< try_submit() refusals
};

class EndpointPool {
public:
    explicit EndpointPool(EndpointPoolOptions options = {});
    EndpointPool(const EndpointPool&) = delete;
    EndpointPool& operator=(const EndpointPool&) = delete;
    /// shutdown().
    ~EndpointPool();

    /// Runs `task` on a thread of its own: an idle one, else a new one. On success the task is
    /// moved from; on refusal it is left untouched (the caller still owns what it captured),
    /// `*why` (if given) says why, and nothing was started. Never waits for a task or a thread.
    [[nodiscard]] bool try_submit(Task&& task, SubmitRefusal* why = nullptr);

    /// Refuses new tasks, waits for the running ones to return (cancel them first: this waits
    /// without a deadline), then retires and joins every thread. Idempotent.
    void shutdown();

    EndpointPoolStats stats() const;
    /// Tasks running now (snapshot).
    std::size_t running() const { return stats().running; }
    /// Live threads now (snapshot).
    std::size_t threads() const { return stats().threads; }
    const EndpointPoolOptions& options() const noexcept { return options_; }

    /// Whether the calling thread is a thread of any EndpointPool.
    static bool on_pool_thread() noexcept;

private:
    struct Worker {
        std::condition_variable cv;  // a task was handed over, the handle is set, or stopping
        Task task;                   // guarded by mutex_; set by try_submit
        bool has_task = false;       // guarded by mutex_
        /// [pool.assign] set with has_task (release); read without the lock by a worker that
        /// watches for its next task before sleeping.
        std::atomic<bool> assigned{false};
        bool handle_set = false;  // guarded by mutex_: `thread` holds this worker's thread
        Clock::time_point idle_since{};
        std::thread thread;  // guarded by mutex_; moved out by the worker when it retires
        std::list<Worker>::iterator self;
        // Intrusive idle list (guarded by mutex_): no allocation when a thread goes idle.
        bool idle = false;
        Worker* idle_newer = nullptr;
        Worker* idle_older = nullptr;
    };

    void run_worker(Worker* w) noexcept;
    void report(const char* where, std::exception_ptr error) noexcept;
    // Idle list operations; mutex_ held.
    void push_idle(Worker* w) noexcept;
    Worker* pop_newest_idle() noexcept;
    void remove_idle(Worker* w) noexcept;

    const EndpointPoolOptions options_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;  // a thread retired or the last running task finished
    std::list<Worker> workers_;        // every live worker (stable addresses)
    Worker* idle_newest_ = nullptr;    // idle workers, newest first (LIFO reuse)
    std::size_t idle_count_ = 0;
    std::thread zombie_;  // the last retired thread, not yet joined
    bool stopping_ = false;
    std::size_t running_ = 0;
    EndpointPoolStats counters_;  // peaks and totals; running/threads/idle filled in stats()
};

}  // namespace shmctx::detail
