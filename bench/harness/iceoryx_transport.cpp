// The iceoryx harness transport and the RouDi daemon it needs (iceoryx_transport.hpp).
#include "iceoryx_transport.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"

extern char** environ;

namespace shmctx::bench {
namespace {

/// Chunks of every pool: enough for two directions' queues (256 each) and the chunks in
/// flight. Sizes: each harness message size (8 B .. 64 KiB) plus iceoryx's chunk header.
constexpr const char* kRoudiConfig = R"(# written by the shmctx benchmark harness
[general]
version = 1

[[segment]]

[[segment.mempool]]
size = 128
count = 2048

[[segment.mempool]]
size = 1152
count = 2048

[[segment.mempool]]
size = 16512
count = 1024

[[segment.mempool]]
size = 65664
count = 1024
)";

[[noreturn]] void fail(const std::string& what) { throw SystemError("iceoryx: " + what); }

/// The daemon we started: stopped (SIGTERM, then waited for) when the process exits normally.
class Daemon {
public:
    void start() {
        char path[] = "/tmp/shmctx-bench-roudi-XXXXXX.toml";
        const int fd = ::mkstemps(path, 5);
        if (fd < 0) fail(std::string("mkstemps: ") + std::strerror(errno));
        const std::string_view text = kRoudiConfig;
        const bool written =
            ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
        ::close(fd);
        config_ = path;
        if (!written) fail("cannot write the RouDi configuration " + config_);

        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0) fail(std::string("pipe2: ") + std::strerror(errno));
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
        // RouDi must get our SIGTERM: not the harness's blocked mask (main blocks SIGINT and
        // SIGTERM for its own handling), and default dispositions.
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t none;
        sigemptyset(&none);
        sigset_t defaults;
        sigemptyset(&defaults);
        for (int sig : {SIGINT, SIGTERM, SIGPIPE}) sigaddset(&defaults, sig);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &defaults);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        const char* argv[] = {"iox-roudi", "-c", config_.c_str(), "-l", "warning", nullptr};
        pid_t pid = -1;
        const int rc = ::posix_spawnp(&pid, "iox-roudi", &actions, &attr,
                                      const_cast<char* const*>(argv), environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&actions);
        ::close(out[1]);
        if (rc != 0) {
            ::close(out[0]);
            fail(std::string("cannot start iox-roudi (package iceoryx): ") + std::strerror(rc));
        }
        pid_ = pid;
        // Ready once it printed its line (it prints it at every log level); it dies at once when
        // another RouDi holds the machine-wide lock.
        std::string seen;
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        bool ready = false;
        while (!ready && std::chrono::steady_clock::now() < until) {
            pollfd p{out[0], POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            char buf[256];
            const ssize_t n = ::read(out[0], buf, sizeof buf);
            if (n <= 0) break;  // it exited
            seen.append(buf, static_cast<std::size_t>(n));
            ready = seen.find("RouDi is ready for clients") != std::string::npos;
        }
        ::close(out[0]);
        if (!ready) {
            stop();
            fail(
                "iox-roudi did not come up (is another RouDi running on this machine? "
                "iceoryx allows one per machine); see its messages above");
        }
    }
    void stop() noexcept {
        if (pid_ > 0) {
            (void)::kill(pid_, SIGTERM);
            int status = 0;
            while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
            }
            pid_ = -1;
        }
        if (!config_.empty()) (void)::unlink(config_.c_str());
        config_.clear();
    }
    ~Daemon() { stop(); }

private:
    pid_t pid_ = -1;
    std::string config_;
};

std::mutex g_mu;
bool g_runtime = false;
Daemon g_daemon;  // destroyed at exit, after main returned: RouDi goes with the harness

iox::capro::ServiceDescription service(const std::string& run, const char* dir) {
    using Id = iox::capro::IdString_t;
    return {Id(iox::cxx::TruncateToCapacity, "shmctx-bench"),
            Id(iox::cxx::TruncateToCapacity, run.c_str()), Id(iox::cxx::TruncateToCapacity, dir)};
}

}  // namespace

void IceoryxRoudi::ensure_runtime(std::string_view role, bool start_daemon) {
    const std::lock_guard lock(g_mu);
    if (g_runtime) return;
    // iceoryx logs every registration at debug level by default; only its warnings matter here.
    iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn);
    if (start_daemon) g_daemon.start();
    const std::string name = "shmctx-bench-" + std::string(role) + "-" + std::to_string(::getpid());
    iox::runtime::PoshRuntime::initRuntime(
        iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str()));
    g_runtime = true;
}

