// The stream-API harness transport (stream_transport.hpp).
#include "stream_transport.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "shmctx/actor.hpp"

namespace shmctx::bench {

struct StreamRun {
    bool parent = false;
    ChannelSpec spec;
    std::string peer_name;
    std::unique_ptr<Actor> actor;
    MsgStream* cached = nullptr;  // the harness thread's copy of `stream`; only it reads it

    std::mutex mu;
    std::condition_variable_any cv;
    MsgStream* stream = nullptr;  // set by the context body, under mu
    bool done = false;            // the Link is going: the body may leave
    bool finished = false;        // the parent's open_context returned
    std::exception_ptr error;     // what ended the parent's open_context early
    std::thread context_thread;   // parent only
};

namespace {

/// "shmctx.<euid>.<ns>.<rest>" -> {ns, rest}; the harness names every run's objects this way.
std::pair<std::string, std::string> split_run_name(const std::string& name) {
    const auto a = name.find('.');
    const auto b = a == std::string::npos ? a : name.find('.', a + 1);
    const auto c = b == std::string::npos ? b : name.find('.', b + 1);
    if (c == std::string::npos) throw std::invalid_argument("stream transport: run name " + name);
    return {name.substr(b + 1, c - b - 1), name.substr(c + 1)};
}

std::uint32_t capacity_msgs(const ChannelSpec& spec) {
    return static_cast<std::uint32_t>(std::clamp<std::size_t>(
        spec.ring_bytes / std::max<std::size_t>(spec.msg_bytes, 1), 1, std::size_t{1} << 20));
}

std::unique_ptr<StreamRun> make_run(const ChannelSpec& spec, bool parent) {
    auto run = std::make_unique<StreamRun>();
    run->parent = parent;
    run->spec = spec;
    const auto [ns, rest] = split_run_name(spec.name);
    run->peer_name = "bq-" + rest;
    ActorOptions options;
    options.ns = ns;
    options.data_ring_bytes = spec.ring_bytes;
    options.msg_buffer_size = capacity_msgs(spec);
    run->actor = std::make_unique<Actor>(parent ? "bp-" + rest : run->peer_name, options);
    return run;
}

/// Both sides' context body: opens the stream, hands it to the harness's thread and waits until
/// the Link goes (or the context is cancelled).
void serve(StreamRun& run, Context& ctx) {
    StreamOptions options;
    options.on_full = OnFull::block;
    // Spin mode: the stream's waits never sleep (the harness's thread has a CPU of its own);
    // the actors' own threads keep the default watch, as in block mode.
    if (run.spec.mode == Mode::spin) options.spin_before_sleep = Duration::max();
    MsgStream stream = ctx.open_stream(options);
    std::unique_lock lock(run.mu);
    run.stream = &stream;
    run.cv.notify_all();
    // Until the Link goes, also when the context is cancelled meanwhile (the peer's side may
    // end first): the harness's thread holds a pointer to `stream` until then, and a cancelled
    // context's stream only raises, it stays a valid object (TSan found the body destroying it
    // under a send when this wait also ended on the stop token).
    run.cv.wait(lock, [&] { return run.done; });
    run.stream = nullptr;
}

void start_parent_context(StreamRun& run) {
    run.context_thread = std::thread([&run] {
        try {
            Portal portal = run.actor->connect(run.peer_name, run.spec.deadline);
            OpenOptions open;
            open.msg_buffer_size = capacity_msgs(run.spec);
            (void)portal.open_context(
                "bench", Payload{}, [&run](Context& ctx, const Payload&) { serve(run, ctx); },
                open);
        } catch (...) {
            const std::lock_guard lock(run.mu);
            run.error = std::current_exception();
        }
        const std::lock_guard lock(run.mu);
        run.finished = true;
        run.cv.notify_all();
    });
}

}  // namespace

MsgStream& stream_of(StreamRun& run, const RunGuard& guard) {
    if (run.cached != nullptr) [[likely]] {
        return *run.cached;
    }
    if (run.parent && !run.context_thread.joinable()) start_parent_context(run);
    std::unique_lock lock(run.mu);
    while (run.stream == nullptr) {
        if (run.error) std::rethrow_exception(run.error);
        if (run.finished) throw PeerStalled("stream: the context ended before its stream opened");
        check_peer(guard, "stream: the context did not open");
        run.cv.wait_for(lock, std::chrono::milliseconds(100));
    }
    run.cached = run.stream;
    return *run.cached;
}

template <StreamRead R>
ShmctxStream<R>::Link::Link(const ChannelSpec& spec) : spec_(spec) {}
template <StreamRead R>
ShmctxStream<R>::Link::Link(Link&&) noexcept = default;

template <StreamRead R>
ShmctxStream<R>::Link::~Link() {
    if (!run_) return;
    {
        const std::lock_guard lock(run_->mu);
        run_->done = true;
    }
    run_->cv.notify_all();
    if (run_->context_thread.joinable()) {
        // Normally the peer's Return is in or about to come; a peer that stopped answering would
        // keep open_context waiting, so after two seconds our actor cancels it.
        std::unique_lock lock(run_->mu);
        if (!run_->cv.wait_for(lock, std::chrono::seconds(2), [&] { return run_->finished; })) {
            lock.unlock();
            run_->actor->cancel();
        }
        if (lock.owns_lock()) lock.unlock();
        run_->context_thread.join();
    }
}

template <StreamRead R>
typename ShmctxStream<R>::Link ShmctxStream<R>::Link::create(const ChannelSpec& spec) {
    Link link(spec);
    link.run_ = make_run(spec, true);
    return link;
}

template <StreamRead R>
typename ShmctxStream<R>::Link ShmctxStream<R>::Link::open(const ChannelSpec& spec) {
    Link link(spec);
    link.run_ = make_run(spec, false);
    StreamRun* run = link.run_.get();
    ExposeOptions expose;
    expose.msg_buffer_size = capacity_msgs(spec);
    run->actor->expose(
        "bench",
        [run](Context& ctx, const Payload&) {
            ctx.started();
            serve(*run, ctx);
            return Payload{};
        },
        expose);
    return link;
}

template struct ShmctxStream<StreamRead::receive>;
template struct ShmctxStream<StreamRead::drain>;
template struct ShmctxStream<StreamRead::batch>;

}  // namespace shmctx::bench
