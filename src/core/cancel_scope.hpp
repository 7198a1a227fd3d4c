// Cancel scopes (DESIGN.md §4.6; tractor-context-spec.md §3.2–§3.5; model: trio's CancelScope).
//
// A CancelScope is a cancellable region. Scopes form a tree through explicit parent links, and
// each thread keeps a stack of the scopes it has entered (ScopeEntry, RAII). Cancelling a scope
// cancels every scope nested in it, on whatever thread they were entered: each scope owns a
// std::stop_source, and a nested scope registers a std::stop_callback on its parent's token that
// requests its own stop. So the innermost scope's stop_token fires when any enclosing scope is
// cancelled, and a blocking call observes the whole chain through that one token.
//
//        actor root scope (never entered; Actor::cancel() cancels it)
//          |  stop_callback                       thread A (endpoint)    thread B (user)
//          +-- endpoint body scope  <------------ innermost of A
//          |     +-- nested scope (same thread)
//          +-- (other endpoints)                  open_context body scope <- innermost of B
//
// Level-triggered: a stop request is never withdrawn, so once a scope's chain is cancelled every
// later checkpoint() inside it throws shmctx::Cancelled again.
//
// Who catches a Cancelled (run_in_scope, trio's rule): the boundary of scope S absorbs a
// Cancelled iff cancel() was called on S itself and no enclosing scope is cancelled; otherwise it
// propagates to the enclosing boundary, so the outermost cancelled scope catches it. Absorbing
// sets S.cancelled_caught() (spec §3.4: "a Cancelled actually unwound the scope").
//
// Stop-callbacks run synchronously on the thread that calls cancel() (std::stop_source
// semantics) — the nested scopes' forwarding callbacks and the wakers of blocked waits. That is
// why the control loop never calls cancel() itself: it posts the call to the actor's
// CancellerThread (canceller_thread.hpp). A thread marked with NonBlockingThreadMark aborts if
// it calls cancel().
//
// Every library path that raises Cancelled must go through throw_cancelled(), which records on
// the thread's scope entries that a Cancelled was raised inside them (so that a body that
// swallows it is still treated as cancelled at its boundary).
#pragma once

#include <atomic>
#include <exception>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>

#include "shmctx/deadline.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/ids.hpp"

namespace shmctx::detail {

class ScopeEntry;
[[noreturn]] void throw_cancelled();  // declared again, documented, below

/// A cancellable region. Thread-safe: cancel() and every observer may be called from any
/// thread; entering it (ScopeEntry, run_in_scope) is per thread. Not copyable or movable (nested
/// scopes and stop-callbacks point at it).
class CancelScope {
public:
    /// A scope nested in `parent` (nullptr: a root scope, cancelled only by its own cancel()).
    /// The parent may be entered on another thread or on none (an actor's root scope). Use
    /// current_scope() as the parent for a scope nested in the calling thread's innermost scope.
    /// `also_in` (optional) is a second enclosing scope whose cancellation counts exactly like
    /// the parent's, e.g. the actor's root scope for a parent-side open_context body whose
    /// parent is the caller's own scope (so that Actor::cancel() reaches it as an enclosing
    /// cancel, spec §3.5 step 2). If an enclosing scope is already cancelled, this one starts
    /// cancelled.
    explicit CancelScope(CancelScope* parent = nullptr, CancelScope* also_in = nullptr);
    CancelScope(const CancelScope&) = delete;
    CancelScope& operator=(const CancelScope&) = delete;
    /// Precondition: not entered on any thread (aborts otherwise). Nested scopes may outlive it:
    /// their link to it shares the stop state, never this object.
    ~CancelScope();

    /// Cancels this scope and, synchronously on the calling thread, every nested scope and
    /// every stop-callback registered on their tokens. The first call records `canceller` and
    /// `reason` (later calls keep them, spec §3.1 step 2: "if the ctx has no canceller yet").
    /// Returns true for that first call. Must not be called on a thread marked with
    /// NonBlockingThreadMark (the control loop): post it to the CancellerThread.
    bool cancel(std::optional<Uid> canceller = std::nullopt, std::string reason = {});

