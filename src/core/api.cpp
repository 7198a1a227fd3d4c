// The public Actor, Portal, Context and MsgStream: thin handles onto ActorCore and ContextState.
#include <exception>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>

#include "core/actor_core.hpp"
#include "core/cancel_scope.hpp"
#include "core/context_state.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"

namespace shmctx {

// ---- names ----

std::string_view to_string(State s) noexcept {
    switch (s) {
        case State::pre_started:
            return "pre-started";
        case State::syncing_to_child:
            return "syncing-to-child";
        case State::started:
            return "started";
        case State::streaming:
            return "streaming";
        case State::streaming_finished:
            return "streaming-finished";
        case State::result_returned:
            return "result-returned";
        case State::self_cancelled:
            return "self-cancelled";
        case State::peer_cancelled:
            return "peer-cancelled";
        case State::actor_cancelled:
            return "actor-cancelled";
        case State::errored:
            return "errored";
    }
    return "unknown";
}

std::string_view to_string(SendStatus s) noexcept {
    switch (s) {
        case SendStatus::ok:
            return "ok";
        case SendStatus::spilled:
            return "spilled";
        case SendStatus::full:
            return "full";
        case SendStatus::peer_stopped:
            return "peer_stopped";
        case SendStatus::closed:
            return "closed";
        case SendStatus::cancelled:
            return "cancelled";
        case SendStatus::too_large:
            return "too_large";
        case SendStatus::peer_error:
            return "peer_error";
    }
    return "unknown";
}

std::string_view to_string(RecvStatus s) noexcept {
    switch (s) {
        case RecvStatus::ok:
            return "ok";
        case RecvStatus::empty:
            return "empty";
        case RecvStatus::end_of_channel:
            return "end_of_channel";
        case RecvStatus::peer_error:
            return "peer_error";
        case RecvStatus::lagged:
            return "lagged";
    }
    return "unknown";
}

// ---- Outcome, Message ----

const Payload& Outcome::value() const {
    if (error_) std::rethrow_exception(error_);
    if (!value_) throw std::logic_error("shmctx::Outcome::value(): the outcome is unresolved");
    return *value_;
}

void Message::throw_not_flatbuffer(PayloadKind kind) {
    throw DecodeError("Message::as<T>(): the message is " + std::string(to_string(kind)) +
                      ", not a FlatBuffer");
}

// ---- Actor ----

Actor::Actor(std::string name, ActorOptions options)
    : core_(std::make_shared<detail::ActorCore>(std::move(name), std::move(options))) {
    core_->start();
}

Actor::~Actor() { core_->shutdown(); }

const Uid& Actor::uid() const noexcept { return core_->uid(); }

void Actor::expose(std::string fn, Endpoint endpoint, ExposeOptions options) {
    core_->expose(std::move(fn), std::move(endpoint), options);
}

Portal Actor::connect(std::string_view peer_name, Deadline deadline) {
    return Portal(core_, core_->connect(peer_name, deadline));
}

void Actor::cancel() { core_->cancel_actor(core_->uid()); }
bool Actor::cancel_called() const noexcept { return core_->cancel_called(); }
std::optional<Uid> Actor::cancel_caller() const { return core_->cancel_caller(); }
bool Actor::wait_cancelled(Deadline deadline) { return core_->wait_cancelled(deadline); }

std::size_t Actor::endpoint_threads() const { return core_->endpoint_threads(); }
std::size_t Actor::open_contexts() const { return core_->open_contexts(); }
std::size_t Actor::links() const { return core_->link_count(); }

// ---- Portal ----

const Uid& Portal::peer() const noexcept { return link_->peer; }
const Uid& Portal::self() const noexcept { return core_->uid(); }

namespace {

std::shared_ptr<detail::ContextState> open_parent(const std::shared_ptr<detail::ActorCore>& core,
                                                  const detail::LinkHandle& handle,
                                                  std::string_view fn, PayloadView args,
                                                  const OpenOptions& options) {
    if (!handle.link) {
        throw InvalidOperation("can not open a context with the local actor " +
                               core->uid().to_string());
    }
    if (fn.empty()) throw std::invalid_argument("open_context: empty function name");
    // A cancelled scope or actor opens nothing (a checkpoint at entry, as trio's blocking calls
    // do): its body would be cancelled at once (DESIGN.md §4.6), and a Portal::run whose result
    // arrived before its wait looked at the token would return as if never cancelled.
    detail::checkpoint();
    if (core->shut_down()) {
        // A portal that outlived its Actor (or one used while ~Actor runs, outside every
        // scope): the actor's links are closed and its name may belong to another actor now.
        throw TransportClosed("actor " + core->uid().to_string() +
                              " is shut down: its Actor was destroyed");
    }
    if (core->root_scope().cancelled()) detail::throw_cancelled();
    wire::ContextSettings own;
    own.msg_buffer_size =
        options.msg_buffer_size != 0 ? options.msg_buffer_size : core->options().msg_buffer_size;
    own.allow_overruns = options.allow_overruns;
    auto st = std::make_shared<detail::ContextState>(core, handle.link, Side::parent,
                                                     core->next_cid(), std::string(fn), own,
                                                     detail::current_scope(), &core->root_scope());
    core->register_context(st);
    try {
        st->send_start(args);
    } catch (...) {
        st->finish();
        throw;
    }
    return st;
}

/// Ends the context when the open_context call leaves, however it leaves.
struct FinishOnExit {
    detail::ContextState& state;
    explicit FinishOnExit(detail::ContextState& s) : state(s) {}
    FinishOnExit(const FinishOnExit&) = delete;
    FinishOnExit& operator=(const FinishOnExit&) = delete;
    ~FinishOnExit() { state.finish(); }
};

bool is_remote_or_transport(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const RemoteActorError&) {
        return true;
    } catch (const TransportClosed&) {
        return true;
    } catch (...) {
        return false;
    }
}

}  // namespace