struct IceoryxTransport::Impl {
    std::optional<iox::popo::UntypedPublisher> pub;
    std::optional<iox::popo::UntypedSubscriber> sub;
    std::optional<iox::popo::WaitSet<>> waitset;  // block mode
};

namespace {

std::unique_ptr<IceoryxTransport::Impl> make_impl(const ChannelSpec& spec, const char* out_dir,
                                                  const char* in_dir) {
    auto impl = std::make_unique<IceoryxTransport::Impl>();
    iox::popo::PublisherOptions po;
    po.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
    impl->pub.emplace(service(spec.name, out_dir), po);
    iox::popo::SubscriberOptions so;
    so.queueCapacity =
        std::clamp<std::uint64_t>(spec.ring_bytes / std::max<std::size_t>(spec.msg_bytes, 1), 1,
                                  iox::MAX_SUBSCRIBER_QUEUE_CAPACITY);
    so.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
    impl->sub.emplace(service(spec.name, in_dir), so);
    if (spec.mode == Mode::block) {
        impl->waitset.emplace();
        if (impl->waitset->attachState(*impl->sub, iox::popo::SubscriberState::HAS_DATA)
                .has_error()) {
            fail("cannot attach the subscriber to a WaitSet");
        }
    }
    return impl;
}

}  // namespace

IceoryxTransport::Link::Link(const ChannelSpec& spec) : spec_(spec) {}
IceoryxTransport::Link::Link(Link&&) noexcept = default;
IceoryxTransport::Link::~Link() {
    if (impl_ && impl_->waitset)
        impl_->waitset->detachState(*impl_->sub, iox::popo::SubscriberState::HAS_DATA);
}

IceoryxTransport::Link IceoryxTransport::Link::create(const ChannelSpec& spec) {
    IceoryxRoudi::ensure_runtime("parent", true);
    Link link(spec);
    link.impl_ = make_impl(spec, "a2b", "b2a");
    return link;
}

IceoryxTransport::Link IceoryxTransport::Link::open(const ChannelSpec& spec) {
    IceoryxRoudi::ensure_runtime("peer", false);
    Link link(spec);
    link.impl_ = make_impl(spec, "b2a", "a2b");
    // RouDi's discovery connects the ports asynchronously: wait until our subscriber is
    // subscribed and our publisher has its subscriber (the parent made both before spawning us).
    const RunGuard guard = RunGuard::of(spec);
    const auto connected = [&] {
        return link.impl_->sub->getSubscriptionState() == iox::SubscribeState::SUBSCRIBED &&
               link.impl_->pub->hasSubscribers();
    };
    while (!connected()) {
        check_peer(guard, "iceoryx: the ports did not connect");
        // RouDi's discovery runs every few ms: poll it gently (not synchronisation between our
        // own threads; the condition is re-checked).
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return link;
}

IceoryxTransport::Sender IceoryxTransport::Link::sender(Dir) { return Sender(impl_.get(), spec_); }
IceoryxTransport::Receiver IceoryxTransport::Link::receiver(Dir) {
    return Receiver(impl_.get(), spec_);
}

void IceoryxTransport::Sender::send(const std::byte* p, std::size_t n) {
    std::uint32_t rounds = 0;
    for (;;) {
        auto chunk = impl_->pub->loan(static_cast<std::uint32_t>(n));
        if (!chunk.has_error()) {
            std::memcpy(chunk.value(), p, n);
            impl_->pub->publish(chunk.value());  // waits inside while the queue is full
            return;
        }
        // Out of chunks: the consumer still holds them all. Wait for it like for a full ring.
        if ((++rounds & 1023U) == 0) check_peer(guard_, "iceoryx: no chunk to loan");
        shm::cpu_relax();
    }
}

const std::byte* IceoryxTransport::Receiver::take(std::size_t& n) {
    auto r = impl_->sub->take();
    if (r.has_error()) {
        if (r.get_error() == iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE) return nullptr;
        fail("take: too many chunks held");
    }
    const void* payload = r.value();
    n = iox::mepoo::ChunkHeader::fromUserPayload(payload)->userPayloadSize();
    return static_cast<const std::byte*>(payload);
}

void IceoryxTransport::Receiver::release(const std::byte* p) { impl_->sub->release(p); }

bool IceoryxTransport::Receiver::wait_for_data() {
    if (impl_->sub->hasData()) return true;
    return !impl_->waitset->timedWait(iox::units::Duration::fromMilliseconds(100)).empty();
}

}  // namespace shmctx::bench