    /// The part of cancel() that runs no stop-callback, so any thread may call it, the control
    /// loop included: records `canceller` and `reason` (first call wins), sets cancel_called(),
    /// and makes cancelled() true for checkpoints of this scope itself at once. Nested scopes,
    /// stop tokens and blocked waits learn it only from the cancel() that must follow (posted
    /// to the CancellerThread). A context's own waits are woken by the context (it bumps its
    /// event counter after this), so a cancel request reaches a task blocked in the context
    /// without the hop through the canceller thread. Returns true for the first call.
    bool request(std::optional<Uid> canceller = std::nullopt, std::string reason = {});

    /// cancel() was called on this scope itself (not only on an enclosing one); trio's
    /// `cancel_called`.
    bool cancel_called() const noexcept {
        // [scope.called] pairs with [scope.called] in cancel(): canceller and reason are
        // written before it.
        return cancel_called_.load(std::memory_order::acquire);
    }
    /// This scope or an enclosing one was cancelled: what checkpoints inside it observe.
    bool cancelled() const noexcept {
        // [scope.requested] pairs with the release in request(): cancel_called_ and the
        // canceller are visible too.
        return requested_.load(std::memory_order::acquire) || source_.stop_requested();
    }
    /// An enclosing scope (parent or also_in, or one enclosing them) was cancelled.
    bool enclosing_cancelled() const noexcept {
        return parent_token_.stop_requested() || also_token_.stop_requested();
    }
    /// A Cancelled for this scope unwound its body and was absorbed at its boundary.
    bool cancelled_caught() const noexcept {
        // [scope.caught] pairs with [scope.caught] in absorb().
        return cancelled_caught_.load(std::memory_order::acquire);
    }
    /// Who called cancel() first (nullopt if nobody, or if they did not say).
    std::optional<Uid> canceller() const;
    /// The reason given with the first cancel() ("" if none).
    std::string reason() const;

    /// Fires when this scope or any enclosing scope is cancelled. Pass it to every blocking
    /// wait inside the scope (Waiter::wait, condition_variable_any::wait).
    std::stop_token stop_token() const noexcept { return source_.get_token(); }
    /// request() ran but cancel() did not yet: the stop-callbacks are still owed. A thread that
    /// learns of the request in a wait it was woken from completes it with cancel().
    /// Sequentially consistent: see ContextState::cancel_scope_soon() (the waiter's flag and
    /// this one are a store-buffering pair).
    bool cancel_pending() const noexcept {
        return requested_.load(std::memory_order::seq_cst) && !source_.stop_requested();
    }
    /// The scope this one is nested in (identity only; nullptr for a root scope).
    const CancelScope* parent() const noexcept { return parent_; }

    /// Whether a Cancelled unwinding this scope's boundary stops here: cancel() was called on
    /// this scope and no enclosing scope is cancelled (an enclosing cancel wins, trio's rule).
    bool absorbs_cancelled() const noexcept { return cancel_called() && !enclosing_cancelled(); }
    /// Marks cancelled_caught; called by the boundary that absorbed a Cancelled.
    void absorb() noexcept {
        // [scope.caught] pairs with [scope.caught] in cancelled_caught().
        cancelled_caught_.store(true, std::memory_order::release);
    }

private:
    friend class ScopeEntry;

    // The nested scope's link: requests this scope's stop when the parent's token fires.
    struct Forward {
        std::stop_source* target;
        void operator()() const noexcept { target->request_stop(); }
    };

