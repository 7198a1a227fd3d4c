// Public error model (include/shmctx/errors.hpp, ids.hpp) and error boxing/relaying/unboxing
// through the real control encoder and verified decoder (src/core/boxing.hpp; spec §3.8).
#include "shmctx/errors.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <latch>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/boxing.hpp"
#include "shmctx/ids.hpp"
#include "shmctx/wire/codec.hpp"

// A type outside std::exception whose C++ name equals a registered wire name: its fallback
// name must not be that name (a peer would resolve it to shmctx::StreamOverrun).
struct StreamOverrun {};

namespace shmctx::detail {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

Uuid uuid_of(std::uint8_t seed) {
    Uuid u;
    for (std::size_t i = 0; i < u.bytes.size(); ++i) {
        u.bytes[i] = static_cast<std::uint8_t>(seed * 17U + i + 1U);
    }
    return u;
}

const Uid kA{"alpha", uuid_of(1)};
const Uid kB{"bravo", uuid_of(2)};
const Uid kC{"charlie", uuid_of(3)};
const Uid kR{"requester", uuid_of(4)};
const Cid kCid1{uuid_of(9), 1};
const Cid kCid2{uuid_of(9), 2};
const Cid kCid3{uuid_of(9), 3};

// A control record as a ring delivers it: a private, 8-byte aligned copy.
class Record {
public:
    explicit Record(std::span<const std::byte> bytes) : words_((bytes.size() + 7) / 8) {
        std::memcpy(words_.data(), bytes.data(), bytes.size());
        size_ = bytes.size();
    }
    std::span<const std::byte> bytes() const {
        return {reinterpret_cast<const std::byte*>(words_.data()), size_};
    }

private:
    std::vector<std::uint64_t> words_;
    std::size_t size_ = 0;
};

// Encodes `boxed` with the real encoder and unboxes the verified record: one hop.
std::exception_ptr ship(BoxedError boxed, std::size_t* record_bytes = nullptr,
                        std::size_t cap = wire::kDefaultMaxControlRecordBytes) {
    wire::ControlEncoder enc(cap);
    const Record rec(enc.error(boxed.fields(7)));
    if (record_bytes != nullptr) {
        *record_bytes = rec.bytes().size();
    }
    const wire::ControlView view = wire::decode_control(rec.bytes());
    if (const auto* m = view.as<wire::fb::Error>(); m != nullptr) {
        EXPECT_EQ(m->data_seq(), 7U);
    } else {
        ADD_FAILURE() << "not an Error record: " << view.type_name();
    }
    return unbox(view);
}

// An endpoint of `self` on context `cid` raised whatever `error` holds; its parent unboxes it.
std::exception_ptr hop(const std::exception_ptr& error, const Uid& self, const Cid& cid) {
    return ship(box(error, self, cid, "work"));
}

// Rethrows `p` and returns the RemoteActorError it holds (a copy; fails if it holds another).
template <class E = RemoteActorError>
E expect_as(const std::exception_ptr& p) {
    try {
        std::rethrow_exception(p);
    } catch (const E& e) {
        return e;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "unexpected " << error_type_name(e) << ": " << e.what();
    } catch (...) {
        ADD_FAILURE() << "unexpected non-std exception";
    }
    throw std::logic_error("expect_as failed");
}

std::vector<std::string> names(const std::vector<Uid>& path) {
    std::vector<std::string> out;
    for (const Uid& u : path) {
        out.push_back(u.to_string());
    }
    return out;
}

// --- ids ---

TEST(Ids, UidEqualityIsByUuidOnly) {
    EXPECT_EQ(kA, (Uid{"renamed", kA.uuid}));
    EXPECT_NE(kA, (Uid{kA.name, kB.uuid}));
    std::unordered_set<Uid> set{kA, Uid{"renamed", kA.uuid}, kB};
    EXPECT_EQ(set.size(), 2U);
}

TEST(Ids, UidAndCidPrintNameAndShortHex) {
    EXPECT_EQ(kA.to_string(), "alpha@" + kA.uuid.to_hex().substr(0, 8));
    EXPECT_EQ(kCid2.to_string(), kCid2.opener.to_hex().substr(0, 8) + "#2");
    EXPECT_TRUE(Cid{}.is_nil());
}

TEST(Ids, CidsKeyAHashMap) {
    std::unordered_map<Cid, int> m;
    for (std::uint64_t s = 1; s <= 1000; ++s) {
        m[Cid{uuid_of(1), s}] = static_cast<int>(s);
        m[Cid{uuid_of(2), s}] = -static_cast<int>(s);
    }
    ASSERT_EQ(m.size(), 2000U);
    EXPECT_EQ(m.at(Cid{uuid_of(1), 17}), 17);
    EXPECT_EQ(m.at(Cid{uuid_of(2), 17}), -17);
    EXPECT_NE(std::hash<Cid>{}(kCid1), std::hash<Cid>{}(kCid2));
}

TEST(Ids, WireCidIsThePublicCid) {
    EXPECT_TRUE((std::is_same_v<wire::Cid, shmctx::Cid>));
    const wire::fb::Cid w = wire::to_fb(kCid3);
    EXPECT_EQ(wire::from_fb(w), kCid3);
}

TEST(Ids, SideNamesAndOpposite) {
    EXPECT_EQ(to_string(Side::parent), "parent");
    EXPECT_EQ(to_string(Side::child), "child");
    EXPECT_EQ(opposite(Side::child), Side::parent);
}

// --- error types ---

TEST(Errors, CancelledIsNotCaughtAsStdException) {
    static_assert(!std::is_base_of_v<std::exception, Cancelled>);
    bool swallowed = false;
    bool cancelled = false;
    try {
        try {
            throw Cancelled{};
        } catch (const std::exception&) {
            swallowed = true;
        }
    } catch (const Cancelled&) {
        cancelled = true;
    }
    EXPECT_FALSE(swallowed);
    EXPECT_TRUE(cancelled);
}

struct TypeCase {
    const char* name;
    std::exception_ptr error;
    Errc code;
    const char* text;  // a substring of what()
};

TEST(Errors, EveryTypeHasItsCodeTextAndBase) {
    RemoteErrorInfo info;
    info.src_uid = kA;
    info.boxed_type = info.src_type = "std::runtime_error";
    info.message = "boom";
    RemoteErrorInfo cancel = info;
    cancel.boxed_type = cancel.src_type = "ContextCancelled";
    cancel.message = "'child'-side task was cancelled by itself";
    const std::vector<TypeCase> cases{
        {"RemoteActorError", std::make_exception_ptr(RemoteActorError(info)),
         Errc::remote_actor_error, "boom"},
        {"ContextCancelled", std::make_exception_ptr(ContextCancelled(cancel)),
         Errc::context_cancelled, "itself"},
        {"StreamOverrun",
         std::make_exception_ptr(StreamOverrun(kA, kB, kCid1, OverrunLimit::bytes)),
         Errc::stream_overrun, "limit bytes"},
        {"EndOfChannel", std::make_exception_ptr(EndOfChannel("stream ended")),
         Errc::end_of_channel, "stream ended"},
        {"ClosedResourceError", std::make_exception_ptr(ClosedResourceError("re-open")),
         Errc::closed_resource, "re-open"},
        {"InvalidOperation", std::make_exception_ptr(InvalidOperation("self context")),
         Errc::invalid_operation, "Invalid Operation: self context"},
        {"TooManyContexts", std::make_exception_ptr(TooManyContexts("max_endpoints 4")),
         Errc::too_many_contexts, "max_endpoints 4"},
        {"PayloadTooLarge", std::make_exception_ptr(PayloadTooLarge("Return value", 20000, 16384)),
         Errc::payload_too_large, "Return value is 20000 bytes, over the cap of 16384 bytes"},
        {"TransportClosed", std::make_exception_ptr(TransportClosed("link closed")),
         Errc::transport_closed, "link closed"},
        {"PeerDied", std::make_exception_ptr(PeerDied("bravo died")), Errc::peer_died,
         "bravo died"},
        {"PeerUnresponsive", std::make_exception_ptr(PeerUnresponsive("bravo stalled")),
         Errc::peer_unresponsive, "bravo stalled"},
    };
    for (const TypeCase& c : cases) {
        SCOPED_TRACE(c.name);
        try {
            std::rethrow_exception(c.error);
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), make_error_code(c.code));
            EXPECT_EQ(e.code(), c.code);  // is_error_code_enum
            EXPECT_STREQ(e.code().category().name(), "shmctx");
            EXPECT_NE(e.code().message(), "unknown shmctx error");
            EXPECT_THAT(e.what(), HasSubstr(c.text));
            EXPECT_EQ(error_type_name(e), c.name);  // every shmctx type is registered
        }
    }
    EXPECT_TRUE((std::is_base_of_v<RemoteActorError, ContextCancelled>));
    EXPECT_TRUE((std::is_base_of_v<TransportClosed, PeerDied>));
    EXPECT_TRUE((std::is_base_of_v<TransportClosed, PeerUnresponsive>));
    EXPECT_TRUE((std::is_base_of_v<Error, StreamOverrun>));
    EXPECT_FALSE((std::is_base_of_v<RemoteActorError, StreamOverrun>));
    EXPECT_TRUE((std::is_nothrow_copy_constructible_v<RemoteActorError>));
    EXPECT_TRUE((std::is_nothrow_copy_constructible_v<StreamOverrun>));
}

