// Names, uuids, deadlines and fault-point parsing.
#include <gtest/gtest.h>

#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/uuid.hpp"

namespace shmctx::shm {
namespace {

TEST(Names, RejectsNamesThatCannotFormASegmentName) {
    Names names(test::unique_ns("names"));
    EXPECT_THROW(names.actor_file(""), InvalidName);
    EXPECT_THROW(names.actor_file("a.b"), InvalidName);
    EXPECT_THROW(names.actor_file("a/b"), InvalidName);
    EXPECT_THROW(names.actor_file(std::string(65, 'a')), InvalidName);
    EXPECT_NO_THROW(names.actor_file(std::string(64, 'a')));
    EXPECT_THROW(Names("bad ns"), InvalidName);
}

TEST(Names, PrefixCarriesEuidAndNamespace) {
    Names names("alpha", 1234);
    EXPECT_EQ(names.prefix(), "shmctx.1234.alpha.");
    EXPECT_EQ(names.actor_file("feed"), "shmctx.1234.alpha.actor.feed");
    EXPECT_EQ(names.actor_segment("feed"), "shmctx.1234.alpha.seg.feed");
}

TEST(Names, NamespaceComesFromEnvironmentWhenNotGiven) {
    ::setenv("SHMCTX_NS", "from-env", 1);
    EXPECT_EQ(resolve_namespace(""), "from-env");
    EXPECT_EQ(resolve_namespace("explicit"), "explicit");
    ::unsetenv("SHMCTX_NS");
    EXPECT_EQ(resolve_namespace(""), "default");
}

TEST(Uuid, RandomIsVersion4AndRoundTripsThroughHex) {
    const Uuid a = Uuid::random();
    const Uuid b = Uuid::random();
    EXPECT_NE(a, b);
    EXPECT_EQ(a.bytes[6] >> 4, 4);
    Uuid parsed;
    ASSERT_TRUE(Uuid::parse_hex(a.to_hex(), parsed));
    EXPECT_EQ(parsed, a);
    EXPECT_FALSE(Uuid::parse_hex("xyz", parsed));
    EXPECT_EQ(a.short_hex().size(), 8U);
}

}  // namespace
}  // namespace shmctx::shm
