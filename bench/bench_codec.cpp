// Codec micro-benchmarks: control message encode + verify, a small user FlatBuffer (tick) built
// and verified through Payload's path, and FlexBuffers values through Payload::value.
// Every iteration checks what it decoded (a benchmark that does not check could time nothing).
//
//   build/<dir>/bench/shmctx_bench_codec --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

#include "shmctx/payload.hpp"
#include "shmctx/test_tick_generated.h"
#include "shmctx/wire/codec.hpp"

SHMCTX_ROOT_TYPE(shmctx::test::fb::Tick, "TICK");

namespace {

using shmctx::Payload;
using shmctx::PayloadKind;
using shmctx::PayloadView;
namespace wire = shmctx::wire;

shmctx::Uuid uuid_of(std::uint8_t seed) {
    shmctx::Uuid u;
    for (std::size_t i = 0; i < u.bytes.size(); ++i) {
        u.bytes[i] = static_cast<std::uint8_t>(seed + i + 1);
    }
    return u;
}

// An 8-byte aligned destination standing in for a ring record: encode, copy, verify there.
struct RecordSlot {
    std::vector<std::uint64_t> words = std::vector<std::uint64_t>(4096);
    std::span<const std::byte> put(std::span<const std::byte> src) {
        std::memcpy(words.data(), src.data(), src.size());
        return {reinterpret_cast<const std::byte*>(words.data()), src.size()};
    }
};

void BM_ControlStartEncodeVerify(benchmark::State& state) {
    wire::ControlEncoder enc;
    RecordSlot slot;
    const Payload args = Payload::value(std::string_view("ACME"));
    std::uint64_t seq = 0;
    std::size_t bytes = 0;
    for (auto _ : state) {
        ++seq;
        const auto buf = enc.start({{uuid_of(2), seq}, "subscribe", args, {64, false}});
        const wire::ControlView v = wire::decode_control(slot.put(buf));
        const auto* start = v.as<shmctx::wire::fb::Start>();
        if (start == nullptr || start->cid() == nullptr || start->cid()->seq() != seq) {
            state.SkipWithError("decoded Start does not match");
            break;
        }
        bytes += buf.size();
        benchmark::DoNotOptimize(start);
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}
BENCHMARK(BM_ControlStartEncodeVerify);

void BM_ControlStopEncodeVerify(benchmark::State& state) {
    wire::ControlEncoder enc;
    RecordSlot slot;
    std::uint64_t seq = 0;
    for (auto _ : state) {
        ++seq;
        const auto buf = enc.stop({uuid_of(2), 5}, seq);
        const auto* stop = wire::decode_control(slot.put(buf)).as<shmctx::wire::fb::Stop>();
        if (stop == nullptr || stop->data_seq() != seq) {
            state.SkipWithError("decoded Stop does not match");
            break;
        }
        benchmark::DoNotOptimize(stop);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ControlStopEncodeVerify);

// A small market-data tick built in a reused builder, copied once (as into a ring), verified
// with its file identifier by verified_root<T> (the path of Payload::as<T> and Message::as<T>).
void BM_TickEncodeVerify(benchmark::State& state) {
    flatbuffers::FlatBufferBuilder fbb(256);
    RecordSlot slot;
    std::uint64_t seq = 0;
    std::size_t bytes = 0;
    for (auto _ : state) {
        ++seq;
        fbb.Clear();
        const auto sym = fbb.CreateString("ACME");
        fbb.Finish(shmctx::test::fb::CreateTick(fbb, sym, 101.25, 100, seq),
                   shmctx::test::fb::TickIdentifier());
        const auto view = PayloadView(fbb).bytes();
        const auto* tick = shmctx::verified_root<shmctx::test::fb::Tick>(slot.put(view));
        if (tick->seq() != seq) {
            state.SkipWithError("decoded Tick does not match");
            break;
        }
        bytes += view.size();
        benchmark::DoNotOptimize(tick);
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}
BENCHMARK(BM_TickEncodeVerify);

// Payload::copy of a finished tick plus as<T>(): what a receiver keeping a message pays.
void BM_TickPayloadCopyAs(benchmark::State& state) {
    flatbuffers::FlatBufferBuilder fbb(256);
    fbb.Finish(shmctx::test::fb::CreateTickDirect(fbb, "ACME", 101.25, 100, 7),
               shmctx::test::fb::TickIdentifier());
    for (auto _ : state) {
        const Payload p = Payload::copy(PayloadView(fbb));
        const auto* tick = p.as<shmctx::test::fb::Tick>();
        if (tick->seq() != 7) {
            state.SkipWithError("decoded Tick does not match");
            break;
        }
        benchmark::DoNotOptimize(tick);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TickPayloadCopyAs);

void BM_PayloadValueInt(benchmark::State& state) {
    std::int64_t i = 0;
    for (auto _ : state) {
        ++i;
        const Payload p = Payload::value(i * 1000003);
        if (p.value<std::int64_t>() != i * 1000003) {
            state.SkipWithError("int value mismatch");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PayloadValueInt);

void BM_PayloadValueDouble(benchmark::State& state) {
    double d = 0.5;
    for (auto _ : state) {
        d += 1.25;
        const Payload p = Payload::value(d);
        if (p.value<double>() != d) {
            state.SkipWithError("double value mismatch");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PayloadValueDouble);

// Arg = string length: 8 fits inline storage, 256 goes to the heap.
void BM_PayloadValueString(benchmark::State& state) {
    const std::string text(static_cast<std::size_t>(state.range(0)), 'x');
    for (auto _ : state) {
        const Payload p = Payload::value(text);
        if (p.value<std::string_view>().size() != text.size()) {
            state.SkipWithError("string value mismatch");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PayloadValueString)->Arg(8)->Arg(256);

}  // namespace

BENCHMARK_MAIN();