TEST(Errors, StreamOverrunNamesSenderReceiverCidAndEachLimit) {
    for (const OverrunLimit limit : {OverrunLimit::messages, OverrunLimit::bytes,
                                     OverrunLimit::spill_cap, OverrunLimit::block_timeout}) {
        const StreamOverrun e(kA, kB, kCid1, limit, "ring holds 64 messages");
        const std::string limit_name(to_string(limit));
        SCOPED_TRACE(limit_name);
        EXPECT_EQ(e.limit(), limit);
        EXPECT_EQ(e.sender(), kA);
        EXPECT_EQ(e.receiver(), kB);
        EXPECT_EQ(e.cid(), kCid1);
        EXPECT_THAT(e.what(), HasSubstr("sender " + kA.to_string()));
        EXPECT_THAT(e.what(), HasSubstr("receiver " + kB.to_string()));
        EXPECT_THAT(e.what(), HasSubstr(kCid1.to_string()));
        EXPECT_THAT(e.what(), HasSubstr("limit " + limit_name + ": ring holds 64 messages"));
    }
    EXPECT_EQ(to_string(OverrunLimit::spill_cap), "spill_cap");
    EXPECT_EQ(to_string(OverrunLimit::block_timeout), "block_timeout");
}

TEST(Errors, PayloadTooLargeKeepsFigures) {
    const PayloadTooLarge e("started() value of endpoint 'big'", 70000, 16384);
    EXPECT_EQ(e.size_bytes(), 70000U);
    EXPECT_EQ(e.cap_bytes(), 16384U);
    EXPECT_THAT(e.what(), StartsWith("started() value of endpoint 'big' is 70000 bytes"));
    EXPECT_THAT(e.what(), HasSubstr("stream it"));
}

