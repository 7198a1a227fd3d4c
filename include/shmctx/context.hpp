// Contexts and their streams (DESIGN.md §4, §5; tractor spec §2, §3).
//
// A Context is one linked task pair: the parent's `Portal::open_context` block and the child's
// endpoint. Each side holds its own Context; both are handles onto one shared state, so a
// handle taken with `handle()` stays queryable after the block ended. A context streams at most
// once (`open_stream`), in both directions, over per-direction data rings carved lazily by the
// sender; terminals (Stop, Return, Error) travel on the link's control ring and surface to the
// stream only after the data sent before them (`data_seq`).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string_view>
#include <type_traits>

#include "shmctx/deadline.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/ids.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/ring.hpp"

namespace shmctx {

class Message;

class Poller;

namespace detail {
class ContextState;
class StreamState;
class SubscriptionHub;
/// A non-owning reference to a fill callable: writes a payload into the span it gets and
/// returns the bytes used.
struct FillRef {
    void* object;
    std::size_t (*call)(void* object, std::span<std::byte> buffer);
    std::size_t operator()(std::span<std::byte> buffer) const { return call(object, buffer); }
    /// What `call` returns when the callable threw: the message is abandoned, not sent.
    static constexpr std::size_t kAbandoned = static_cast<std::size_t>(-1);
};
/// A non-owning reference to a callable taking `const Message&`.
struct MessageSink {
    void* object;
    void (*call)(void* object, const Message& message);
    void operator()(const Message& message) const { call(object, message); }
};
}  // namespace detail

class Subscription;  // shmctx/subscription.hpp (included at the end of this header)

/// Context states (tractor spec §2.6); `to_string` gives tractor's names.
enum class State : std::uint8_t {
    pre_started,         ///< child side, before started()
    syncing_to_child,    ///< parent side, waiting for Started
    started,             ///< started() done, no stream yet
    streaming,           ///< a stream is open
    streaming_finished,  ///< the stream was closed (locally or by the peer's Stop)
    result_returned,     ///< the final result is set
    self_cancelled,      ///< our own cancel() was acknowledged by the peer's ctxc
    peer_cancelled,      ///< a ctxc arrived that we did not request
    actor_cancelled,     ///< our task was cancelled with a canceller set
    errored,             ///< any other error
};
/// "pre-started", "syncing-to-child", ..., "errored".
std::string_view to_string(State s) noexcept;

/// The final outcome of a context: a value, or an error (which may be an absorbed self-cancel,
/// spec §2.5: "returned, not raised"). Thread-safety: value type.
class Outcome {
public:
    Outcome() = default;
    static Outcome of_value(Payload value) {
        Outcome o;
        o.value_ = std::move(value);
        return o;
    }
    static Outcome of_error(std::exception_ptr error, bool absorbed_cancel) {
        Outcome o;
        o.error_ = std::move(error);
        o.absorbed_cancel_ = absorbed_cancel;
        return o;
    }
    /// A value, not an error (false also while unresolved).
    bool has_value() const noexcept { return value_.has_value() && !error_; }
    /// Resolved: a value or an error.
    bool resolved() const noexcept { return value_.has_value() || error_ != nullptr; }
    /// The value; rethrows the error (the same object every time); std::logic_error when
    /// unresolved.
    const Payload& value() const;
    std::exception_ptr error() const noexcept { return error_; }
    /// The error is our own cancel's ContextCancelled, absorbed (spec §3.3).
    bool is_absorbed_cancel() const noexcept { return absorbed_cancel_; }
    void rethrow_if_error() const {
        if (error_) std::rethrow_exception(error_);
    }

private:
    std::optional<Payload> value_;
    std::exception_ptr error_;
    bool absorbed_cancel_ = false;
};

/// What send() does when the receiver's ring is full and the receiver does not allow overruns
/// (DESIGN.md §4.2).
enum class OnFull : std::uint8_t {
    raise,  ///< StreamOverrun at once (tractor parity); the message is not sent
    block,  ///< wait for space, cancellably, up to StreamOptions::block_timeout
};

/// Per-stream settings (DESIGN.md §4.1, §4.2, §4.9). `allow_overruns`, `msg_buffer_size` and
/// `copy_on_receive` describe *our inbound* direction; `on_full`, `block_timeout` and the spill
/// caps our sending.
struct StreamOptions {
    /// Overwrites the context's declaration for our inbound ring ("the peer may overrun me: it
    /// spills instead of failing"); unset keeps it.
    std::optional<bool> allow_overruns;
    /// Resizes our inbound ring's message capacity in place; 0 keeps it.
    std::uint32_t msg_buffer_size = 0;
    /// Our send() into a full ring of a receiver that does not allow overruns.
    OnFull on_full = OnFull::raise;
    /// on_full = block: StreamOverrun (limit block_timeout) after this; unset waits until space,
    /// the peer's end or cancellation.
    std::optional<Duration> block_timeout;
    /// Our spill (receiver allows overruns) holds at most this many messages / payload bytes
    /// now; past either, on_full applies (limit spill_cap).
    std::uint64_t spill_cap_msgs = std::uint64_t{1} << 20;
    std::uint64_t spill_cap_bytes = std::uint64_t{256} << 20;
    /// receive() returns messages copied out of the ring (valid after the next receive; the
    /// ring slot is freed at once) instead of zero-copy views.
    bool copy_on_receive = false;
    /// How long receive(), drain() and a send() blocked on a full ring watch the ring, busy
    /// (pause instructions, no yield), before they sleep on a futex; unset: the actor's
    /// ActorOptions::spin_before_sleep. While a reader watches, its sender pays no wake-up
    /// check per message. Duration::max(): never sleep, for a thread on a core of its own
    /// (the actor's own threads keep the actor's setting). Not negative (InvalidOperation).
    std::optional<Duration> spin_before_sleep;
};

/// What try_send did. Never an exception; `send` turns the failures into errors.
enum class [[nodiscard]] SendStatus : std::uint8_t{
    ok,            ///< written to the peer's inbound ring
    spilled,       ///< queued in our spill (the receiver allows overruns); delivered in order
    full,          ///< the ring (or our spill) is full; on_full was not applied
    peer_stopped,  ///< the peer closed its side (Stop or consumer_closed): EndOfChannel
    closed,        ///< our stream is closed
    cancelled,     ///< our scope is cancelled
    too_large,     ///< the message exceeds the ring's record limit (max_message_bytes())
    peer_error,    ///< the context failed (remote error or transport loss)
};
std::string_view to_string(SendStatus s) noexcept;

/// What try_receive did.
enum class [[nodiscard]] RecvStatus : std::uint8_t{
    ok,              ///< a message was returned
    empty,           ///< nothing yet
    end_of_channel,  ///< the stream ended: no more messages will come
    peer_error,      ///< the context failed: receive() raises the error
    lagged,          ///< Subscription only: messages were lost to lag (see Subscription::lost())
};
std::string_view to_string(RecvStatus s) noexcept;

/// A received message: a zero-copy view into the inbound ring, valid until the next receive
/// on its stream (or the stream's end). `to_payload()` copies it out.
/// Thread-safety: value type, bound to the receiving thread's use of the stream.
class Message {
public:
    Message() = default;
    PayloadView view() const noexcept { return view_; }
    PayloadKind kind() const noexcept { return view_.kind(); }
    std::span<const std::byte> bytes() const noexcept { return view_.bytes(); }
    /// Text payloads.
    std::string_view text() const noexcept {
        return {reinterpret_cast<const char*>(view_.bytes().data()), view_.bytes().size()};
    }
    /// The verified root of FlatBuffer T, pointing into the message; accepts what
    /// Payload::as<T>() accepts (kind flatbuffer, or bytes: send_with's default). DecodeError
    /// for another kind, a wrong file identifier or a failed verification.
    template <class T>
    const T* as() const {
        const PayloadKind kind = view_.kind();
        if (kind != PayloadKind::flatbuffer && kind != PayloadKind::bytes) {
            throw_not_flatbuffer(kind);
        }
        return verified_root<T>(view_.bytes());
    }
    /// A FlexBuffers scalar or string (Payload::value<T>()); copies. Not std::string_view: it
    /// would view the temporary copy (use std::string, or to_payload() kept alive).
    template <class T>
    T value() const {
        static_assert(!std::is_same_v<T, std::string_view>,
                      "Message::value<std::string_view>() would dangle: use std::string");
        return to_payload().value<T>();
    }
    Payload to_payload() const { return Payload::copy(view_); }
    /// The message owns its bytes (StreamOptions::copy_on_receive): valid as long as it lives.
    bool owned() const noexcept { return owned_ != nullptr; }

private:
    friend class MsgStream;
    friend class detail::ContextState;
    explicit Message(PayloadView view) noexcept : view_(view) {}
    explicit Message(std::shared_ptr<const Payload> owned) noexcept
        : owned_(std::move(owned)), view_(owned_->view()) {}
    [[noreturn]] static void throw_not_flatbuffer(PayloadKind kind);
    std::shared_ptr<const Payload> owned_;  // copy_on_receive only
    PayloadView view_;
};

/// MsgStream::subscribe() settings (shmctx/subscription.hpp).
struct SubscribeOptions {
    /// How many of the latest messages the stream's fan-out buffer keeps (at least 1): a
    /// subscriber more than this many messages behind loses the oldest ones (Lagged). Only the
    /// first subscribe() of a stream sizes the buffer; later calls join it and ignore this.
    std::size_t capacity = 1024;
};

/// One context's bidirectional stream. One-shot (a second open_stream() raises
/// ClosedResourceError). The destructor closes it (sends Stop). Move-only: a moved-from stream
/// raises InvalidOperation naming the member from every call that may throw, its try_* calls
/// return peer_error, closed() is true and max_message_bytes() 0; assigning to it revives it.
/// Thread-safety: one sending and one receiving thread at a time; closed() from either;
/// close() from the sending thread, or from the receiving thread while no send() runs (the
/// Stop it sends counts the records sent before it; a close() racing a send() on another
/// thread could count one record too few). subscribe() from any thread (see there).
class MsgStream {
public:
    MsgStream(MsgStream&& other) noexcept;
    MsgStream& operator=(MsgStream&& other) noexcept;
    MsgStream(const MsgStream&) = delete;
    MsgStream& operator=(const MsgStream&) = delete;
    ~MsgStream();

