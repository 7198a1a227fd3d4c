// ActorNursery: child actor processes under one scope (DESIGN.md §6; docs/protocol.md §13).
//
// Threads of one nursery:
//   body thread     runs the body, start_actor/run_in_actor (spawn, wait for ready, connect),
//                   and at the end waits for run_in_actor results and for the teardown;
//   monitor thread  waits (epoll) on every child's pidfd, reaps each child the moment it exits
//                   and records an exit nobody asked for as a failure; runs the teardown (cancel
//                   every child, SIGTERM/SIGKILL stragglers, reap) and the nursery's deadline;
//   runner threads  one per run_in_actor child: Portal::run of its function, then the child's
//                   cancel once the result is in;
//   the actor's supervisor thread (ActorCore::supervisor) performs every posix_spawn, so the
//   children's PDEATHSIG follows a thread that lives as long as the actor.
#include "shmctx/nursery.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/actor_core.hpp"
#include "core/cancel_scope.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/spawner.hpp"

namespace shmctx {

namespace detail {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

/// poll/epoll timeout for a deadline, rounded up so we never wake just before it.
int timeout_ms(const Deadline& d) {
    if (d.is_infinite()) return -1;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(d.remaining()).count();
    return static_cast<int>(std::min<long long>(ms, INT_MAX));
}

/// A close-on-exec descriptor closed on scope exit.
class Fd {
public:
    explicit Fd(int fd = -1) noexcept : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const noexcept { return fd_; }
    void reset() noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_;
};

std::string what_of(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "(not a std::exception)";
    }
}

template <class T>
bool error_is(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const T&) {
        return true;
    } catch (...) {
        return false;
    }
}

}  // namespace

/// One child process of a nursery.
struct NurseryChild {
    NurseryChild(std::string n, std::string e, bool ria)
        : name(std::move(n)), exe(std::move(e)), run_in_actor(ria) {}

    const std::string name;
    const std::string exe;
    const bool run_in_actor;

    // Guarded by NurseryState::mu_.
    ChildProcess proc;
    pid_t pid = -1;
    std::optional<Portal> portal;  // set once the child is ready and linked
    bool stop_requested = false;   // we asked it to end (or gave up on it): its exit is expected
    bool killed = false;           // we SIGKILLed it
    std::optional<ExitStatus> status;
    std::thread runner;  // run_in_actor only; joined by NurseryState::finish

    // The run_in_actor result; guarded by result_mu.
    mutable std::mutex result_mu;
    std::condition_variable_any result_cv;
    bool result_ready = false;
    std::optional<Payload> value;
    std::exception_ptr error;

    /// "child actor 'feed' (feed_actor, pid 1234)".
    std::string describe() const {
        std::string s = "child actor '" + name + "' (" + exe.substr(exe.rfind('/') + 1);
        if (pid > 0) s += ", pid " + std::to_string(pid);
        return s + ")";
    }
};

/// The shared state of one open_nursery call. Thread-safety: thread-safe (mu_).
class NurseryState {
public:
    NurseryState(Actor& actor, std::shared_ptr<ActorCore> core, const NurseryOptions& options)
        : actor_(actor),
          core_(std::move(core)),
          options_(options),
          // The body's scope: nested in the caller's, and in the actor's root scope, so an
          // Actor::cancel() reaches the body as an enclosing cancel (as for open_context).
          scope_(current_scope(), &core_->root_scope()) {
        epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0) throw SystemError("epoll_create1 for a nursery: " + errno_text(errno));
        eventfd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (eventfd_ < 0) {
            const int err = errno;
            ::close(epfd_);
            throw SystemError("eventfd for a nursery: " + errno_text(err));
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = nullptr;  // nullptr: the eventfd; else the NurseryChild
        (void)::epoll_ctl(epfd_, EPOLL_CTL_ADD, eventfd_, &ev);
        try {
            monitor_ = std::thread([this] { monitor(); });
        } catch (...) {
            ::close(eventfd_);
            ::close(epfd_);
            throw;
        }
    }
    NurseryState(const NurseryState&) = delete;
    NurseryState& operator=(const NurseryState&) = delete;
    ~NurseryState() {
        finish();
        ::close(eventfd_);
        ::close(epfd_);
    }