Outcome Portal::run_context(std::string_view fn, PayloadView args, const OpenOptions& options,
                            const BodyFn& body) {
    auto st = open_parent(core_, *link_, fn, args, options);
    const FinishOnExit finish{*st};
    const Payload* first = nullptr;
    try {
        first = &st->await_started();
    } catch (...) {
        // An error before started() is raised at entry. Anything else (an enclosing cancel)
        // leaves the remote task behind us: cancel it first (spec §3.5 step 2).
        if (!is_remote_or_transport(std::current_exception())) {
            st->set_local_error(std::current_exception());
            st->cancel_quietly();
        }
        throw;
    }
    Context ctx = detail::ContextState::handle(st);
    std::exception_ptr body_error;
    try {
        (void)detail::run_in_scope(st->scope(), [&] { body(ctx, *first); });
    } catch (...) {
        body_error = std::current_exception();
    }
    return st->exit_parent(body_error);
}

Payload Portal::run(std::string_view fn, PayloadView args, Deadline deadline) {
    auto st = open_parent(core_, *link_, fn, args, OpenOptions{});
    const FinishOnExit finish{*st};
    return st->run_result(deadline);
}

bool Portal::cancel_actor(Deadline deadline) {
    if (!link_->link) {
        core_->cancel_actor(core_->uid());
        return core_->wait_cancelled(deadline);
    }
    return core_->request_actor_cancel(link_->link, deadline);
}

bool Portal::peer_unresponsive() const noexcept {
    return link_->link && link_->link->peer_unresponsive();
}

bool Portal::cancel_called() const noexcept {
    return link_->link ? link_->link->cancel_called() : core_->cancel_called();
}

// ---- Context ----

Side Context::side() const noexcept { return state_->side(); }
const Uid& Context::peer() const noexcept { return state_->peer(); }
const Cid& Context::cid() const noexcept { return state_->cid(); }
const Uid& Context::self() const noexcept { return state_->self(); }
void Context::started(PayloadView value) { state_->started(value); }

MsgStream Context::open_stream(StreamOptions options) {
    state_->open_stream(options);
    return MsgStream(state_);
}

void Context::cancel(Deadline deadline) { state_->cancel(deadline); }
Outcome Context::wait_for_result() { return state_->wait_for_result(); }
bool Context::cancel_called() const noexcept { return state_->cancel_called(); }
bool Context::cancel_acked() const { return state_->cancel_acked(); }
bool Context::cancelled_caught() const noexcept { return state_->scope().cancelled_caught(); }
std::optional<Uid> Context::canceller() const { return state_->canceller(); }
std::exception_ptr Context::remote_error() const { return state_->remote_error(); }
std::exception_ptr Context::local_error() const { return state_->local_error(); }
std::exception_ptr Context::maybe_error() const { return state_->maybe_error(); }
const RemoteActorError* Context::remote_error_info() const { return state_->remote_error_info(); }
Outcome Context::outcome() const { return state_->outcome(); }
bool Context::has_outcome() const { return state_->has_outcome(); }
State Context::state() const { return state_->state(); }
bool Context::cancelled() const noexcept { return state_->scope().cancelled(); }

void Context::checkpoint() {
    if (state_->scope().cancelled()) detail::throw_cancelled();
}

void Context::sleep_for(Duration d) {
    // Wakes on this context's cancel (what checkpoint() checks) and, being a blocking call, on
    // the calling thread's chain too, whichever scope that is (another context's body).
    const detail::CancelScope& own = state_->scope();
    if (own.cancelled()) detail::throw_cancelled();
    detail::checkpoint();
    std::stop_source either;
    const auto forward = [&either]() noexcept { either.request_stop(); };
    const std::stop_callback on_own(own.stop_token(), forward);
    const std::stop_callback on_caller(detail::current_stop_token(), forward);
    detail::sleep_until_stopped(d, either.get_token());
    if (own.cancelled()) detail::throw_cancelled();
    detail::checkpoint();
}

std::stop_token Context::stop_token() const noexcept { return state_->scope().stop_token(); }

// ---- MsgStream ----

MsgStream::MsgStream(std::shared_ptr<detail::ContextState> state) noexcept
    : state_(std::move(state)) {}

