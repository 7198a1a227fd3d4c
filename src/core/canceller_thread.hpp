// The per-actor canceller thread (DESIGN.md §3 "Control loop", §4.6).
//
// CancelScope::cancel() runs stop-callbacks synchronously: the forwarding callbacks of nested
// scopes and the wakers of every wait blocked inside them. The control loop must never run
// them (it never runs foreign code and never blocks), so it posts each cancel to this thread.
//
// post() is lock-free and never waits: it pushes a node on an intrusive MPSC list (one CAS) and
// wakes the thread only if it is parked. The thread takes the whole list with one exchange,
// restores FIFO order and runs the tasks; when the list is empty it parks on a futex.
//
// Parking (a Dekker handshake, every access seq_cst):
//   canceller                                   poster
//   seen = wake_seq                             push node             (CAS on head_)
//   parked = true                               if parked:
//   if head_ != null: parked = false, run         wake_seq += 1, futex_wake(wake_seq)
//   else futex_wait(wake_seq, seen)
// Either the canceller's re-check sees the node, or the poster sees parked == true and bumps
// wake_seq after the canceller read `seen`, so futex_wait returns at once or is woken.
//
// Thread-safety: post() and the observers are thread-safe; stop() and the destructor must be
// called by the owner, once no thread will post any more (posts racing with stop() are run,
// never dropped: see stop()).
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <thread>

#include "core/task.hpp"

namespace shmctx::detail {

/// Receives an exception that escaped a task run on a library thread (never swallowed). Runs
/// on that thread; must not throw.
using ErrorHandler = std::function<void(std::exception_ptr)>;

/// Writes "shmctx: <where>: <what()>" to stderr; the default ErrorHandler of library threads
/// until the logging sink exists.
void report_to_stderr(const char* where, std::exception_ptr error) noexcept;
/// The text report_to_stderr prints after "<where>: " (what(), or the exception's kind).
std::string describe_exception(const std::exception_ptr& error) noexcept;

class CancellerThread {
public:
    /// Starts the thread, named `name` (at most 15 characters are kept). `on_error` receives
    /// exceptions escaping posted tasks (default: report_to_stderr).
    explicit CancellerThread(ErrorHandler on_error = {}, std::string name = "shmctx-cancel");
    CancellerThread(const CancellerThread&) = delete;
    CancellerThread& operator=(const CancellerThread&) = delete;
    /// stop().
    ~CancellerThread();

    /// Queues `work` to run on the canceller thread, in post order. Never waits for the thread:
    /// one allocation, one CAS, and a futex wake only if the thread is parked. Returns false
    /// (work not queued, not run) once stop() has begun. Throws std::bad_alloc only.
    bool post(Task work);

    /// Runs every task already posted, then stops and joins the thread. A post() that raced
    /// with it and still queued its task has that task run here, on the caller's thread, so
    /// nothing posted is ever dropped. Idempotent. Must not be called from a posted task.
    void stop();

    /// Whether the calling thread is the canceller thread.
    bool on_this_thread() const noexcept { return std::this_thread::get_id() == id_; }
    /// Tasks run so far (a racy observer, for tests and counters).
    std::uint64_t executed_approx() const noexcept {
        // Relaxed: a statistic; the tasks' effects are published by their own synchronisation.
        return executed_.load(std::memory_order::relaxed);
    }

private:
    struct Node {
        Task work;
        Node* next = nullptr;
    };

    void run_loop() noexcept;
    /// Takes every queued node and runs it in post order; false if there was none.
    bool run_pending() noexcept;
    void wake() noexcept;

    ErrorHandler on_error_;
    std::string name_;
    std::atomic<Node*> head_{nullptr};        // newest first; pushed by posters
    std::atomic<std::uint32_t> wake_seq_{0};  // futex word the thread parks on
    std::atomic<bool> parked_{false};
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint32_t> posting_{0};  // posts between their stopping_ check and push
    std::atomic<std::uint64_t> executed_{0};
    std::thread thread_;
    std::thread::id id_;
};

}  // namespace shmctx::detail
