// Local fan-out of one stream's inbound messages to several readers in this process
// (MsgStream::subscribe; DESIGN.md §5; docs/protocol.md "Subscriptions").
//
// A broadcast channel in front of the stream: the first subscribe() creates the stream's hub,
// which becomes the stream's only receiver and keeps the latest SubscribeOptions::capacity
// messages as owned copies shared by every subscriber. Each Subscription has its own cursor and
// receives, in stream order, every message that arrived (was taken from the stream by the hub)
// after it subscribed; the very first subscription also gets what was waiting in the stream. A
// subscriber that falls more than `capacity` messages behind loses the oldest ones: its next
// receive raises Lagged (how many it lost) once, then continues with the oldest message still
// buffered. Nothing else is dropped: the stream's end (EndOfChannel) and the context's error
// reach every subscriber after the messages received before them (and the end is followed by
// an error recorded later, as on a MsgStream).
//
// There is no hub thread: a subscriber that finds nothing buffered receives from the stream
// itself (one at a time, in its own cancel scope) and hands what it got to every subscriber;
// the others wait for it, reading what is buffered meanwhile. A buffer slot is freed only when
// it is overwritten, so the hub holds up to `capacity` messages even when everybody read them.
//
// Lifetime: the hub keeps the context's state alive. Destroying the MsgStream closes the stream
// as before (Stop to the peer; messages not yet taken from the stream are discarded): the
// subscribers then read what the hub buffered, then EndOfChannel. Destroying a Subscription
// detaches it only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>

#include "shmctx/context.hpp"
#include "shmctx/deadline.hpp"
#include "shmctx/payload.hpp"

namespace shmctx {

/// One reader of a stream's local fan-out, from MsgStream::subscribe(). Move-only; a moved-from
/// Subscription raises InvalidOperation (try_receive: peer_error).
/// Thread-safety: one thread at a time per Subscription; different Subscriptions of one stream
/// on different threads, concurrently with each other, with subscribe() and with the stream's
/// sends.
class Subscription {
public:
    Subscription(Subscription&& other) noexcept;
    Subscription& operator=(Subscription&& other) noexcept;
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;
    /// Detaches this reader; the other subscribers and the stream are unaffected.
    ~Subscription();

    /// The next message, waiting for it cancellably (the caller's cancel scope raises
    /// Cancelled while it waits; buffered messages are returned first). Raises, after the
    /// messages received before them: Lagged once when this subscriber lost messages (the next
    /// call continues with the oldest one buffered); EndOfChannel once the stream ended (the
    /// peer's Stop, our close, the MsgStream destroyed); the context's error (remote error,
    /// transport loss, a corrupt ring, or running out of memory while copying a message).
    /// Every later call raises the error again, or the end again until an error is recorded
    /// (as MsgStream::receive does: a failing endpoint's Stop precedes its Error).
    Payload receive();
    /// As receive(), but nullopt after `timeout` without a message.
    std::optional<Payload> receive_for(Duration timeout);
    /// Never blocks or throws: `ok` (out set), `empty`, `lagged` (lost() grew; the next call
    /// continues with the oldest message buffered), `end_of_channel`, or `peer_error` (receive()
    /// raises the error).
    RecvStatus try_receive(Payload& out) noexcept;

    /// Messages this subscription lost to lag, in total.
    std::uint64_t lost() const noexcept { return lost_; }
    /// Messages the hub holds that this subscription has not read yet (at most capacity()).
    std::size_t pending() const;
    /// The hub's buffer size (the first subscribe()'s SubscribeOptions::capacity).
    std::size_t capacity() const;

    /// Range-for over received messages; ends at EndOfChannel without throwing. Lagged and
    /// errors propagate out of the loop (a new loop after a Lagged continues).
    class iterator {
    public:
        using value_type = Payload;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        const Payload& operator*() const noexcept { return current_; }
        const Payload* operator->() const noexcept { return &current_; }
        iterator& operator++();
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& a, std::default_sentinel_t) noexcept {
            return a.sub_ == nullptr;
        }

    private:
        friend class Subscription;
        explicit iterator(Subscription* s) : sub_(s) { ++*this; }
        Subscription* sub_ = nullptr;
        Payload current_;
    };
    iterator begin() { return iterator(this); }
    std::default_sentinel_t end() const noexcept { return {}; }

private:
    friend class MsgStream;
    Subscription(std::shared_ptr<detail::SubscriptionHub> hub, std::uint64_t next) noexcept;
    detail::SubscriptionHub& hub() const;

    std::shared_ptr<detail::SubscriptionHub> hub_;
    std::uint64_t next_ = 0;  // stream sequence number of the next message to read
    std::uint64_t lost_ = 0;
};

}  // namespace shmctx