// relaxed (hub_): moving a MsgStream is not concurrent with any other use of either object.
MsgStream::MsgStream(MsgStream&& other) noexcept
    : state_(std::move(other.state_)),
      hub_(other.hub_.exchange(nullptr, std::memory_order::relaxed)) {}

MsgStream& MsgStream::operator=(MsgStream&& other) noexcept {
    if (this != &other) {
        if (state_) {
            try {
                (void)state_->close_stream();  // a cut flush is seen at the context's exit
            } catch (...) {
                // Closing is best effort here; the context's end closes it anyway.
            }
        }
        state_ = std::move(other.state_);
        // The subscriptions keep their hub; this stream's reference to it goes.
        delete hub_.exchange(other.hub_.exchange(nullptr, std::memory_order::relaxed),
                             std::memory_order::relaxed);
    }
    return *this;
}

MsgStream::~MsgStream() {
    // The subscriptions keep the hub (and the context's state) alive: after the close below
    // they read what the hub buffered, then EndOfChannel.
    delete hub_.load(std::memory_order::relaxed);  // relaxed: nobody else uses us now
    if (!state_) return;
    try {
        // Destroyed by an exception's unwinding (the body failed): a failed context discards
        // its spill instead of waiting for it to flush (DESIGN.md §4.2).
        (void)state_->close_stream(std::uncaught_exceptions() == 0);  // cut: seen at the exit
    } catch (...) {
        // A destructor never throws; the context's end closes the stream anyway.
    }
}

detail::ContextState& MsgStream::state(const char* member) const {
    // One predictable branch per call: a moved-from stream raises instead of crashing.
    if (!state_) [[unlikely]] {
        throw InvalidOperation(std::string(member) + " on a moved-from MsgStream");
    }
    return *state_;
}

void MsgStream::check_not_subscribed() const {
    // [sub.hub] pairs with [sub.hub] in subscribe() (acquire: orders this check after it).
    if (hub_.load(std::memory_order::acquire) != nullptr) {
        throw InvalidOperation(
            "receive on a MsgStream after subscribe(): the subscriptions receive its messages");
    }
}

void MsgStream::send(PayloadView message) {
    (void)state("MsgStream::send").try_send(message, true);
}

void MsgStream::send_many(std::span<const PayloadView> messages) {
    state("MsgStream::send_many").send_many(messages);
}

SendStatus MsgStream::try_send(PayloadView message) noexcept {
    if (!state_) return SendStatus::peer_error;  // send() raises InvalidOperation
    try {
        return state_->try_send(message, false);
    } catch (...) {
        return SendStatus::peer_error;
    }
}

Message MsgStream::receive() {
    detail::ContextState& st = state("MsgStream::receive");
    check_not_subscribed();
    return *st.receive(Deadline::never(), true);
}

std::optional<Message> MsgStream::receive_for(Duration timeout) {
    detail::ContextState& st = state("MsgStream::receive_for");
    check_not_subscribed();
    return st.receive(Deadline(timeout), true);
}

RecvStatus MsgStream::try_receive(Message& out) noexcept {
    if (!state_) return RecvStatus::peer_error;  // receive() raises InvalidOperation
    // [sub.hub] as in check_not_subscribed(); receive() then raises InvalidOperation.
    if (hub_.load(std::memory_order::acquire) != nullptr) return RecvStatus::peer_error;
    return state_->try_receive(out);
}

SendStatus MsgStream::send_fill(std::size_t max_bytes, PayloadKind kind, detail::FillRef fill,
                                bool raise) {
    if (raise) return state("MsgStream::send_with").send(max_bytes, kind, fill, true);
    if (!state_) return SendStatus::peer_error;  // send_with() raises InvalidOperation
    try {
        return state_->send(max_bytes, kind, fill, false);
    } catch (...) {
        return SendStatus::peer_error;
    }
}

std::size_t MsgStream::drain_into(detail::MessageSink sink, std::size_t max) {
    detail::ContextState& st = state("MsgStream::drain");
    check_not_subscribed();
    return st.drain(sink, max);
}

shm::RingCounters MsgStream::outbound_counters() const {
    return state("MsgStream::outbound_counters").outbound_counters();
}
shm::RingCounters MsgStream::inbound_counters() const {
    return state("MsgStream::inbound_counters").inbound_counters();
}

void MsgStream::close() {
    // Our cancellation cut the flush of our spill: raise it here, where the sender learns
    // that what it had sent is not all delivered (DESIGN.md §4.2).
    if (state("MsgStream::close").close_stream()) detail::throw_cancelled();
}
bool MsgStream::closed() const noexcept {
    if (!state_) return true;  // a moved-from stream sends and receives nothing
    try {
        return state_->stream_closed();
    } catch (...) {
        return true;
    }
}
std::size_t MsgStream::max_message_bytes() const noexcept {
    return state_ ? state_->max_message_bytes() : 0;
}

MsgStream::iterator& MsgStream::iterator::operator++() {
    try {
        current_ = stream_->receive();
    } catch (const EndOfChannel&) {
        stream_ = nullptr;
    }
    return *this;
}

}  // namespace shmctx
