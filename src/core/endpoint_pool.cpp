#include "core/endpoint_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "core/backoff.hpp"

namespace shmctx::detail {

namespace {

// The pool whose task the calling thread runs (shutdown() from inside one would wait forever).
constinit thread_local const EndpointPool* t_pool = nullptr;

}  // namespace

const char* to_string(SubmitRefusal r) noexcept {
    switch (r) {
        case SubmitRefusal::at_capacity:
            return "at_capacity";
        case SubmitRefusal::thread_start_failed:
            return "thread_start_failed";
        case SubmitRefusal::shut_down:
            return "shut_down";
    }
    return "unknown";
}

EndpointPool::EndpointPool(EndpointPoolOptions options) : options_(std::move(options)) {
    if (options_.max_threads == 0) {
        throw std::invalid_argument("EndpointPool: max_threads must be at least 1");
    }
}

EndpointPool::~EndpointPool() { shutdown(); }

bool EndpointPool::on_pool_thread() noexcept { return t_pool != nullptr; }

bool EndpointPool::try_submit(Task&& task, SubmitRefusal* why) {
    std::unique_lock lock(mutex_);
    const auto refuse = [&](SubmitRefusal r) {
        ++counters_.refused;
        if (why != nullptr) *why = r;
        return false;
    };
    if (stopping_) return refuse(SubmitRefusal::shut_down);
    if (running_ >= options_.max_threads) return refuse(SubmitRefusal::at_capacity);

    if (Worker* w = pop_newest_idle(); w != nullptr) {
        w->task = std::move(task);
        w->has_task = true;
        // [pool.assign] pairs with [pool.assign] in run_worker(): a watching worker wakes.
        w->assigned.store(true, std::memory_order::release);
        ++running_;
        counters_.peak_running = std::max(counters_.peak_running, running_);
        // Notified under the lock: once unlocked, the worker may run the task, idle out and
        // retire (freeing w) before a notify issued after unlocking would touch it.
        w->cv.notify_one();
        return true;
    }

    // No idle thread: start one. The Worker is registered first, then the thread is started
    // outside the lock (a clone takes tens of microseconds), then its handle is stored. The
    // worker waits for handle_set before it could ever retire and move the handle out.
    workers_.emplace_back();
    Worker* w = &workers_.back();
    w->self = std::prev(workers_.end());
    w->task = std::move(task);
    w->has_task = true;
    ++running_;
    lock.unlock();

    std::thread t;
    try {
        t = std::thread([this, w] { run_worker(w); });
    } catch (const std::system_error&) {
        lock.lock();
        task = std::move(w->task);  // the caller keeps its task
        workers_.erase(w->self);
        --running_;
        changed_.notify_all();  // shutdown() may be waiting for workers_ to empty
        return refuse(SubmitRefusal::thread_start_failed);
    }

    lock.lock();
    w->thread = std::move(t);
    w->handle_set = true;
    ++counters_.started;
    counters_.peak_running = std::max(counters_.peak_running, running_);
    counters_.peak_threads = std::max(counters_.peak_threads, workers_.size());
    w->cv.notify_one();
    return true;
}

void EndpointPool::report(const char* where, std::exception_ptr error) noexcept {
    if (options_.on_error) {
        try {
            options_.on_error(std::move(error));
            return;
        } catch (...) {
            error = std::current_exception();
            where = "the pool's error handler threw";
        }
    }
    report_to_stderr(where, std::move(error));
}

void EndpointPool::push_idle(Worker* w) noexcept {
    w->idle = true;
    w->idle_newer = nullptr;
    w->idle_older = idle_newest_;
    if (idle_newest_ != nullptr) idle_newest_->idle_newer = w;
    idle_newest_ = w;
    ++idle_count_;
}

EndpointPool::Worker* EndpointPool::pop_newest_idle() noexcept {
    Worker* w = idle_newest_;
    if (w != nullptr) remove_idle(w);
    return w;
}

void EndpointPool::remove_idle(Worker* w) noexcept {
    if (!w->idle) return;
    if (w->idle_newer != nullptr) {
        w->idle_newer->idle_older = w->idle_older;
    } else {
        idle_newest_ = w->idle_older;
    }
    if (w->idle_older != nullptr) w->idle_older->idle_newer = w->idle_newer;
    w->idle = false;
    w->idle_newer = nullptr;
    w->idle_older = nullptr;
    --idle_count_;
}

void EndpointPool::run_worker(Worker* w) noexcept {
    t_pool = this;
    {
        const std::string name = options_.name.substr(0, 15);
        (void)::pthread_setname_np(::pthread_self(), name.c_str());
    }
    if (options_.on_thread_start) {
        try {
            options_.on_thread_start();
        } catch (...) {
            report("endpoint thread start hook threw", std::current_exception());
        }
    }

    std::unique_lock lock(mutex_);
    w->cv.wait(lock, [w] { return w->handle_set; });
    for (;;) {
        if (w->has_task) {
            Task task = std::move(w->task);
            w->has_task = false;
            lock.unlock();
            try {
                task();
            } catch (...) {
                // Cancelled included: it is not a std::exception, and still never silent.
                report("endpoint task threw", std::current_exception());
            }
            // Destroyed before the task counts as finished, so that shutdown() returning means
            // that nothing a task captured is still alive.
            task = Task{};
            lock.lock();
            --running_;
            ++counters_.completed;
            if (running_ == 0) changed_.notify_all();
            if (stopping_) break;
            w->idle_since = Clock::now();
            push_idle(w);
            if (options_.spin_before_sleep > Duration::zero()) {
                // Watch for the next task before sleeping (see EndpointPoolOptions). The
                // worker stays on the idle list, so try_submit can hand it one meanwhile.
                // relaxed: reset while we hold the lock and have no task.
                w->assigned.store(false, std::memory_order::relaxed);
                lock.unlock();
                const auto until = Clock::now() + options_.spin_before_sleep;
                if (options_.on_idle_watch) options_.on_idle_watch(true);
                // [pool.assign]: acquire pairs with the releases in try_submit and shutdown.
                Backoff backoff;
                while (!w->assigned.load(std::memory_order::acquire) &&
                       (!backoff.time_to_check() || Clock::now() < until)) {
                    if (!options_.on_idle_poll || !options_.on_idle_poll()) backoff.pause();
                }
                if (options_.on_idle_watch) options_.on_idle_watch(false);
                lock.lock();
            }
            continue;
        }
        if (stopping_) {
            remove_idle(w);
            break;
        }
        const auto deadline = w->idle_since + options_.idle_timeout;
        if (w->cv.wait_until(lock, deadline) == std::cv_status::timeout && !w->has_task &&
            !stopping_) {
            remove_idle(w);
            break;
        }
        // A task, a stop request, or a spurious wake-up: re-examine.
    }

    // Retire: hand our handle to the next retiring thread (or shutdown) and join the previous
    // retiree, so no thread is left unjoined and nobody on the control loop ever joins.
    std::thread mine = std::move(w->thread);
    workers_.erase(w->self);  // w is gone from here on
    ++counters_.retired;
    std::thread previous = std::exchange(zombie_, std::move(mine));
    changed_.notify_all();
    lock.unlock();

    if (options_.on_thread_exit) {
        try {
            options_.on_thread_exit();
        } catch (...) {
            report("endpoint thread exit hook threw", std::current_exception());
        }
    }
    t_pool = nullptr;
    if (previous.joinable()) previous.join();
}

void EndpointPool::shutdown() {
    if (t_pool == this) {
        std::fprintf(stderr, "shmctx: EndpointPool::shutdown() called from one of its tasks\n");
        std::abort();  // contract violation: it would wait for itself forever
    }
    std::unique_lock lock(mutex_);
    stopping_ = true;
    for (Worker* w = idle_newest_; w != nullptr; w = w->idle_older) {
        // A worker still watching for its next task (spin_before_sleep, which a user may set
        // to hours) ends its watch as if handed a task, then finds none and stops.
        // [pool.assign] pairs with the acquire in run_worker's watch loop.
        w->assigned.store(true, std::memory_order::release);
        w->cv.notify_one();
    }
    changed_.wait(lock, [this] { return workers_.empty(); });
    std::thread last = std::move(zombie_);
    lock.unlock();
    // Joining the last retiree joins the whole chain: each retiring thread joined the previous
    // one before it ended.
    if (last.joinable()) last.join();
}

EndpointPoolStats EndpointPool::stats() const {
    std::lock_guard lock(mutex_);
    EndpointPoolStats s = counters_;
    s.running = running_;
    s.threads = workers_.size();
    s.idle = idle_count_;
    return s;
}

}  // namespace shmctx::detail
