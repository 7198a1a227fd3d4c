// Compile-failure probe (never built by default): Payload::as<T>() of a FlatBuffers type that
// has no SHMCTX_ROOT_TYPE declaration must be rejected at compile time with a clear message.
#include "shmctx/payload.hpp"
#include "shmctx/test_tick_generated.h"

// Deliberately no SHMCTX_ROOT_TYPE(shmctx::test::fb::Tick, "TICK") here.
const shmctx::test::fb::Tick* probe(const shmctx::Payload& p) {
    return p.as<shmctx::test::fb::Tick>();
}