    CancelScope& scope() noexcept { return scope_; }
    const Uid& uid() const noexcept { return core_->uid(); }

    std::shared_ptr<NurseryChild> start(const std::string& name, const std::string& exe,
                                        const std::vector<std::string>& args,
                                        const ChildOptions& options, bool run_in_actor);
    void run_in_child(const std::shared_ptr<NurseryChild>& child, std::string fn, Payload fn_args);

    /// Cancels the body's scope. The children are torn down once the body has left (finish):
    /// cancelling them now would race the body's own unwinding, which could then see a child's
    /// ContextCancelled (naming us) or its link closing before its own Cancelled, and raise
    /// that instead of leaving quietly.
    void cancel() {
        if (cancel_called_.exchange(true, std::memory_order::acq_rel)) return;  // [nursery.cancel]
        // Stop-callbacks (the body's blocked waits) run here, on the caller's thread.
        (void)scope_.cancel(core_->uid(), "actor nursery cancelled");
    }
    bool cancel_called() const noexcept {
        return cancel_called_.load(std::memory_order::acquire);  // [nursery.cancel]
    }

    /// Normal end of the body: waits for every run_in_actor result. Stops early when the
    /// body's scope is cancelled (our cancel, or an enclosing one).
    /// Returns false when a cancel ended the wait with results still pending.
    bool wait_results() {
        std::unique_lock lock(mu_);
        return results_cv_.wait(lock, scope_.stop_token(), [&] { return pending_results_ == 0; });
    }
    /// Tears every child down (if not done yet) and waits until each is reaped; stops the
    /// monitor and joins every thread. Idempotent, never throws.
    void finish() noexcept;
    /// The failures recorded so far, in order.
    std::vector<std::exception_ptr> failures() const {
        const std::lock_guard lock(mu_);
        return failures_;
    }

    std::size_t running_children() const {
        const std::lock_guard lock(mu_);
        return static_cast<std::size_t>(std::count_if(children_.begin(), children_.end(),
                                                      [](const auto& c) { return !c->status; }));
    }
    std::vector<pid_t> child_pids() const {
        const std::lock_guard lock(mu_);
        std::vector<pid_t> pids;
        for (const auto& c : children_) {
            if (!c->status) pids.push_back(c->pid);
        }
        return pids;
    }

private:
    void wake() noexcept {
        const std::uint64_t one = 1;
        (void)!::write(eventfd_, &one, sizeof one);
    }
    void monitor() noexcept;
    /// One epoll round: reaps every child whose pidfd fired. Monitor thread only.
    void pump(const Deadline& until) noexcept;
    /// Reaps `c` if it has exited; records an exit nobody asked for. Caller holds mu_.
    void reap_locked(NurseryChild& c);
    /// Cancels every child still running, waits for it, kills stragglers. Monitor thread only.
    void teardown() noexcept;
    void kill_locked(NurseryChild& c, int sig) noexcept {
        try {
            if (c.proc.kill(sig) && sig == SIGKILL) c.killed = true;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "shmctx: %s: nursery: signalling %s: %s\n",
                         core_->uid().to_string().c_str(), c.describe().c_str(), e.what());
        }
    }
    void record_failure_locked(std::exception_ptr e) { failures_.push_back(std::move(e)); }
    /// Stores a run_in_actor result and records its failure; false when the error is a
    /// transport loss we did not cause (see lost_child).
    bool result_done(const std::shared_ptr<NurseryChild>& child, std::optional<Payload> value,
                     std::exception_ptr error);
    /// A run_in_actor child's link failed without our asking. Runner thread.
    void lost_child(NurseryChild& child, const std::exception_ptr& error);

    Actor& actor_;
    std::shared_ptr<ActorCore> core_;
    const NurseryOptions options_;
    CancelScope scope_;
    std::atomic<bool> cancel_called_{false};  // [nursery.cancel]

    mutable std::mutex mu_;  // guards everything below, and each child's process fields
    std::condition_variable_any results_cv_;  // pending_results_ fell
    std::condition_variable reaped_cv_;       // a child was reaped, or the teardown finished
    std::vector<std::shared_ptr<NurseryChild>> children_;
    std::vector<std::exception_ptr> failures_;
    std::size_t pending_results_ = 0;
    int spawning_ = 0;      // spawns in flight (between the closing_ check and registration)
    bool closing_ = false;  // no new children (the teardown has begun)
    bool teardown_requested_ = false;
    bool teardown_done_ = false;
    bool stop_monitor_ = false;
    bool finished_ = false;
    bool sweep_ = false;  // a child died without an orderly exit: sweep its objects

    int epfd_ = -1;
    int eventfd_ = -1;
    std::thread monitor_;
};

