// Local fan-out of a stream (include/shmctx/subscription.hpp; docs/protocol.md "Subscriptions").
//
// The hub is a ring of the latest `capacity` messages, numbered by stream sequence: message s
// lives in ring_[s % capacity] while tail_ - capacity <= s < tail_. Each Subscription keeps its
// own cursor (the next sequence number it reads) in its own object, touched only by its thread;
// the hub's fields are guarded by mu_.
//
// Pulling: a subscriber with nothing left to read and no puller present sets pulling_, releases
// mu_ and receives from the stream (ContextState::receive, which allows one receiving thread at
// a time: pulling_ serialises the pullers, and mu_ orders each puller after the previous one).
// It then appends what it got, or records the context's error in end_, clears pulling_ and
// notifies cv_. The stream's end (EndOfChannel) is not recorded: each subscriber that reaches
// it pulls again and gets it from the stream itself, so that, exactly as for a direct receiver,
// an error recorded after the end (an endpoint that failed: its stream's Stop precedes its
// Error) is raised by the calls after the first EndOfChannel. Meanwhile the others read what is
// buffered, or wait on cv_ for "tail_ moved, end_ set, or the puller left" (a puller whose deadline
// passed or whose scope was cancelled leaves without a message: a waiter then takes its place).
#include "shmctx/subscription.hpp"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "core/cancel_scope.hpp"
#include "core/context_state.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"

namespace shmctx {
namespace detail {

/// The fan-out hub of one stream. Thread-safety: thread-safe (mu_); a cursor passed by
/// reference belongs to the calling Subscription's thread.
class SubscriptionHub {
public:
    SubscriptionHub(std::shared_ptr<ContextState> state, std::size_t capacity)
        : state_(std::move(state)), capacity_(capacity), ring_(capacity) {}
    SubscriptionHub(const SubscriptionHub&) = delete;
    SubscriptionHub& operator=(const SubscriptionHub&) = delete;
    ~SubscriptionHub() = default;

    std::size_t capacity() const noexcept { return capacity_; }

    /// A new subscriber's cursor: the next message to arrive.
    std::uint64_t join() {
        const Lock lock(mu_);
        return tail_;
    }

    /// Subscription::receive(): the next message after `next` (advanced), nullopt once
    /// `deadline` passed. Throws Lagged (`next` moved to the oldest buffered message, `lost`
    /// grown), the recorded end, or Cancelled.
    std::optional<Payload> receive(std::uint64_t& next, std::uint64_t& lost, Deadline deadline);

    /// Subscription::try_receive(): one non-blocking look, pulling from the stream without
    /// waiting if nobody else is.
    RecvStatus try_receive(std::uint64_t& next, std::uint64_t& lost, Payload& out);

    std::size_t pending(std::uint64_t next) const {
        const Lock lock(mu_);
        return static_cast<std::size_t>(tail_ - std::max(next, oldest_locked()));
    }

private:
    using Lock = std::unique_lock<std::mutex>;
    enum class Take : std::uint8_t { message, lagged, end, none };
    /// Messages taken from the stream in one pull, at most (bounds the time the first of them
    /// waits for the copies of the others).
    static constexpr std::size_t kMaxBatch = 32;

    std::uint64_t oldest_locked() const noexcept {
        return tail_ > capacity_ ? tail_ - capacity_ : 0;
    }
    /// What a subscriber at `next` gets now: the message at `next` (`out`), the count it lost
    /// (`missed`; `next` moved to the oldest buffered), the end (`end`), or nothing yet.
    Take take_locked(std::uint64_t& next, std::uint64_t& missed,
                     std::shared_ptr<const Payload>& out, std::exception_ptr& end) const;
    /// Receives from the stream as the puller (pulling_ set by the caller, mu_ not held) and
    /// publishes what it got; clears pulling_ in every case. Returns the stream's EndOfChannel
    /// if it raised one (after the messages it published); rethrows Cancelled.
    std::exception_ptr pull(Deadline deadline);
    void publish(std::vector<std::shared_ptr<const Payload>>& batch, std::exception_ptr error);

    const std::shared_ptr<ContextState> state_;
    const std::size_t capacity_;