TEST(Errors, ContextCancelledWithoutCancellerCountsAsCancelledBySource) {
    RemoteErrorInfo info;
    info.src_uid = kB;
    info.boxed_type = info.src_type = "ContextCancelled";
    const ContextCancelled e(info);
    EXPECT_EQ(e.canceller(), kB);
    ASSERT_TRUE(e.RemoteActorError::canceller().has_value());
}

TEST(Errors, RelayUidIsLastHopOrSourceWithoutPath) {
    RemoteErrorInfo info;
    info.src_uid = kA;
    info.boxed_type = info.src_type = "std::runtime_error";
    EXPECT_EQ(RemoteActorError(info).relay_uid(), kA);
    info.relay_path = {kA, kB};
    EXPECT_EQ(RemoteActorError(info).relay_uid(), kB);
}

// --- registry ---

struct UserError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct DerivedUserError : UserError {
    using UserError::UserError;
};
struct UnregisteredError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct OtherUserError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

TEST(ErrorRegistry, StandardAndShmctxTypesArePreRegistered) {
    const std::vector<std::pair<const std::type_info*, std::string>> expected{
        {&typeid(std::exception), "std::exception"},
        {&typeid(std::runtime_error), "std::runtime_error"},
        {&typeid(std::logic_error), "std::logic_error"},
        {&typeid(std::invalid_argument), "std::invalid_argument"},
        {&typeid(std::out_of_range), "std::out_of_range"},
        {&typeid(std::length_error), "std::length_error"},
        {&typeid(std::domain_error), "std::domain_error"},
        {&typeid(std::range_error), "std::range_error"},
        {&typeid(std::overflow_error), "std::overflow_error"},
        {&typeid(std::underflow_error), "std::underflow_error"},
        {&typeid(std::bad_alloc), "std::bad_alloc"},
        {&typeid(RemoteActorError), "RemoteActorError"},
        {&typeid(ContextCancelled), "ContextCancelled"},
        {&typeid(shmctx::StreamOverrun), "StreamOverrun"},
        {&typeid(ProtocolError), "ProtocolError"},
        {&typeid(DecodeError), "DecodeError"},
        {&typeid(ActorNotFound), "ActorNotFound"},
    };
    for (const auto& [type, name] : expected) {
        SCOPED_TRACE(name);
        EXPECT_EQ(error_type_name(*type), name);
        ASSERT_NE(find_error_type(name), nullptr);
        EXPECT_EQ(*find_error_type(name), *type);
    }
}