// ---------------------------------------------------------------------------------------------
// Starting a child

std::shared_ptr<NurseryChild> NurseryState::start(const std::string& name, const std::string& exe,
                                                  const std::vector<std::string>& args,
                                                  const ChildOptions& options, bool run_in_actor) {
    shm::validate_component("actor name", name, shm::kMaxActorNameBytes);
    checkpoint();  // a cancelled body starts nothing

    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
        throw SystemError("pipe2 for the ready line of " + name + ": " + errno_text(errno));
    }
    Fd ready_r(pipe_fds[0]);
    Fd ready_w(pipe_fds[1]);

    const Deadline deadline(options_.start_timeout);  // the ready line and the connect
    std::vector<std::string> env = options.env;
    env.push_back(std::string(kActorNameEnv) + "=" + name);
    env.push_back("SHMCTX_NS=" + core_->names().ns());
    env.push_back(std::string(kReadyFdEnv) + "=3");
    SpawnOptions spawn_options;
    spawn_options.pass_fds = {ready_w.get()};
    spawn_options.stdout_fd = options.stdout_fd;
    spawn_options.stderr_fd = options.stderr_fd;
    // A terminal's Ctrl-C reaches us only; our cancel then tears the children down in order,
    // instead of each child cancelling itself at once (and counting as a failure).
    spawn_options.new_process_group = true;

    auto child = std::make_shared<NurseryChild>(name, exe, run_in_actor);
    {
        // Counted as spawning under mu_, so that the teardown's snapshot of the children never
        // misses one: it waits until no spawn is in flight, and once closing_ is set nothing is
        // spawned. The spawn itself runs without mu_ (it may wait for the supervisor thread).
        const std::lock_guard lock(mu_);
        if (closing_) {
            throw InvalidOperation("the nursery of " + core_->uid().to_string() +
                                   " is closing: no new child actor (" + name + ")");
        }
        ++spawning_;
    }
    ChildProcess proc;
    std::exception_ptr spawn_error;
    try {
        proc = core_->supervisor().spawn(exe, args, env, spawn_options);
    } catch (const SpawnError& e) {
        spawn_error = std::make_exception_ptr(
            ActorFailed("child actor '" + name + "' could not be started: " + e.what()));
    } catch (...) {
        spawn_error = std::current_exception();
    }
    {
        const std::lock_guard lock(mu_);
        --spawning_;
        reaped_cv_.notify_all();  // a teardown may wait for spawning_ to reach 0
        if (spawn_error) std::rethrow_exception(spawn_error);
        child->proc = std::move(proc);
        child->pid = child->proc.pid();
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = child.get();
        if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, child->proc.pidfd(), &ev) != 0) {
            const int err = errno;
            kill_locked(*child, SIGKILL);
            (void)child->proc.wait();
            throw SystemError("epoll_ctl(pidfd) for " + child->describe() + ": " + errno_text(err));
        }
        children_.push_back(child);
        if (run_in_actor) ++pending_results_;
    }
    ready_w.reset();  // the child holds the only write end: EOF means it is gone

    // Ends the start: the child is not ready and never will be. It stays a child of the
    // nursery until reaped; its exit is expected, the error is the caller's.
    const auto give_up = [&](int sig) {
        const std::lock_guard lock(mu_);
        child->stop_requested = true;
        if (run_in_actor && pending_results_ > 0) --pending_results_;
        if (sig != 0) kill_locked(*child, sig);
    };

    // Wait for the ready line ("ready" or "error <text>"), EOF, the deadline or our scope.
    Fd cancel_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    const std::stop_callback on_cancel(current_stop_token(), [&cancel_fd] {
        const std::uint64_t one = 1;
        (void)!::write(cancel_fd.get(), &one, sizeof one);
    });
    std::string line;
    bool eof = false;
    while (line.find('\n') == std::string::npos && !eof) {
        pollfd p[2] = {{ready_r.get(), POLLIN, 0}, {cancel_fd.get(), POLLIN, 0}};
        const int rc = ::poll(p, cancel_fd.get() >= 0 ? 2 : 1, timeout_ms(deadline));
        if (rc < 0 && errno != EINTR) {
            const int err = errno;
            give_up(SIGKILL);
            throw SystemError("poll on the ready line of " + child->describe() + ": " +
                              errno_text(err));
        }
        if (current_cancelled()) {
            give_up(SIGKILL);
            throw_cancelled();
        }
        if (rc == 0 && deadline.expired()) {
            give_up(SIGKILL);
            throw ActorFailed(child->describe() + " was not ready within " +
                              std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 options_.start_timeout)
                                                 .count()) +
                              " ms; killed");
        }
        if (rc > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char buf[512];
            const ssize_t n = ::read(ready_r.get(), buf, sizeof buf);
            if (n > 0) {
                line.append(buf, static_cast<std::size_t>(n));
                if (line.size() > 4096) line.resize(4096);  // a child cannot make us buffer more
            } else if (n == 0) {
                eof = true;
            } else if (errno != EINTR && errno != EAGAIN) {
                eof = true;
            }
        }
    }
    if (line.rfind("ready\n", 0) != 0) {
        if (line.rfind("error ", 0) == 0) {
            give_up(0);  // it exits by itself after reporting
            const auto end = line.find('\n');
            throw ActorFailed(child->describe() + " failed in its setup: " +
                              line.substr(6, end == std::string::npos ? end : end - 6));
        }
        if (!eof) {  // it wrote something else: it is not a run_actor child, or is broken
            give_up(SIGKILL);
            throw ActorFailed(child->describe() + " wrote \"" + line.substr(0, 200) +
                              "\" instead of its ready line; killed");
        }
        // It ended before it was ready: say how, once the monitor has reaped it (EOF comes as
        // the process exits; the reap follows at once).
        give_up(0);
        std::unique_lock lock(mu_);
        (void)reaped_cv_.wait_for(lock, options_.cancel_timeout,
                                  [&] { return child->status.has_value(); });
        if (!child->status) {  // closed its pipe but lives on
            kill_locked(*child, SIGKILL);
            throw ActorFailed(child->describe() +
                              " closed its ready pipe without a ready line; "
                              "killed");
        }
        throw ActorFailed(child->describe() + " " + child->status->describe() +
                          " before it was ready");
    }

    // Ready: its actor is published and its endpoints exposed. Link to it.
    try {
        Portal portal = actor_.connect(name, deadline);
        const std::lock_guard lock(mu_);
        child->portal.emplace(std::move(portal));
    } catch (...) {
        give_up(SIGKILL);
        throw;
    }
    return child;
}