    mutable std::mutex mu_;
    std::condition_variable_any cv_;  // tail_, end_ or pulling_ changed (notified after unlock)
    // Guarded by mu_.
    std::vector<std::shared_ptr<const Payload>> ring_;
    std::uint64_t tail_ = 0;  // messages appended so far (the next one's sequence number)
    std::exception_ptr end_;  // the context's error, after message tail_ - 1
    bool pulling_ = false;    // a subscriber is receiving from the stream
    std::vector<std::shared_ptr<const Payload>> scratch_;  // the puller's batch (puller only)
};

SubscriptionHub::Take SubscriptionHub::take_locked(std::uint64_t& next, std::uint64_t& missed,
                                                   std::shared_ptr<const Payload>& out,
                                                   std::exception_ptr& end) const {
    const std::uint64_t oldest = oldest_locked();
    if (next < oldest) {
        missed = oldest - next;
        next = oldest;
        return Take::lagged;
    }
    if (next < tail_) {
        out = ring_[static_cast<std::size_t>(next % capacity_)];
        return Take::message;
    }
    if (end_) {
        end = end_;
        return Take::end;
    }
    return Take::none;
}

void SubscriptionHub::publish(std::vector<std::shared_ptr<const Payload>>& batch,
                              std::exception_ptr error) {
    {
        const Lock lock(mu_);
        for (auto& p : batch) {
            ring_[static_cast<std::size_t>(tail_ % capacity_)] = std::move(p);
            ++tail_;
        }
        if (error && !end_) end_ = std::move(error);
        // Before pulling_ is cleared: the next puller reuses the batch (scratch_).
        batch.clear();
        pulling_ = false;
    }
    cv_.notify_all();
}

std::exception_ptr SubscriptionHub::pull(Deadline deadline) {
    // scratch_ is the puller's alone: pulling_ was set under mu_, which orders us after the
    // previous puller's publish().
    std::vector<std::shared_ptr<const Payload>>& batch = scratch_;
    std::exception_ptr error;
    std::exception_ptr eoc;
    try {
        std::optional<Message> msg = state_->receive(deadline, true);
        // Whatever else is waiting in the stream, without blocking: an expired deadline makes
        // ContextState::receive poll once.
        const Deadline now_only{Clock::time_point{}};
        while (msg) {
            batch.push_back(std::make_shared<const Payload>(msg->to_payload()));
            if (batch.size() >= std::min(kMaxBatch, capacity_)) break;
            msg = state_->receive(now_only, true);
        }
    } catch (const Cancelled&) {
        // Our own scope's cancellation while waiting: not the stream's end. Hand over what we
        // got (nothing: only the blocking wait raises it) and let another subscriber pull.
        publish(batch, nullptr);
        throw;
    } catch (const EndOfChannel&) {
        eoc = std::current_exception();  // not recorded: see the file comment
    } catch (...) {
        // The context's error, or a failed copy: the message could not be kept, so the stream
        // is broken for every subscriber (never silently short).
        error = std::current_exception();
    }
    publish(batch, std::move(error));
    return eoc;
}

std::optional<Payload> SubscriptionHub::receive(std::uint64_t& next, std::uint64_t& lost,
                                                Deadline deadline) {
    const std::stop_token stop = current_stop_token();
    bool pulled = false;
    std::exception_ptr eoc;  // the stream's end, seen by our own pull
    Lock lock(mu_);
    for (;;) {
        std::uint64_t missed = 0;
        std::shared_ptr<const Payload> msg;
        std::exception_ptr end;
        switch (take_locked(next, missed, msg, end)) {
            case Take::message: {
                lock.unlock();
                Payload copy(*msg);
                ++next;  // after the copy: a failed copy loses nothing
                return copy;
            }
            case Take::lagged:
                lost += missed;
                lock.unlock();
                throw Lagged(missed);
            case Take::end:
                lock.unlock();
                std::rethrow_exception(end);
            case Take::none:
                break;
        }
        if (eoc) {
            lock.unlock();
            std::rethrow_exception(eoc);
        }
        if (!pulling_) {
            // One pull even when the deadline has passed (receive_for(0) still looks).
            if (pulled && deadline.expired()) return std::nullopt;
            pulling_ = true;
            pulled = true;
            lock.unlock();
            eoc = pull(deadline);
            lock.lock();
            continue;
        }
        if (deadline.expired()) return std::nullopt;
        const std::uint64_t seen = tail_;
        const auto changed = [&] { return tail_ != seen || end_ || !pulling_; };
        const bool ready = deadline.is_infinite()
                               ? cv_.wait(lock, stop, changed)
                               : cv_.wait_until(lock, stop, deadline.at(), changed);
        if (!ready && stop.stop_requested()) {
            lock.unlock();
            throw_cancelled();
        }
    }
}

RecvStatus SubscriptionHub::try_receive(std::uint64_t& next, std::uint64_t& lost, Payload& out) {
    std::exception_ptr eoc;
    Lock lock(mu_);
    for (int attempt = 0;; ++attempt) {
        std::uint64_t missed = 0;
        std::shared_ptr<const Payload> msg;
        std::exception_ptr end;
        switch (take_locked(next, missed, msg, end)) {
            case Take::message:
                lock.unlock();
                out = *msg;
                ++next;
                return RecvStatus::ok;
            case Take::lagged:
                lost += missed;
                return RecvStatus::lagged;
            case Take::end:
                return RecvStatus::peer_error;
            case Take::none:
                break;
        }
        if (eoc) return RecvStatus::end_of_channel;
        if (pulling_ || attempt > 0) return RecvStatus::empty;
        pulling_ = true;
        lock.unlock();
        // An expired deadline: ContextState::receive polls once and never waits, so it never
        // raises Cancelled either.
        eoc = pull(Deadline{Clock::time_point{}});
        lock.lock();
    }
}

}  // namespace detail

// ---- MsgStream::subscribe ----

Subscription MsgStream::subscribe(SubscribeOptions options) {
    (void)state("MsgStream::subscribe");  // InvalidOperation on a moved-from stream
    if (options.capacity == 0) {
        throw std::invalid_argument("MsgStream::subscribe: capacity must be at least 1");
    }
    // [sub.hub] pairs with [sub.hub] below and in check_not_subscribed(): the hub is complete
    // before its holder is published.
    std::shared_ptr<detail::SubscriptionHub>* holder = hub_.load(std::memory_order::acquire);
    if (holder == nullptr) {
        auto fresh = std::make_unique<std::shared_ptr<detail::SubscriptionHub>>(
            std::make_shared<detail::SubscriptionHub>(state_, options.capacity));
        std::shared_ptr<detail::SubscriptionHub>* expected = nullptr;
        // [sub.hub] release publishes our hub; acquire (on failure) reads the winner's.
        if (hub_.compare_exchange_strong(expected, fresh.get(), std::memory_order::acq_rel,
                                         std::memory_order::acquire)) {
            holder = fresh.release();
        } else {
            holder = expected;  // another thread's first subscribe() won; ours is dropped
        }
    }
    // The holder's shared_ptr is never written after publication: copying it is a read.
    std::shared_ptr<detail::SubscriptionHub> hub = *holder;
    const std::uint64_t next = hub->join();
    return Subscription(std::move(hub), next);
}

// ---- Subscription ----

Subscription::Subscription(std::shared_ptr<detail::SubscriptionHub> hub,
                           std::uint64_t next) noexcept
    : hub_(std::move(hub)), next_(next) {}

Subscription::Subscription(Subscription&& other) noexcept = default;
Subscription& Subscription::operator=(Subscription&& other) noexcept = default;
Subscription::~Subscription() = default;

detail::SubscriptionHub& Subscription::hub() const {
    if (!hub_) throw InvalidOperation("use of a moved-from Subscription");
    return *hub_;
}

Payload Subscription::receive() { return *hub().receive(next_, lost_, Deadline::never()); }

std::optional<Payload> Subscription::receive_for(Duration timeout) {
    return hub().receive(next_, lost_, Deadline(timeout));
}

RecvStatus Subscription::try_receive(Payload& out) noexcept {
    if (!hub_) return RecvStatus::peer_error;
    try {
        return hub_->try_receive(next_, lost_, out);
    } catch (...) {
        // Only a failed copy into `out` (out of memory) gets here; the message stays unread.
        return RecvStatus::peer_error;
    }
}

std::size_t Subscription::pending() const { return hub().pending(next_); }

std::size_t Subscription::capacity() const { return hub().capacity(); }

Subscription::iterator& Subscription::iterator::operator++() {
    try {
        current_ = sub_->receive();
    } catch (const EndOfChannel&) {
        sub_ = nullptr;
    }
    return *this;
}

}  // namespace shmctx