TEST(ErrorRegistry, UnknownNameResolvesToNoType) {
    EXPECT_EQ(find_error_type("ValueError"), nullptr);
    EXPECT_EQ(find_error_type(""), nullptr);
}

TEST(ErrorRegistry, NameIsThatOfTheMostDerivedType) {
    try {
        throw std::out_of_range("index 9");
    } catch (const std::exception& e) {
        EXPECT_EQ(error_type_name(e), "std::out_of_range");
    }
    try {
        throw PeerDied("gone");
    } catch (const TransportClosed& e) {
        EXPECT_EQ(error_type_name(e), "PeerDied");
    }
}

struct Plain {};
struct MixedError : Plain, std::length_error {
    using std::length_error::length_error;
};

TEST(ErrorRegistry, UnregisteredTypeShipsAsItsNearestRegisteredBase) {
    EXPECT_EQ(error_type_name<UnregisteredError>(), "std::runtime_error");
    EXPECT_EQ(error_type_name<MixedError>(), "std::length_error");  // multiple inheritance
    // Boxed, the receiver resolves the base and the traceback keeps the C++ name.
    const auto remote =
        expect_as(hop(std::make_exception_ptr(UnregisteredError("odd")), kA, kCid1));
    EXPECT_TRUE(remote.boxed_is<std::runtime_error>());
    EXPECT_THAT(remote.traceback(),
                StartsWith("shmctx::detail::(anonymous namespace)::UnregisteredError (shipped as "
                           "std::runtime_error) raised in"));
}

TEST(ErrorRegistry, TypeWithoutRegisteredAncestorUsesItsDemangledName) {
    EXPECT_EQ(error_type_name(typeid(int)), "int");
    const std::string plain = error_type_name<Plain>();
    EXPECT_THAT(plain, HasSubstr("Plain"));
    EXPECT_EQ(find_error_type(plain), nullptr);
    // A C++ name equal to a registered wire name is never given out as that name.
    const std::string clash = error_type_name(typeid(::StreamOverrun));
    EXPECT_EQ(clash, "StreamOverrun (unregistered)");
    EXPECT_EQ(find_error_type(clash), nullptr);
}

TEST(ErrorRegistry, UserTypesRegisterIdempotentlyAndConflictsThrow) {
    // The registry is process-wide: under --gtest_repeat this type is already registered,
    // which is exactly the idempotent case.
    register_error_type<UserError>("app.UserError");
    register_error_type<UserError>("app.UserError");  // idempotent
    ASSERT_NE(find_error_type("app.UserError"), nullptr);
    EXPECT_EQ(*find_error_type("app.UserError"), typeid(UserError));
    EXPECT_EQ(error_type_name<UserError>(), "app.UserError");

    EXPECT_THROW(register_error_type<UserError>("app.Other"), std::invalid_argument);
    EXPECT_THROW(register_error_type<OtherUserError>("app.UserError"), std::invalid_argument);
    EXPECT_THROW(register_error_type<OtherUserError>(""), std::invalid_argument);
    EXPECT_THROW(register_error_type<OtherUserError>("bad\nname"), std::invalid_argument);
    EXPECT_THROW(register_error_type<OtherUserError>(std::string(129, 'x')), std::invalid_argument);
    EXPECT_EQ(find_error_type("app.Other"), nullptr);

    // An unregistered subclass ships as its nearest registered base: the user type.
    EXPECT_EQ(error_type_name<DerivedUserError>(), "app.UserError");

    // Boxed by an actor and unboxed by its parent, a registered user type resolves.
    const auto remote = expect_as(hop(std::make_exception_ptr(UserError("user")), kA, kCid1));
    EXPECT_EQ(remote.boxed_type_name(), "app.UserError");
    EXPECT_TRUE(remote.boxed_is<UserError>());
    EXPECT_FALSE(remote.boxed_is<std::runtime_error>());  // exact type, as tractor's `is`
}