    const CancelScope* parent_;
    // Empty tokens when there is no such scope: stop_requested() is then always false.
    std::stop_token parent_token_;
    std::stop_token also_token_;
    std::stop_source source_;
    // Declared after source_ so that they are destroyed first: deregistering waits for a
    // callback that is running on a cancelling thread, which then no longer touches source_.
    std::optional<std::stop_callback<Forward>> parent_link_;
    std::optional<std::stop_callback<Forward>> also_link_;
    std::atomic<bool> cancel_called_{false};
    std::atomic<bool> requested_{false};  // [scope.requested] request() (or cancel()) ran
    std::atomic<bool> cancelled_caught_{false};
    // Threads that currently have this scope entered; checked by the destructor.
    std::atomic<int> entered_{0};
    mutable std::mutex mutex_;  // guards canceller_ and reason_ (cold: cancel and diagnostics)
    std::optional<Uid> canceller_;
    std::string reason_;
};

/// Enters a scope on the calling thread for its lifetime (RAII; strictly LIFO). While entered
/// the scope is the thread's innermost scope, seen by checkpoint(), current_stop_token() and
/// sleep_for(). Precondition: if the thread already has an innermost scope, `scope` is nested
/// directly in it (its parent), so that a checkpoint sees every enclosing scope; entering any
/// other scope aborts with a message (it would silently shield the thread from the skipped
/// scopes). Thread-safety: single thread (the one that constructed it).
class ScopeEntry {
public:
    explicit ScopeEntry(CancelScope& scope);
    ScopeEntry(const ScopeEntry&) = delete;
    ScopeEntry& operator=(const ScopeEntry&) = delete;
    ~ScopeEntry();

    CancelScope& scope() const noexcept { return scope_; }
    /// A Cancelled was raised (through throw_cancelled) while this entry was on the stack and
    /// its scope was cancelled.
    bool delivered() const noexcept { return delivered_; }
    /// The real error a Cancelled raised inside this entry masked: the exception its handler was
    /// handling when a checkpoint threw (a cleanup `catch (...) { checkpoint(); throw; }`).
    /// The boundary raises it instead of the Cancelled (spec §3.2: a real error beats
    /// cancellation). Null if none.
    const std::exception_ptr& masked() const noexcept { return masked_; }

    /// The calling thread's innermost entry, or nullptr.
    static ScopeEntry* innermost() noexcept { return innermost_; }

private:
    friend void throw_cancelled();