    /// Sends one message. Raises, in this order: the context's remote error (our own
    /// acknowledged cancel is absorbed); the link's loss (TransportClosed, PeerDied,
    /// PeerUnresponsive, ProtocolError); EndOfChannel after our close or the peer's Stop or
    /// Return; shmctx::Cancelled when our scope is cancelled; ShmExhausted when the first send
    /// cannot carve its ring; PayloadTooLarge over a quarter of the data ring; EndOfChannel when
    /// the receiver closed its ring, ProtocolError when it corrupted it (the link fails too);
    /// StreamOverrun when the receiver's ring is full and it declared no overruns (or the spill
    /// cap or block timeout is reached). docs/semantics.md lists each condition.
    void send(PayloadView message);
    /// Sends `messages` in order, as send() would each, but publishes the ones written straight
    /// into the ring together: one tail store (and one wake check) per call instead of one per
    /// message, so a receiver that keeps up no longer pulls the ring's tail line away from us
    /// after every message (bench/README.md §3).
    /// Before it waits for room, spills or raises, what it wrote is published. The errors are
    /// send()'s, for the first message not sent; the ones before it were sent (and are
    /// visible to the receiver). An empty span does nothing.
    void send_many(std::span<const PayloadView> messages);
    /// Never blocks or throws: ok, spilled (queued behind earlier ones for a receiver that
    /// allows overruns), or why not (on_full is not applied: `full` instead).
    SendStatus try_send(PayloadView message) noexcept;
    /// Builds the message in place (no copy on the direct path): `fill(std::span<std::byte>)`
    /// gets `max_bytes` of space (in the ring, or in a spill buffer) and returns the bytes it
    /// used (at most `max_bytes`). Statuses as try_send (fill is not called when the status is
    /// not ok/spilled); if fill throws, the message is abandoned and the exception propagates.
    template <class Fill>
    SendStatus try_send_with(std::size_t max_bytes, Fill&& fill,
                             PayloadKind kind = PayloadKind::bytes) {
        return send_filled(max_bytes, std::forward<Fill>(fill), kind, false);
    }
    /// As try_send_with, with send()'s errors and on_full.
    template <class Fill>
    void send_with(std::size_t max_bytes, Fill&& fill, PayloadKind kind = PayloadKind::bytes) {
        (void)send_filled(max_bytes, std::forward<Fill>(fill), kind, true);
    }
    /// The next message, waiting for it (cancellably: the caller's cancel scope).
    /// EndOfChannel once the peer's Stop (after all its earlier data) or our close ended it;
    /// the context's remote error as soon as it is recorded.
    Message receive();
    /// As receive(), but nullopt after `timeout` without a message.
    std::optional<Message> receive_for(Duration timeout);
    /// Never blocks; on `peer_error` call receive() to get the error.
    RecvStatus try_receive(Message& out) noexcept;
    /// Batch read: waits for the first message as receive() does (same errors, EndOfChannel at
    /// the end), then calls `f(const Message&)` for it and every message available now, up to
    /// `max`, and releases them together (one head store). Views are valid only inside `f`.
    /// Returns how many `f` got. If `f` throws, the messages up to the one it threw on count as
    /// consumed.
    template <class F>
    std::size_t drain(F&& f, std::size_t max) {
        using Fn = std::remove_reference_t<F>;  // F is a reference for a named callable
        auto thunk = [](void* object, const Message& m) { (*static_cast<Fn*>(object))(m); };
        void* object = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
        return drain_into(detail::MessageSink{object, thunk}, max);
    }
    /// Counters of the ring we send on (zeros before our first send) and of the one we read
    /// (zeros before the peer's first send); the same words `shmctx ls` reads from outside.
    shm::RingCounters outbound_counters() const;
    shm::RingCounters inbound_counters() const;
    /// Sends Stop (idempotent) and ends our receiving: later receive() and send() raise
    /// EndOfChannel. Blocks while our spill is flushed to the receiver first (nothing spilled
    /// is dropped); raises shmctx::Cancelled when our own cancel cut that flush (then no Stop
    /// is sent). The destructor and move assignment close the same way (without raising).
    void close();
    bool closed() const noexcept;
    /// Largest message send() accepts (a quarter of the data ring).
    std::size_t max_message_bytes() const noexcept;