// ---------------------------------------------------------------------------------------------
// run_in_actor

void NurseryState::run_in_child(const std::shared_ptr<NurseryChild>& child, std::string fn,
                                Payload fn_args) {
    Portal portal = *child->portal;
    try {
        child->runner = std::thread(
            [this, child, portal, fn = std::move(fn), fn_args = std::move(fn_args)]() mutable {
                std::optional<Payload> value;
                std::exception_ptr error;
                try {
                    value.emplace(portal.run(fn, fn_args.view()));
                } catch (...) {
                    error = std::current_exception();
                }
                if (!result_done(child, std::move(value), error)) {
                    lost_child(*child, error);
                    return;
                }
                // The result is in: the child has done its work. Cancel it now (tractor's
                // cancel_on_completion); the monitor reaps it when it exits.
                bool ask = false;
                {
                    const std::lock_guard lock(mu_);
                    ask = !child->status && !child->killed;
                    child->stop_requested = true;
                }
                if (ask && !portal.cancel_actor(Deadline(options_.cancel_timeout))) {
                    const std::lock_guard lock(mu_);
                    if (!child->status) kill_locked(*child, SIGTERM);
                }
            });
    } catch (...) {  // no thread: the function never runs; the child goes with the teardown
        {
            const std::lock_guard lock(mu_);
            child->stop_requested = true;
        }
        result_done(child, std::nullopt, std::current_exception());
        throw;
    }
}

