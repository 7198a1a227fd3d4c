#include "core/cancel_scope.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>

namespace shmctx::detail {

namespace {

// A misuse of the scope API that would silently break cancellation: abort with the reason
// (STYLE.md §2.4: contract violations are never exceptions).
[[noreturn]] void contract_violation(const char* what) noexcept {
    std::fprintf(stderr, "shmctx: cancel scope contract violation: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

constinit thread_local bool t_non_blocking = false;

}  // namespace

// ---------------------------------------------------------------------------------------------
// CancelScope

CancelScope::CancelScope(CancelScope* parent, CancelScope* also_in) : parent_(parent) {
    if (also_in == parent) also_in = nullptr;
    if (parent != nullptr) {
        parent_token_ = parent->source_.get_token();
        // Runs Forward at once (on this thread) if the parent is already cancelled.
        parent_link_.emplace(parent_token_, Forward{&source_});
    }
    if (also_in != nullptr) {
        also_token_ = also_in->source_.get_token();
        also_link_.emplace(also_token_, Forward{&source_});
    }
}

CancelScope::~CancelScope() {
    // Relaxed: entering and leaving happen on the threads that use the scope; a destructor
    // racing with them is already a lifetime bug, this only catches the sequential misuse.
    if (entered_.load(std::memory_order::relaxed) != 0) {
        contract_violation("a CancelScope was destroyed while still entered on a thread");
    }
}

bool CancelScope::cancel(std::optional<Uid> canceller, std::string reason) {
    if (NonBlockingThreadMark::active()) {
        contract_violation(
            "CancelScope::cancel() called on a non-blocking thread (the control loop); post it "
            "to the CancellerThread");
    }
    const bool first = request(std::move(canceller), std::move(reason));
    // Runs every stop-callback of this scope and of the scopes nested in it, on this thread.
    // request_stop() is a release; stop_requested() an acquire: a thread that observes the stop
    // also observes cancel_called_ == true (absorbs_cancelled() relies on it).
    source_.request_stop();
    return first;
}

bool CancelScope::request(std::optional<Uid> canceller, std::string reason) {
    bool first = false;
    {
        std::lock_guard lock(mutex_);
        // Relaxed: cancel_called_ only goes false -> true, under mutex_, so the mutex orders
        // this read against the store of an earlier cancel().
        if (!cancel_called_.load(std::memory_order::relaxed)) {
            canceller_ = std::move(canceller);
            reason_ = std::move(reason);
            // [scope.called] pairs with [scope.called] in cancel_called(): a reader that sees
            // true also sees canceller_ and reason_ (which it reads under mutex_ anyway).
            cancel_called_.store(true, std::memory_order::release);
            first = true;
        }
    }
    // [scope.requested] pairs with the acquire in cancelled(): stored after cancel_called_.
    // seq_cst: the store half of the store-buffering pair of cancel_pending().
    requested_.store(true, std::memory_order::seq_cst);
    return first;
}

std::optional<Uid> CancelScope::canceller() const {
    std::lock_guard lock(mutex_);
    return canceller_;
}

std::string CancelScope::reason() const {
    std::lock_guard lock(mutex_);
    return reason_;
}

// ---------------------------------------------------------------------------------------------
// ScopeEntry

constinit thread_local ScopeEntry* ScopeEntry::innermost_ = nullptr;

ScopeEntry::ScopeEntry(CancelScope& scope) : scope_(scope), outer_(innermost_) {
    if (outer_ != nullptr && scope.parent() != &outer_->scope()) {
        contract_violation(
            "a scope entered on a thread that already has one must be nested directly in the "
            "thread's innermost scope (else the skipped scopes' cancellation is not observed)");
    }
    // Relaxed: a counter for the destructor's misuse check only.
    scope.entered_.fetch_add(1, std::memory_order::relaxed);
    innermost_ = this;
}

ScopeEntry::~ScopeEntry() {
    if (innermost_ != this) {
        contract_violation("scope entries must be left in LIFO order on the thread that entered");
    }
    innermost_ = outer_;
    // Relaxed: see CancelScope::~CancelScope.
    scope_.entered_.fetch_sub(1, std::memory_order::relaxed);
}

// ---------------------------------------------------------------------------------------------
// Free functions

void throw_cancelled() {
    // Inside a handler, the exception being handled: what this Cancelled would mask.
    std::exception_ptr handling = std::current_exception();
    if (handling) {
        try {
            std::rethrow_exception(handling);
        } catch (const Cancelled&) {
            handling = nullptr;  // a Cancelled masks nothing
        } catch (...) {
        }
    }
    for (ScopeEntry* e = ScopeEntry::innermost_; e != nullptr; e = e->outer_) {
        if (!e->scope_.cancelled()) continue;
        e->delivered_ = true;
        if (handling && !e->masked_) e->masked_ = handling;
        // A request seen here (CancelScope::request) is completed here: the stop-callbacks
        // (nested scopes, stop tokens) run now rather than when the canceller thread gets to it.
        if (e->scope_.cancel_pending() && !NonBlockingThreadMark::active()) e->scope_.cancel();
    }
    throw Cancelled{};
}

void sleep_for(Duration d) {
    checkpoint();
    sleep_until_stopped(d, current_stop_token());
    checkpoint();
}

void sleep_until_stopped(Duration d, const std::stop_token& token) {
    if (d <= Duration::zero()) return;
    // A private condition variable nobody notifies: the wait ends at the deadline or when the
    // token's stop-callback (registered by wait_until) notifies it.
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    const auto now = Clock::now();
    if (d >= Clock::time_point::max() - now) {
        // Outside every scope an infinite sleep could never end.
        if (!token.stop_possible()) contract_violation("sleep_for(infinite) outside every scope");
        cv.wait(lock, token, [] { return false; });
    } else {
        cv.wait_until(lock, token, now + std::chrono::duration_cast<Clock::duration>(d),
                      [] { return false; });
    }
}

// ---------------------------------------------------------------------------------------------
// NonBlockingThreadMark

NonBlockingThreadMark::NonBlockingThreadMark() noexcept : was_(t_non_blocking) {
    t_non_blocking = true;
}

NonBlockingThreadMark::~NonBlockingThreadMark() { t_non_blocking = was_; }

bool NonBlockingThreadMark::active() noexcept { return t_non_blocking; }

}  // namespace shmctx::detail