    /// Local fan-out (shmctx/subscription.hpp): a new reader of this stream's inbound messages
    /// that receives, in stream order, every message arriving after this call. The first call
    /// creates the stream's fan-out buffer, which becomes the stream's only receiver: from then
    /// on receive(), receive_for(), drain() and range-for on this MsgStream raise
    /// InvalidOperation and try_receive() returns peer_error; sending is unaffected. Later calls,
    /// from any thread, join the same buffer. The first call must not race a receive on this
    /// MsgStream. std::invalid_argument for a capacity of 0.
    Subscription subscribe(SubscribeOptions options = {});

    /// Range-for over received messages; ends at EndOfChannel without throwing.
    class iterator {
    public:
        using value_type = Message;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        const Message& operator*() const noexcept { return current_; }
        const Message* operator->() const noexcept { return &current_; }
        iterator& operator++();
        void operator++(int) { ++*this; }
        friend bool operator==(const iterator& a, std::default_sentinel_t) noexcept {
            return a.stream_ == nullptr;
        }

    private:
        friend class MsgStream;
        explicit iterator(MsgStream* s) : stream_(s) { ++*this; }
        MsgStream* stream_ = nullptr;
        Message current_;
    };
    iterator begin() { return iterator(this); }
    std::default_sentinel_t end() const noexcept { return {}; }

private:
    friend class Context;
    friend class Poller;
    explicit MsgStream(std::shared_ptr<detail::ContextState> state) noexcept;
    /// The context's state; InvalidOperation naming `member` ("MsgStream::send") on a
    /// moved-from stream.
    detail::ContextState& state(const char* member) const;
    /// InvalidOperation once subscribe() took over receiving.
    void check_not_subscribed() const;
    template <class Fill>
    SendStatus send_filled(std::size_t max_bytes, Fill&& fill, PayloadKind kind, bool raise) {
        struct Closure {
            std::remove_reference_t<Fill>* fill;
            std::exception_ptr error;
        } closure{&fill, nullptr};
        auto thunk = [](void* object, std::span<std::byte> buffer) -> std::size_t {
            auto* c = static_cast<Closure*>(object);
            try {
                return static_cast<std::size_t>((*c->fill)(buffer));
            } catch (...) {
                c->error = std::current_exception();
                return detail::FillRef::kAbandoned;
            }
        };
        const SendStatus status =
            send_fill(max_bytes, kind, detail::FillRef{static_cast<void*>(&closure), thunk}, raise);
        if (closure.error) std::rethrow_exception(closure.error);
        return status;
    }
    SendStatus send_fill(std::size_t max_bytes, PayloadKind kind, detail::FillRef fill, bool raise);
    std::size_t drain_into(detail::MessageSink sink, std::size_t max);
    std::shared_ptr<detail::ContextState> state_;
    // The fan-out hub, set once by the first subscribe() (compare-exchange; the pointee never
    // changes after that) and deleted with the MsgStream.
    std::atomic<std::shared_ptr<detail::SubscriptionHub>*> hub_{nullptr};
};

/// One side of a context. Accessors, cancel() and wait_for_result() may be called from any
/// thread; a copy (`handle()`) stays valid after the block and the endpoint ended.
/// Thread-safety: thread-safe, except that started() and open_stream() belong to the task
/// that runs the context.
class Context {
public:
    Side side() const noexcept;
    const Uid& peer() const noexcept;
    const Cid& cid() const noexcept;
    /// Our own actor.
    const Uid& self() const noexcept;