bool NurseryState::result_done(const std::shared_ptr<NurseryChild>& child,
                               std::optional<Payload> value, std::exception_ptr error) {
    bool lost = false;
    {
        const std::lock_guard lock(mu_);
        if (error) {
            // A failure unless it is the end we asked for: our own cancel of the child (a
            // ContextCancelled naming us) or the transport going away once we stopped it. A
            // transport loss we did not cause is left to lost_child().
            const bool ours = child->stop_requested && (error_is<TransportClosed>(error) ||
                                                        error_is<ContextCancelled>(error));
            if (!ours) {
                if (error_is<TransportClosed>(error)) {
                    lost = true;
                } else {
                    record_failure_locked(error);
                }
            }
        }
        // A lost child's result counts as in only once lost_child() has decided how to report
        // it: until then the body's end waits (and with it the teardown, which would mark the
        // child stopped and hide a crash the monitor has not reaped yet).
        if (!lost && pending_results_ > 0) --pending_results_;
    }
    results_cv_.notify_all();
    {
        const std::lock_guard lock(child->result_mu);
        child->value = std::move(value);
        child->error = std::move(error);
        child->result_ready = true;
    }
    child->result_cv.notify_all();
    return !lost;
}

void NurseryState::lost_child(NurseryChild& child, const std::exception_ptr& error) {
    // The link to a child we did not stop went away before its function returned. If its
    // process died, the monitor reaps it: an unclean end is recorded there as an ActorFailed
    // with its exit status (the better report); a clean exit is recorded here, since the
    // function never returned. A child still alive after cancel_timeout (it closed the link,
    // or we gave up on it as unresponsive) is recorded with the link's error and stopped.
    std::unique_lock lock(mu_);
    (void)reaped_cv_.wait_for(lock, options_.cancel_timeout,
                              [&] { return child.status.has_value() || child.stop_requested; });
    try {
        if (child.stop_requested) {
            // Asked meanwhile (a cancel of the nursery): the end we asked for.
        } else if (child.status) {
            if (child.status->success()) {
                record_failure_locked(std::make_exception_ptr(
                    ActorFailed(child.describe() + " " + child.status->describe() +
                                " before its function returned")));
            }
        } else {
            record_failure_locked(error);
            child.stop_requested = true;
            kill_locked(child, SIGTERM);
        }
    } catch (...) {
        std::fprintf(stderr, "shmctx: %s: nursery: %s: %s\n", core_->uid().to_string().c_str(),
                     child.describe().c_str(), what_of(error).c_str());
    }
    if (pending_results_ > 0) --pending_results_;
    lock.unlock();
    results_cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Monitor: reaping, deadline, teardown

void NurseryState::reap_locked(NurseryChild& c) {
    if (c.status) return;
    // Deregister before reaping: wait() closes the pidfd, and its number may at once be reused
    // by another thread's open(), which a late EPOLL_CTL_DEL would then hit.
    const int pidfd = c.proc.pidfd();
    (void)::epoll_ctl(epfd_, EPOLL_CTL_DEL, pidfd, nullptr);
    std::optional<ExitStatus> st;
    try {
        st = c.proc.wait(Deadline(Clock::now()));  // never blocks
    } catch (const std::exception& e) {
        // Someone else reaped our child (waitpid(-1) elsewhere): its status is lost.
        std::fprintf(stderr, "shmctx: %s: nursery: %s\n", core_->uid().to_string().c_str(),
                     e.what());
        st = ExitStatus::exited(-1);
    }
    if (!st) {
        // Readable but not reapable yet (cannot happen: a pidfd is readable once its process
        // has exited): watch it again.
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = &c;
        (void)::epoll_ctl(epfd_, EPOLL_CTL_ADD, pidfd, &ev);
        return;
    }
    c.status = st;
    if (!st->success()) sweep_ = true;
    // An exit nobody here asked for is a failure when it is not clean: a crash, a signal, an
    // error exit. A clean exit (0: run_actor returned because a peer cancelled the actor, or it
    // cancelled itself) is that actor's orderly end, as tractor treats a sub-actor cancelled by
    // another actor; a run_in_actor child ending so early is reported by its runner (its
    // function's ContextCancelled).
    if (!c.stop_requested && !st->success()) {
        record_failure_locked(std::make_exception_ptr(ActorFailed(
            c.describe() + " " + st->describe() + " before the nursery asked it to stop")));
    }
    reaped_cv_.notify_all();
}

void NurseryState::pump(const Deadline& until) noexcept {
    epoll_event events[16];
    const int n = ::epoll_wait(epfd_, events, 16, timeout_ms(until));
    if (n < 0) {
        if (errno != EINTR) {
            std::fprintf(stderr, "shmctx: %s: nursery: epoll_wait: %s\n",
                         core_->uid().to_string().c_str(), errno_text(errno).c_str());
        }
        return;
    }
    // Test builds: "nursery.slow_reap=corrupt" makes the monitor late, so that a runner learns
    // of its child's death first (the order the report must not depend on).
    if (n > 0 && SHMCTX_FAULT_POINT("nursery.slow_reap")) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::lock_guard lock(mu_);
    for (int i = 0; i < n; ++i) {
        if (events[i].data.ptr == nullptr) {
            std::uint64_t drained = 0;
            (void)!::read(eventfd_, &drained, sizeof drained);
            continue;
        }
        try {
            reap_locked(*static_cast<NurseryChild*>(events[i].data.ptr));
        } catch (...) {
            // Recording the failure allocates; without memory there is nothing better to do
            // than to keep reaping.
        }
    }
}

void NurseryState::monitor() noexcept {
    sigset_t all;
    sigfillset(&all);
    (void)::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    (void)::pthread_setname_np(::pthread_self(), "shmctx-nursery");
    Deadline deadline = options_.deadline;
    for (;;) {
        pump(deadline);
        if (deadline.expired()) {
            deadline = Deadline::never();  // fires once
            if (!cancel_called()) cancel();
        }
        bool run_teardown = false;
        {
            const std::lock_guard lock(mu_);
            if (teardown_requested_ && !teardown_done_) run_teardown = true;
            if (stop_monitor_) return;
        }
        if (run_teardown) {
            teardown();
            {
                const std::lock_guard lock(mu_);
                teardown_done_ = true;
            }
            reaped_cv_.notify_all();
        }
    }
}

void NurseryState::teardown() noexcept {
    std::vector<std::shared_ptr<NurseryChild>> running;
    {
        std::unique_lock lock(mu_);
        closing_ = true;
        reaped_cv_.wait(lock, [&] { return spawning_ == 0; });  // spawns in flight land first
        for (const auto& c : children_) {
            if (c->status) continue;
            c->stop_requested = true;
            running.push_back(c);
        }
    }
    // 1. Ask: every child at once (a hung one must not delay the others' cancels). A child not
    //    linked yet (still starting) gets SIGTERM, which run_actor turns into its cancel.
    std::vector<std::thread> askers;
    for (const auto& c : running) {
        std::optional<Portal> portal;
        {
            const std::lock_guard lock(mu_);
            portal = c->portal;
            if (!portal) kill_locked(*c, SIGTERM);
        }
        if (!portal) continue;
        try {
            askers.emplace_back([this, c, p = *portal]() mutable {
                bool acked = false;
                try {
                    acked = p.cancel_actor(Deadline(options_.cancel_timeout));
                } catch (...) {
                }
                if (!acked) {
                    const std::lock_guard lock(mu_);
                    if (!c->status) kill_locked(*c, SIGTERM);
                }
            });
        } catch (...) {  // no thread: signal instead
            const std::lock_guard lock(mu_);
            kill_locked(*c, SIGTERM);
        }
    }
    for (auto& t : askers) t.join();

    // 2. Wait for them to exit, then SIGKILL what is left and reap it.
    const auto all_reaped = [&] {
        const std::lock_guard lock(mu_);
        return std::all_of(running.begin(), running.end(),
                           [](const auto& c) { return c->status.has_value(); });
    };
    const Deadline exit_deadline(options_.cancel_timeout);
    while (!all_reaped() && !exit_deadline.expired()) pump(exit_deadline);
    {
        const std::lock_guard lock(mu_);
        for (const auto& c : running) {
            if (c->status) continue;
            std::fprintf(
                stderr,
                "shmctx: %s: nursery: %s did not exit within %lld ms of its cancel; "
                "killing it\n",
                core_->uid().to_string().c_str(), c->describe().c_str(),
                static_cast<long long>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(options_.cancel_timeout)
                        .count()));
            kill_locked(*c, SIGKILL);
            sweep_ = true;
        }
    }
    while (!all_reaped()) pump(Deadline::never());  // SIGKILL: they end now
    bool sweep = false;
    {
        const std::lock_guard lock(mu_);
        sweep = std::exchange(sweep_, false);
    }
    if (sweep) {
        // A killed or crashed child leaves its objects behind when no linked peer reclaimed
        // them (it died before we linked): sweep the namespace (only dead actors' objects).
        try {
            (void)shm::reclaim_stale(core_->names());
        } catch (const std::exception& e) {
            std::fprintf(stderr, "shmctx: %s: nursery: sweeping dead children's objects: %s\n",
                         core_->uid().to_string().c_str(), e.what());
        }
    }
}