TEST(ErrorRegistry, ConcurrentRegistrationAndLookupAreSafe) {
    struct T0 : std::runtime_error {
        using std::runtime_error::runtime_error;
    };
    struct T1 : std::runtime_error {
        using std::runtime_error::runtime_error;
    };
    constexpr int kThreads = 4;
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&start, t] {
            start.arrive_and_wait();
            for (int i = 0; i < 200; ++i) {
                if (t % 2 == 0) {
                    register_error_type<T0>("concurrent.T0");
                } else {
                    register_error_type<T1>("concurrent.T1");
                }
                (void)find_error_type("concurrent.T0");
                (void)error_type_name<T1>();
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    ASSERT_NE(find_error_type("concurrent.T0"), nullptr);
    EXPECT_EQ(*find_error_type("concurrent.T0"), typeid(T0));
    EXPECT_EQ(error_type_name<T1>(), "concurrent.T1");
}

// --- boxing, relaying, unboxing ---

TEST(Boxing, StdErrorArrivesAsRemoteActorErrorFromItsSource) {
    const auto p = hop(std::make_exception_ptr(std::runtime_error("boom")), kA, kCid1);
    const auto e = expect_as(p);
    EXPECT_EQ(typeid(e), typeid(RemoteActorError));
    EXPECT_EQ(e.code(), Errc::remote_actor_error);
    EXPECT_EQ(e.boxed_type_name(), "std::runtime_error");
    EXPECT_EQ(e.src_type_name(), "std::runtime_error");
    EXPECT_TRUE(e.boxed_is<std::runtime_error>());
    EXPECT_TRUE(e.src_is<std::runtime_error>());
    EXPECT_FALSE(e.is_inception());
    EXPECT_EQ(e.src_uid(), kA);
    EXPECT_EQ(e.src_uid().name, "alpha");
    EXPECT_EQ(names(e.relay_path()), names({kA}));
    EXPECT_EQ(e.relay_uid(), kA);
    EXPECT_EQ(e.message(), "boom");
    ASSERT_TRUE(e.cid().has_value());
    EXPECT_EQ(*e.cid(), kCid1);
    EXPECT_FALSE(e.canceller().has_value());
    EXPECT_FALSE(e.sender().has_value());
    EXPECT_EQ(e.traceback(), "std::runtime_error raised in endpoint 'work' of " + kA.to_string() +
                                 " (cid " + kCid1.to_string() + "): boom");
    EXPECT_THAT(e.what(), HasSubstr("std::runtime_error from " + kA.to_string()));
    EXPECT_THAT(e.what(), HasSubstr(": boom"));
}

TEST(Boxing, RelayIsAnInceptionKeepingTheSource) {
    // A raises in context 1 with B; B's endpoint (context 2 with C) lets it escape.
    const auto at_b = hop(std::make_exception_ptr(std::runtime_error("boom")), kA, kCid1);
    const auto e = expect_as(hop(at_b, kB, kCid2));
    EXPECT_EQ(e.boxed_type_name(), "RemoteActorError");
    EXPECT_TRUE(e.boxed_is<RemoteActorError>());
    EXPECT_EQ(e.src_type_name(), "std::runtime_error");
    EXPECT_TRUE(e.src_is<std::runtime_error>());
    EXPECT_EQ(e.src_uid(), kA);
    EXPECT_EQ(names(e.relay_path()), names({kA, kB}));
    EXPECT_EQ(e.relay_uid(), kB);
    EXPECT_TRUE(e.is_inception());
    EXPECT_EQ(e.message(), "boom");
    EXPECT_EQ(*e.cid(), kCid2);
    EXPECT_THAT(e.traceback(), StartsWith("relayed by endpoint 'work' of " + kB.to_string() +
                                          " (cid " + kCid2.to_string() + ") from " +
                                          kA.to_string() + "\nstd::runtime_error raised in"));
    EXPECT_THAT(e.what(), HasSubstr("relayed " + kA.to_string() + " -> " + kB.to_string()));
}

TEST(Boxing, SecondRelayStillKeepsTheSource) {
    const auto at_b = hop(std::make_exception_ptr(std::invalid_argument("bad")), kA, kCid1);
    const auto at_c = hop(at_b, kB, kCid2);
    const auto e = expect_as(hop(at_c, kC, kCid3));
    EXPECT_EQ(e.src_uid(), kA);
    EXPECT_EQ(e.src_type_name(), "std::invalid_argument");
    EXPECT_EQ(e.boxed_type_name(), "RemoteActorError");
    EXPECT_EQ(names(e.relay_path()), names({kA, kB, kC}));
    EXPECT_EQ(e.relay_uid(), kC);
    EXPECT_TRUE(e.is_inception());
    EXPECT_EQ(e.message(), "bad");
    EXPECT_THAT(e.traceback(), HasSubstr("relayed by endpoint 'work' of " + kC.to_string()));
    EXPECT_THAT(e.traceback(), HasSubstr("relayed by endpoint 'work' of " + kB.to_string()));
}

TEST(Boxing, RelayedContextCancelledKeepsCancellerAndNamesTheRelayer) {
    // R cancelled A's task (a third party for B); B's endpoint re-raises the ctxc to C.
    const ContextCancelled at_a = make_context_cancelled(kA, kB, kR, kCid1, Side::child);
    const auto at_b = ship(box(std::make_exception_ptr(at_a), kA, kCid1));
    const auto first = expect_as<ContextCancelled>(at_b);
    EXPECT_EQ(first.canceller(), kR);
    EXPECT_EQ(first.src_uid(), kA);
    EXPECT_THAT(first.message(), HasSubstr("by a remote peer"));

    const auto e = expect_as<ContextCancelled>(hop(at_b, kB, kCid2));
    EXPECT_EQ(typeid(e), typeid(ContextCancelled));
    EXPECT_EQ(e.code(), Errc::context_cancelled);
    EXPECT_EQ(e.canceller(), kR);
    EXPECT_EQ(e.src_uid(), kB);
    EXPECT_EQ(e.boxed_type_name(), "ContextCancelled");
    EXPECT_EQ(e.src_type_name(), "ContextCancelled");
    EXPECT_FALSE(e.is_inception());
    EXPECT_EQ(names(e.relay_path()), names({kA, kB}));
    EXPECT_EQ(e.relay_uid(), kB);
    EXPECT_EQ(e.message(), first.message());
    EXPECT_EQ(*e.cid(), kCid2);
}

TEST(Boxing, StreamOverrunArrivesAsRemoteActorErrorBoxingIt) {
    const auto p = hop(std::make_exception_ptr(shmctx::StreamOverrun(
                           kA, kB, kCid1, OverrunLimit::messages, "ring holds 64 messages")),
                       kA, kCid1);
    bool caught_as_overrun = false;
    try {
        std::rethrow_exception(p);
    } catch (const shmctx::StreamOverrun&) {
        caught_as_overrun = true;
    } catch (const RemoteActorError& e) {
        EXPECT_TRUE(e.boxed_is<shmctx::StreamOverrun>());
        EXPECT_TRUE(e.src_is<shmctx::StreamOverrun>());
        EXPECT_EQ(e.boxed_type_name(), "StreamOverrun");
        ASSERT_TRUE(e.sender().has_value());
        EXPECT_EQ(*e.sender(), kA);
        EXPECT_THAT(e.message(), HasSubstr("receiver " + kB.to_string()));
        EXPECT_THAT(e.message(), HasSubstr("limit messages"));
    }
    EXPECT_FALSE(caught_as_overrun);

    // Relayed once more (spec §3.9: boxed RemoteActorError, src_type StreamOverrun).
    const auto relayed = expect_as(hop(p, kB, kCid2));
    EXPECT_TRUE(relayed.boxed_is<RemoteActorError>());
    EXPECT_TRUE(relayed.src_is<shmctx::StreamOverrun>());
    EXPECT_EQ(*relayed.sender(), kA);
    EXPECT_THAT(relayed.traceback(), HasSubstr("StreamOverrun"));
}

TEST(Boxing, ContextCancelledTextsFollowTheSpec) {
    const auto itself = make_context_cancelled(kB, kA, kB, kCid1, Side::child);
    EXPECT_THAT(itself.message(), StartsWith("'child'-side task was cancelled by itself"));
    EXPECT_THAT(itself.message(), HasSubstr("canceller: " + kB.to_string()));
    EXPECT_THAT(itself.message(), HasSubstr("cancellee: " + kB.to_string()));
    EXPECT_EQ(itself.canceller(), kB);
    EXPECT_EQ(itself.src_uid(), kB);

    const auto by_peer = make_context_cancelled(kB, kA, kA, kCid1, Side::child, "ctx.cancel()");
    EXPECT_THAT(by_peer.message(),
                StartsWith("'child'-side task was cancelled by its 'parent'-side peer"));
    EXPECT_THAT(by_peer.message(), HasSubstr("canceller: " + kA.to_string()));
    EXPECT_THAT(by_peer.message(), HasSubstr("cancellee: " + kB.to_string()));
    EXPECT_THAT(by_peer.message(), HasSubstr("reason: ctx.cancel()"));

    const auto remote = make_context_cancelled(kB, kA, kR, kCid1, Side::child);
    EXPECT_THAT(remote.message(), HasSubstr("by a remote peer"));
    EXPECT_EQ(remote.canceller(), kR);

    const auto parent = make_context_cancelled(kA, kB, kB, kCid1, Side::parent);
    EXPECT_THAT(parent.message(),
                StartsWith("'parent'-side task was cancelled by its 'child'-side peer"));

    const auto unknown = make_context_cancelled(kB, kA, std::nullopt, kCid1, Side::child);
    EXPECT_THAT(unknown.message(), HasSubstr("by an unknown cause"));
    EXPECT_EQ(unknown.canceller(), kB);

    // Shipped, the self-cancel still says "itself" and names the canceller.
    const auto e = expect_as<ContextCancelled>(
        ship(box(std::make_exception_ptr(itself), kB, kCid1, "sleeper")));
    EXPECT_THAT(e.what(), HasSubstr("itself"));
    EXPECT_EQ(e.canceller(), kB);
    EXPECT_EQ(names(e.relay_path()), names({kB}));
    EXPECT_THAT(e.traceback(),
                StartsWith("ContextCancelled raised in endpoint 'sleeper' of " + kB.to_string()));
}

TEST(Boxing, BoxedFieldsAreWhatTheRecordCarries) {
    // Checked before the receiver's repairs (unbox appends a missing last hop).
    const auto at_b = hop(std::make_exception_ptr(std::runtime_error("boom")), kA, kCid1);
    BoxedError boxed = box(at_b, kB, kCid2, "work");
    EXPECT_EQ(names(boxed.info.relay_path), names({kA, kB}));
    EXPECT_EQ(boxed.hop, kB);
    const wire::ErrorFields f = boxed.fields(5);
    EXPECT_EQ(f.cid, kCid2);
    EXPECT_EQ(f.data_seq, 5U);
    EXPECT_EQ(f.src_uid.uuid, kA.uuid);
    EXPECT_EQ(f.src_uid.name, "alpha");
    EXPECT_EQ(f.boxed_type, "RemoteActorError");
    EXPECT_EQ(f.src_type, "std::runtime_error");
    ASSERT_EQ(f.relay_path.size(), 2U);
    EXPECT_EQ(f.relay_path[0].uuid, kA.uuid);
    EXPECT_EQ(f.relay_path[1].uuid, kB.uuid);
    EXPECT_EQ(f.sender.uuid, kB.uuid);
    EXPECT_FALSE(f.canceller.has_value());

    wire::ControlEncoder enc;
    const Record rec(enc.error(f));
    const auto* m = wire::decode_control(rec.bytes()).as<wire::fb::Error>();
    ASSERT_NE(m, nullptr);
    const auto* path = m->relay_path();
    ASSERT_NE(path, nullptr);
    EXPECT_EQ(path->size(), 2U);

    BoxedError first = box(std::make_exception_ptr(std::logic_error("x")), kA, kCid1);
    EXPECT_EQ(names(first.info.relay_path), names({kA}));
    const ContextCancelled cc = make_context_cancelled(kA, kB, kR, kCid1, Side::child);
    BoxedError ctxc = box(std::make_exception_ptr(cc), kA, kCid1);
    ASSERT_TRUE(ctxc.fields().canceller.has_value());
    EXPECT_EQ(ctxc.fields().canceller->uuid, kR.uuid);
}

TEST(Boxing, UnboxedOnceRethrowsTheSameObject) {
    const auto p = hop(std::make_exception_ptr(std::runtime_error("boom")), kA, kCid1);
    const void* first = nullptr;
    const void* second = nullptr;
    try {
        std::rethrow_exception(p);
    } catch (const RemoteActorError& e) {
        first = &e;
    }
    try {
        std::rethrow_exception(p);
    } catch (const std::exception& e) {
        second = &e;
    }
    ASSERT_NE(first, nullptr);
    EXPECT_EQ(first, second);
}

TEST(Boxing, EncoderCapsALongErrorWithAMarker) {
    const std::string huge(100 * 1024, 'x');
    std::size_t bytes = 0;
    const auto e =
        expect_as(ship(box(std::make_exception_ptr(std::runtime_error(huge)), kA, kCid1), &bytes));
    EXPECT_LE(bytes, wire::kDefaultMaxControlRecordBytes);
    EXPECT_THAT(e.traceback(), HasSubstr("[... traceback truncated:"));
    EXPECT_THAT(e.message(), HasSubstr("[... message truncated:"));
    EXPECT_EQ(e.src_uid(), kA);
    EXPECT_TRUE(e.boxed_is<std::runtime_error>());
}

TEST(Boxing, CancelledAndNonStdObjectsAreBoxedToo) {
    const auto c =
        expect_as<ContextCancelled>(hop(std::make_exception_ptr(Cancelled{}), kB, kCid1));
    EXPECT_EQ(c.canceller(), kB);
    EXPECT_THAT(c.message(), HasSubstr("by an unknown cause"));
    EXPECT_THAT(c.traceback(), HasSubstr("uncaught shmctx::Cancelled"));

    const auto n = expect_as(hop(std::make_exception_ptr(42), kB, kCid1));
    EXPECT_EQ(n.boxed_type_name(), "<non-std exception>");
    EXPECT_EQ(n.boxed_type(), nullptr);
    EXPECT_THAT(n.message(), HasSubstr("not derived from std::exception"));

    EXPECT_THROW((void)box(std::exception_ptr(), kA, kCid1), std::invalid_argument);
}

TEST(Boxing, NestedCausesAppearInTheTraceback) {
    std::exception_ptr p;
    try {
        try {
            throw std::out_of_range("key 7");
        } catch (...) {
            std::throw_with_nested(std::runtime_error("lookup failed"));
        }
    } catch (...) {
        p = std::current_exception();
    }
    const auto e = expect_as(hop(p, kA, kCid1));
    EXPECT_EQ(e.message(), "lookup failed");
    EXPECT_THAT(e.traceback(), HasSubstr("\ncaused by: std::out_of_range: key 7"));
    // The dynamic type is the library's nested wrapper: shipped as its registered base.
    EXPECT_EQ(e.boxed_type_name(), "std::runtime_error");
    EXPECT_TRUE(e.boxed_is<std::runtime_error>());
}

TEST(Boxing, PeerRecordsWithUnknownTypesOrMissingFieldsUnboxSafely) {
    wire::ControlEncoder enc;
    // A record from a peer: an unknown type name, no relay path, a ctxc without canceller.
    const wire::UidRef a{kA.name, kA.uuid};
    const wire::UidRef b{kB.name, kB.uuid};
    const Record unknown(enc.error({kCid1, 0, a, "ValueError", "ValueError", {}, "m", "", {}, b}));
    const auto e = expect_as(unbox(wire::decode_control(unknown.bytes())));
    EXPECT_EQ(e.boxed_type_name(), "ValueError");
    EXPECT_EQ(e.boxed_type(), nullptr);
    EXPECT_FALSE(e.boxed_is<std::runtime_error>());
    EXPECT_FALSE(e.is_inception());
    EXPECT_EQ(names(e.relay_path()), names({kB}));  // the record's sender is the last hop
    EXPECT_EQ(e.relay_uid(), kB);

    const Record ctxc(
        enc.error({kCid1, 0, a, "ContextCancelled", "ContextCancelled", {}, "", "", {}, a}));
    const auto c = expect_as<ContextCancelled>(unbox(wire::decode_control(ctxc.bytes())));
    EXPECT_EQ(c.canceller(), kA);

    const Record stop(enc.stop(kCid1, 0));
    EXPECT_THROW((void)unbox(wire::decode_control(stop.bytes())), std::invalid_argument);
}

}  // namespace
}  // namespace shmctx::detail