    /// Child side: hands `value` to the parent's block. Twice, or on the parent side:
    /// InvalidOperation. A value over the control-record cap: PayloadTooLarge.
    void started(PayloadView value = {});
    /// Opens the context's one stream (both sides). Child: after started() (else
    /// InvalidOperation). A second call, or a call on a handle after the context ended:
    /// ClosedResourceError. After our own cancel: the recorded ctxc (spec §3.5), or
    /// InvalidOperation if none is recorded yet.
    MsgStream open_stream(StreamOptions options = {});

    /// Parent: asks the peer to cancel its task and waits up to `deadline` for the ack (logged,
    /// not thrown, on timeout). Child: cancels our own task's scope. Sets cancel_called().
    void cancel(Deadline deadline = std::chrono::milliseconds(616));
    /// Parent: waits for the final outcome (Return or Error), discarding unread stream data;
    /// raises the remote error unless it is our own absorbed cancel (returned in the Outcome).
    Outcome wait_for_result();

    bool cancel_called() const noexcept;
    /// Our cancel() was acknowledged by the peer's ContextCancelled (spec §3.3).
    bool cancel_acked() const;
    /// A Cancelled unwound this side's scope and was absorbed at its boundary.
    bool cancelled_caught() const noexcept;
    std::optional<Uid> canceller() const;
    /// The first Error the peer sent (unboxed once: the same object every time), or null. The
    /// link's loss is not a remote error: maybe_error() reports it.
    std::exception_ptr remote_error() const;
    /// What ended our side: the exception that left the open_context block or the endpoint, or
    /// the error wait_for_result() raised; null if none.
    std::exception_ptr local_error() const;
    /// The error that ended the context: the remote error, else the local error, else the
    /// link-loss error (TransportClosed, PeerDied, ...); null if none.
    std::exception_ptr maybe_error() const;
    /// The remote error's fields, or nullptr.
    const RemoteActorError* remote_error_info() const;
    Outcome outcome() const;
    bool has_outcome() const;
    State state() const;

    /// This side's scope is cancelled (checkpoints inside it throw shmctx::Cancelled).
    bool cancelled() const noexcept;
    /// Throws shmctx::Cancelled if this side's scope (or an enclosing one) is cancelled.
    void checkpoint();
    /// Sleeps for `d`, waking early with shmctx::Cancelled when this side's scope is cancelled
    /// (what checkpoint() checks) or, as every blocking call, the calling thread's own scope
    /// chain (which may be another context's).
    void sleep_for(Duration d);
    /// Fires when this side's scope is cancelled.
    std::stop_token stop_token() const noexcept;

    /// A handle onto the same context, valid after the block ended.
    Context handle() const noexcept { return Context(state_); }

private:
    friend class Portal;
    friend class Actor;
    friend class detail::ContextState;
    explicit Context(std::shared_ptr<detail::ContextState> state) noexcept
        : state_(std::move(state)) {}
    std::shared_ptr<detail::ContextState> state_;
};

}  // namespace shmctx

// Subscription needs the declarations above; it includes this header (a no-op here).
#include "shmctx/subscription.hpp"  // IWYU pragma: export
