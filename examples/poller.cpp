// poller: one thread consuming several streams with shmctx::Poller, no thread per stream.
//
//   desk (this process), ONE thread                exchange (a child process)
//   open_context("quotes") ──────────────────────► 200 quotes, one every 1 ms
//     open_context("trades") ────────────────────► 30 trades, one every 4 ms
//       open_context("news") ────────────────────► 4 headlines, one every 20 ms
//         Poller: add the three streams
//         loop: ready = poller.wait()   (sleeps on one futex word all three rings wake)
//               drain each ready stream; a stream that ended (EndOfChannel) is removed
//
// What to notice: the feeds run at different rates and end at different times (news first, then
// trades, then quotes), yet one thread serves them all, asleep while none has anything: about
// one wake-up per message here, as the messages are spread out in time; under load a wake-up
// finds several, and drain() takes them as one batch. A Poller scales to hundreds of streams.
//
// Usage: poller [--ns NAMESPACE]
#include "shmctx/poller.hpp"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "example_process.hpp"
#include "shmctx/actor.hpp"

namespace {

using namespace std::chrono_literals;
using example::say;

struct Feed {
    const char* name;
    std::int64_t count;
    std::chrono::milliseconds period;
};
constexpr Feed kFeeds[] = {{"quotes", 200, 1ms}, {"trades", 30, 4ms}, {"news", 4, 20ms}};

int run_exchange(const example::Args& cli) {
    shmctx::Actor exchange("exchange", shmctx::ActorOptions{.ns = cli.ns});
    for (const Feed& feed : kFeeds) {
        exchange.expose(feed.name, [feed](shmctx::Context& ctx, const shmctx::Payload&) {
            ctx.started();
            shmctx::StreamOptions options;
            options.on_full = shmctx::OnFull::block;  // wait if the desk falls behind
            shmctx::MsgStream stream = ctx.open_stream(options);
            for (std::int64_t i = 0; i < feed.count; ++i) {
                ctx.sleep_for(feed.period);  // the feed's pace (not synchronisation)
                stream.send(std::string_view(std::string(feed.name) + " " + std::to_string(i)));
            }
            stream.close();  // the desk's Poller reports the stream ready: its end
            return shmctx::Payload::value(feed.count);
        });
    }
    example::signal_ready();
    example::wait_for_parent();
    return 0;
}

// open_context is a scoped block; to hold every stream at once on one thread, the contexts are
// opened nested (each body opens the next) and `consume` runs in the innermost body.
void open_all(shmctx::Portal& portal, std::vector<shmctx::MsgStream>& streams,
              std::vector<std::int64_t>& returned, const std::function<void()>& consume) {
    const std::size_t i = streams.size();
    if (i == std::size(kFeeds)) return consume();
    auto r =
        portal.open_context(kFeeds[i].name, {}, [&](shmctx::Context& ctx, const shmctx::Payload&) {
            streams.push_back(ctx.open_stream());
            open_all(portal, streams, returned, consume);
        });
    returned[i] = r.outcome.value().value<std::int64_t>();  // the feed's Return
}

bool run_desk(const example::Args& cli) {
    example::PeerProcess peer("exchange", cli);
    if (!peer.wait_ready(10s)) return false;
    constexpr std::size_t kN = std::size(kFeeds);
    std::vector<std::int64_t> received(kN, 0);
    std::vector<std::int64_t> returned(kN, -1);
    std::size_t out_of_order = 0;
    std::size_t wakeups = 0;
    {
        shmctx::Actor desk("desk", shmctx::ActorOptions{.ns = cli.ns});
        shmctx::Portal portal = desk.connect("exchange");
        std::vector<shmctx::MsgStream> streams;
        streams.reserve(kN);  // the Poller keeps pointers to them
        open_all(portal, streams, returned, [&] {
            shmctx::Poller poller;
            for (shmctx::MsgStream& s : streams) poller.add(s);
            while (poller.size() > 0) {
                const std::vector<shmctx::MsgStream*> ready = poller.wait(10s);
                if (ready.empty()) throw std::runtime_error("no feed sent anything for 10 s");
                ++wakeups;
                for (shmctx::MsgStream* s : ready) {
                    const auto i = static_cast<std::size_t>(s - streams.data());
                    try {
                        (void)s->drain(
                            [&](const shmctx::Message& m) {  // "<feed> <n>"
                                const std::string text(m.text());
                                const std::int64_t n =
                                    std::atoll(text.c_str() + text.find(' ') + 1);
                                if (n != received[i]) ++out_of_order;
                                ++received[i];
                            },
                            64);
                    } catch (const shmctx::EndOfChannel&) {  // the feed closed its stream
                        poller.remove(*s);
                        say("%s ended after %lld messages", kFeeds[i].name,
                            static_cast<long long>(received[i]));
                    }
                }
            }
        });
    }
    std::int64_t total = 0;
    bool ok = out_of_order == 0;
    for (std::size_t i = 0; i < kN; ++i) {
        total += received[i];
        ok = ok && received[i] == kFeeds[i].count && returned[i] == kFeeds[i].count;
    }
    say("one thread: %lld messages from %zu streams in %zu wake-ups, %zu out of order",
        static_cast<long long>(total), kN, wakeups, out_of_order);
    return peer.finish(10s) && ok;
}

}  // namespace

int main(int argc, char** argv) {
    const example::Args cli = example::init(argc, argv, "poller", "desk");
    try {
        if (!cli.role.empty()) return run_exchange(cli);
        if (!run_desk(cli)) return 1;
    } catch (const std::exception& e) {
        say("error: %s", e.what());
        return 1;
    }
    say("poller OK: quotes 200, trades 30, news 4, each complete and in order on one thread");
    return 0;
}
