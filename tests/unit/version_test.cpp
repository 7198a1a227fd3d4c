// shmctx::version() against the CMake project version (passed by tests/unit/CMakeLists.txt),
// and the layout and protocol versions against the shm layer's constants.
#include "shmctx/version.hpp"

#include <gtest/gtest.h>

#include <string>

#include "shmctx/shm/layout.hpp"

namespace shmctx {
namespace {

TEST(Version, IsTheCMakeProjectVersion) {
    const Version v = version();
    EXPECT_EQ(v.major, SHMCTX_EXPECTED_MAJOR);
    EXPECT_EQ(v.minor, SHMCTX_EXPECTED_MINOR);
    EXPECT_EQ(v.patch, SHMCTX_EXPECTED_PATCH);
    EXPECT_STREQ(v.text, SHMCTX_EXPECTED_VERSION);
    EXPECT_EQ(v.string(), SHMCTX_EXPECTED_VERSION);
    EXPECT_EQ(library_version(), SHMCTX_EXPECTED_VERSION);
    EXPECT_EQ(v.string(), std::to_string(v.major) + "." + std::to_string(v.minor) + "." +
                              std::to_string(v.patch));
}

TEST(Version, ComparesByNumber) {
    const Version v = version();
    EXPECT_EQ(v, (Version{v.major, v.minor, v.patch, "another text"}));
    EXPECT_LT(v, (Version{v.major, v.minor, v.patch + 1}));
    EXPECT_GT((Version{v.major + 1, 0, 0}), v);
    EXPECT_LT((Version{0, 9, 9}), (Version{1, 0, 0}));
    EXPECT_LT((Version{1, 2, 9}), (Version{1, 3, 0}));
}

TEST(Version, LayoutAndProtocolAreTheShmLayers) {
    EXPECT_EQ(layout_version(), shm::kLayoutVersion);
    EXPECT_EQ(protocol_version(), shm::kProtocolVersion);
}

}  // namespace
}  // namespace shmctx