void NurseryState::finish() noexcept {
    {
        const std::lock_guard lock(mu_);
        if (finished_) return;
        finished_ = true;
        teardown_requested_ = true;
    }
    wake();
    {
        std::unique_lock lock(mu_);
        reaped_cv_.wait(lock, [&] { return teardown_done_; });
        stop_monitor_ = true;
    }
    wake();
    monitor_.join();
    // Runners end once their child is gone (its death fails their Portal::run).
    std::vector<std::shared_ptr<NurseryChild>> children;
    {
        const std::lock_guard lock(mu_);
        children = children_;
    }
    for (const auto& c : children) {
        if (c->runner.joinable()) c->runner.join();
    }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Public API

const std::string& ChildResult::name() const noexcept { return child_->name; }

pid_t ChildResult::pid() const noexcept { return child_->pid; }

Portal ChildResult::portal() const { return *child_->portal; }

bool ChildResult::ready() const {
    const std::lock_guard lock(child_->result_mu);
    return child_->result_ready;
}

Payload ChildResult::get(Deadline deadline) const {
    std::unique_lock lock(child_->result_mu);
    const auto ready = [&] { return child_->result_ready; };
    const std::stop_token token = detail::current_stop_token();
    const bool in = deadline.is_infinite()
                        ? child_->result_cv.wait(lock, token, ready)
                        : child_->result_cv.wait_until(lock, token, deadline.at(), ready);
    if (!in) {
        lock.unlock();
        detail::checkpoint();  // woken by our scope's cancel
        throw TimedOut("the result of child actor '" + child_->name + "' did not arrive in time");
    }
    if (child_->error) std::rethrow_exception(child_->error);
    return Payload::copy(child_->value->view());
}

Portal ActorNursery::start_actor(const std::string& name, const std::string& exe,
                                 const std::vector<std::string>& args,
                                 const ChildOptions& options) {
    return *state_->start(name, exe, args, options, false)->portal;
}

ChildResult ActorNursery::run_in_actor(const std::string& name, const std::string& exe,
                                       const std::string& fn, PayloadView fn_args,
                                       const std::vector<std::string>& args,
                                       const ChildOptions& options) {
    if (fn.empty()) throw std::invalid_argument("run_in_actor: empty function name");
    Payload args_copy = Payload::copy(fn_args);
    auto child = state_->start(name, exe, args, options, true);
    state_->run_in_child(child, fn, std::move(args_copy));
    return ChildResult(child);
}

void ActorNursery::cancel() { state_->cancel(); }
bool ActorNursery::cancel_called() const noexcept { return state_->cancel_called(); }
std::size_t ActorNursery::running_children() const { return state_->running_children(); }
std::vector<pid_t> ActorNursery::child_pids() const { return state_->child_pids(); }

bool ActorNursery::run(Actor& actor, const NurseryOptions& options, const BodyFn& body) {
    const std::shared_ptr<detail::ActorCore>& core = actor.core_;
    if (core->root_scope().cancelled()) detail::throw_cancelled();  // a cancelled actor
    auto state = std::make_shared<detail::NurseryState>(actor, core, options);
    ActorNursery nursery(state);
    detail::CancelScope& scope = state->scope();

    std::exception_ptr body_error;
    bool caught = false;
    try {
        caught = detail::run_in_scope(scope, [&] { body(nursery); }).cancelled();
    } catch (...) {
        body_error = std::current_exception();
    }
    if (!body_error && !caught) {
        // Normal end: every run_in_actor result first, then the long-lived children go.
        // A cancel that lands once every result is in changes nothing (trio: caught only if a
        // Cancelled unwound something); one that cuts the wait short counts.
        if (!state->wait_results()) {
            if (scope.absorbs_cancelled()) {
                scope.absorb();
                caught = true;
            } else {
                body_error = std::make_exception_ptr(Cancelled{});
            }
        }
    }
    state->finish();  // cancels and reaps every child still running

    std::vector<std::exception_ptr> failures = state->failures();
    if (body_error && !detail::error_is<std::exception>(body_error)) {
        // A Cancelled (an enclosing scope's) keeps propagating; the children's failures can
        // not ride on it, so they are logged.
        for (const auto& f : failures) {
            std::fprintf(stderr, "shmctx: %s: nursery cancelled from outside; a child failed: %s\n",
                         actor.uid().to_string().c_str(), detail::what_of(f).c_str());
        }
        std::rethrow_exception(body_error);
    }
    std::vector<std::exception_ptr> errors;
    if (body_error) errors.push_back(body_error);
    for (auto& f : failures) {
        if (f != body_error) errors.push_back(std::move(f));  // the body may rethrow a child's
    }
    if (errors.empty()) return caught;
    if (errors.size() == 1) std::rethrow_exception(errors.front());
    throw ErrorGroup(std::to_string(errors.size()) + " errors in the actor nursery of " +
                         actor.uid().to_string(),
                     std::move(errors));
}

}  // namespace shmctx
