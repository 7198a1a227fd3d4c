#include "core/canceller_thread.hpp"

#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "shmctx/errors.hpp"
#include "shmctx/shm/wake.hpp"

namespace shmctx::detail {

std::string describe_exception(const std::exception_ptr& error) noexcept {
    try {
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            try {
                return e.what();
            } catch (...) {
                return "std::exception (what() could not be copied)";
            }
        } catch (const Cancelled&) {
            return "shmctx::Cancelled";
        } catch (...) {
            return "unknown exception";
        }
    } catch (...) {
        return {};  // bad_alloc copying a literal: nothing better to say
    }
}

void report_to_stderr(const char* where, std::exception_ptr error) noexcept {
    const std::string text = describe_exception(error);
    std::fprintf(stderr, "shmctx: %s: %s\n", where,
                 text.empty() ? "unknown exception" : text.c_str());
}

CancellerThread::CancellerThread(ErrorHandler on_error, std::string name)
    : on_error_(std::move(on_error)), name_(std::move(name)) {
    thread_ = std::thread([this] { run_loop(); });
    id_ = thread_.get_id();
}

CancellerThread::~CancellerThread() { stop(); }

bool CancellerThread::post(Task work) {
    // [canceller.gate]: seq_cst, paired with stop()'s seq_cst store of stopping_ and load of
    // posting_: either stop() sees this post in flight and waits for its push, or this post
    // sees stopping_ and refuses.
    posting_.fetch_add(1, std::memory_order::seq_cst);
    if (stopping_.load(std::memory_order::seq_cst)) {
        // Release: pairs with stop()'s acquire load of posting_ (nothing to publish here, but
        // every decrement is a release so that stop() sees completed pushes).
        posting_.fetch_sub(1, std::memory_order::release);
        return false;
    }
    Node* node = nullptr;
    try {
        node = new Node{std::move(work), nullptr};
    } catch (...) {
        posting_.fetch_sub(1, std::memory_order::release);
        throw;
    }
    // Relaxed initial load: the CAS below re-reads head_ and publishes the node.
    Node* old = head_.load(std::memory_order::relaxed);
    do {
        node->next = old;
        // [canceller.push] pairs with [canceller.take] in run_pending(): the node's task is
        // visible to the canceller. seq_cst for the parking handshake (file comment).
    } while (!head_.compare_exchange_weak(old, node, std::memory_order::seq_cst,
                                          std::memory_order::relaxed));
    // seq_cst: the poster's half of the parking handshake (after the push, before the wake).
    const bool parked = parked_.load(std::memory_order::seq_cst);
    // [canceller.posted] pairs with the acquire load of posting_ in stop().
    posting_.fetch_sub(1, std::memory_order::release);
    if (parked) wake();
    return true;
}

void CancellerThread::wake() noexcept {
    // [canceller.wake] Release: the futex word changes after the push; the canceller re-reads
    // head_ (acquire) after waking, so the bump carries no data of its own.
    wake_seq_.fetch_add(1, std::memory_order::release);
    (void)shm::futex_wake(wake_seq_, 1);
}

void CancellerThread::stop() {
    if (!thread_.joinable()) return;
    if (on_this_thread()) {
        std::fprintf(stderr, "shmctx: CancellerThread::stop() called from a posted task\n");
        std::abort();  // contract violation: the thread would join itself
    }
    stopping_.store(true, std::memory_order::seq_cst);  // [canceller.gate]
    wake();
    thread_.join();
    // Posts that passed the gate before stopping_ was set may still be pushing: wait for them
    // (a handful of instructions each; they never block), then run what they queued.
    // [canceller.posted] acquire pairs with the release decrement in post().
    while (posting_.load(std::memory_order::acquire) != 0) std::this_thread::yield();
    (void)run_pending();
}

bool CancellerThread::run_pending() noexcept {
    // [canceller.take] pairs with [canceller.push] in post(): every taken node is fully built.
    Node* list = head_.exchange(nullptr, std::memory_order::acquire);
    if (list == nullptr) return false;
    // The list is newest first: reverse it to run the tasks in post order.
    Node* fifo = nullptr;
    while (list != nullptr) {
        Node* next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo != nullptr) {
        Node* node = fifo;
        fifo = node->next;
        try {
            node->work();
        } catch (...) {
            if (on_error_) {
                on_error_(std::current_exception());
            } else {
                report_to_stderr("canceller task threw", std::current_exception());
            }
        }
        delete node;
        // Relaxed: a statistic (executed_approx).
        executed_.fetch_add(1, std::memory_order::relaxed);
    }
    return true;
}

void CancellerThread::run_loop() noexcept {
    // Thread names are at most 15 characters plus NUL; longer ones are cut.
    const std::string short_name = name_.substr(0, 15);
    (void)::pthread_setname_np(::pthread_self(), short_name.c_str());
    for (;;) {
        if (run_pending()) continue;
        // stopping_ is checked only once the list is empty: everything posted before stop()
        // set it has been run. [canceller.gate]
        if (stopping_.load(std::memory_order::seq_cst)) return;
        // The canceller's half of the parking handshake (file comment), every access seq_cst.
        const std::uint32_t seen = wake_seq_.load(std::memory_order::seq_cst);
        parked_.store(true, std::memory_order::seq_cst);
        if (head_.load(std::memory_order::seq_cst) == nullptr &&
            !stopping_.load(std::memory_order::seq_cst)) {
            // Returns at once if wake_seq_ moved since `seen`; EINTR and spurious returns just
            // loop (the list and stopping_ are re-checked).
            (void)shm::futex_wait(wake_seq_, seen, Duration::max());
        }
        // Relaxed: only this thread writes parked_ = false; a poster that still reads true
        // makes one spurious wake, which is harmless.
        parked_.store(false, std::memory_order::relaxed);
    }
}

}  // namespace shmctx::detail