    CancelScope& scope_;
    ScopeEntry* const outer_;
    bool delivered_ = false;     // written and read by the owning thread only
    std::exception_ptr masked_;  // as delivered_
    // constinit: no dynamic initialisation, so access from other translation units needs no
    // TLS wrapper call (checkpoint() is on hot paths).
    static constinit thread_local ScopeEntry* innermost_;
};

/// The calling thread's innermost entered scope, or nullptr.
inline CancelScope* current_scope() noexcept {
    ScopeEntry* e = ScopeEntry::innermost();
    return e != nullptr ? &e->scope() : nullptr;
}

/// The innermost scope's stop token (fires on any enclosing cancel); an empty token, which never
/// fires, on a thread outside every scope.
inline std::stop_token current_stop_token() noexcept {
    ScopeEntry* e = ScopeEntry::innermost();
    return e != nullptr ? e->scope().stop_token() : std::stop_token{};
}

/// Whether the calling thread's innermost scope chain is cancelled (no throw).
inline bool current_cancelled() noexcept {
    ScopeEntry* e = ScopeEntry::innermost();
    return e != nullptr && e->scope().cancelled();
}

/// Throws shmctx::Cancelled, first recording the delivery on each scope entry of the calling
/// thread whose scope is cancelled at that moment (ScopeEntry::delivered). Every library path
/// that raises Cancelled uses it.
[[noreturn]] void throw_cancelled();

/// Throws Cancelled if the calling thread's innermost scope chain is cancelled. Hot path: a TLS
/// read and one acquire load (std::stop_token::stop_requested) when not cancelled.
inline void checkpoint() {
    if (current_cancelled()) [[unlikely]] {
        throw_cancelled();
    }
}

/// Sleeps for `d`, waking early and throwing Cancelled when the innermost scope chain is
/// cancelled (before or during the sleep). Outside every scope it is a plain sleep.
void sleep_for(Duration d);
/// Sleeps for `d` or until `token` fires, whichever comes first; checks nothing and throws
/// nothing of its own. An infinite `d` needs a token that can fire.
void sleep_until_stopped(Duration d, const std::stop_token& token);

/// How a run_in_scope body left its scope.
enum class ScopeExit : std::uint8_t {
    completed,            ///< returned, and no Cancelled was raised inside while cancelled
    cancelled_caught,     ///< a Cancelled for this scope unwound the body and was absorbed
    cancelled_swallowed,  ///< the body caught a Cancelled for this scope and returned anyway:
                          ///< still treated as cancelled (its value is discarded)
};

template <class R>
struct ScopeResult {
    ScopeExit exit = ScopeExit::completed;
    std::optional<R> value;  ///< set iff exit == completed
    bool cancelled() const noexcept { return exit != ScopeExit::completed; }
};
template <>
struct ScopeResult<void> {
    ScopeExit exit = ScopeExit::completed;
    bool cancelled() const noexcept { return exit != ScopeExit::completed; }
};

/// Runs `fn()` with `scope` entered on the calling thread, and applies the boundary rules:
/// - a Cancelled that `scope` absorbs (its own cancel, no enclosing cancel) stops here:
///   cancelled_caught is set and the result says so;
/// - a Cancelled caused by an enclosing scope (or not by any scope: thrown by hand) propagates;
/// - a body that swallowed a Cancelled raised while the scope was cancelled and then returned is
///   treated as cancelled: `cancelled_swallowed` for our own cancel, a fresh Cancelled for an
///   enclosing one (so the enclosing boundary still sees it);
/// - a body that returns before observing a cancel that raced with its return has `completed`
///   (spec §3.2 "race with return": the value wins);
/// - every other exception propagates unchanged (a real error beats cancellation), and so does
///   a real error that a Cancelled masked (raised while the body was handling it).
template <class F>
auto run_in_scope(CancelScope& scope, F&& fn) -> ScopeResult<std::invoke_result_t<F&>> {
    using R = std::invoke_result_t<F&>;
    ScopeResult<R> result;
    ScopeEntry entry(scope);
    try {
        if constexpr (std::is_void_v<R>) {
            fn();
        } else {
            result.value.emplace(fn());
        }
    } catch (const Cancelled&) {
        // A Cancelled raised while a real error was being handled inside would mask it: the
        // real error leaves the scope instead (spec §3.2), whoever cancelled.
        if (entry.masked()) std::rethrow_exception(entry.masked());
        if (!scope.absorbs_cancelled()) throw;
        scope.absorb();
        result.exit = ScopeExit::cancelled_caught;
        if constexpr (!std::is_void_v<R>) result.value.reset();
        return result;
    }
    if (entry.delivered() && scope.cancelled()) {
        if (!scope.absorbs_cancelled()) throw_cancelled();
        result.exit = ScopeExit::cancelled_swallowed;
        if constexpr (!std::is_void_v<R>) result.value.reset();
    }
    return result;
}

/// Marks the calling thread, for its lifetime, as one that must never run stop-callbacks or
/// block (the control loop, DESIGN.md §3): CancelScope::cancel() on it aborts with a message.
/// Thread-safety: single thread.
class NonBlockingThreadMark {
public:
    NonBlockingThreadMark() noexcept;
    NonBlockingThreadMark(const NonBlockingThreadMark&) = delete;
    NonBlockingThreadMark& operator=(const NonBlockingThreadMark&) = delete;
    ~NonBlockingThreadMark();
    /// Whether the calling thread is marked.
    static bool active() noexcept;

private:
    bool was_;
};

}  // namespace shmctx::detail
