// Payload storage, FlexBuffers values, and the checks in front of the FlatBuffers Verifier.
#include "shmctx/payload.hpp"

#include <flatbuffers/flexbuffers.h>

#include <cstring>
#include <limits>
#include <string>

namespace shmctx {

std::string_view to_string(PayloadKind kind) noexcept {
    switch (kind) {
        case PayloadKind::empty:
            return "empty";
        case PayloadKind::bytes:
            return "bytes";
        case PayloadKind::string:
            return "string";
        case PayloadKind::value:
            return "value";
        case PayloadKind::flatbuffer:
            return "flatbuffer";
    }
    return "unknown";
}

PayloadView::PayloadView(const flatbuffers::FlatBufferBuilder& fbb) noexcept
    : kind_(PayloadKind::flatbuffer),
      bytes_(reinterpret_cast<const std::byte*>(fbb.GetBufferPointer()), fbb.GetSize()) {}

PayloadView::PayloadView(const Payload& payload) noexcept : PayloadView(payload.view()) {}

// --- storage ---

std::byte* Payload::allocate(PayloadKind kind, std::size_t size) {
    heap_.reset();
    if (size > kInlineBytes) {
        heap_ = std::make_unique_for_overwrite<std::uint64_t[]>((size + 7) / 8);
    }
    kind_ = kind;
    size_ = size;
    return const_cast<std::byte*>(data());
}

Payload Payload::copy(PayloadView view) {
    Payload p;
    std::byte* dst = p.allocate(view.kind(), view.size_bytes());
    if (view.size_bytes() != 0) {
        std::memcpy(dst, view.bytes().data(), view.size_bytes());
    }
    return p;
}

Payload::Payload(const Payload& other) : Payload(copy(other.view())) {}

Payload& Payload::operator=(const Payload& other) {
    if (this != &other) {
        *this = copy(other.view());
    }
    return *this;
}

Payload::Payload(Payload&& other) noexcept
    : kind_(other.kind_), size_(other.size_), heap_(std::move(other.heap_)) {
    if (size_ <= kInlineBytes) {
        std::memcpy(inline_, other.inline_, size_);
    }
    other.kind_ = PayloadKind::empty;
    other.size_ = 0;
}

Payload& Payload::operator=(Payload&& other) noexcept {
    if (this != &other) {
        kind_ = other.kind_;
        size_ = other.size_;
        heap_ = std::move(other.heap_);
        if (size_ <= kInlineBytes) {
            std::memcpy(inline_, other.inline_, size_);
        }
        other.kind_ = PayloadKind::empty;
        other.size_ = 0;
    }
    return *this;
}

// --- FlexBuffers values ---

namespace {

// One builder per thread, cleared per value: after the first call encoding allocates nothing
// but the Payload's own storage (and nothing at all for values that fit inline).
flexbuffers::Builder& value_builder() {
    thread_local flexbuffers::Builder builder(64);
    builder.Clear();
    return builder;
}

template <class Fill>
Payload finish_value(Fill&& fill) {
    flexbuffers::Builder& b = value_builder();
    fill(b);
    b.Finish();
    const std::vector<std::uint8_t>& buf = b.GetBuffer();
    return Payload::copy(PayloadView(
        PayloadKind::value, std::span(reinterpret_cast<const std::byte*>(buf.data()), buf.size())));
}

std::string_view flex_type_name(flexbuffers::Type t) noexcept {
    switch (t) {
        case flexbuffers::FBT_NULL:
            return "null";
        case flexbuffers::FBT_INT:
        case flexbuffers::FBT_INDIRECT_INT:
            return "an integer";
        case flexbuffers::FBT_UINT:
        case flexbuffers::FBT_INDIRECT_UINT:
            return "an unsigned integer";
        case flexbuffers::FBT_FLOAT:
        case flexbuffers::FBT_INDIRECT_FLOAT:
            return "a floating-point number";
        case flexbuffers::FBT_BOOL:
            return "a bool";
        case flexbuffers::FBT_STRING:
            return "a string";
        case flexbuffers::FBT_KEY:
            return "a key";
        case flexbuffers::FBT_MAP:
            return "a map";
        case flexbuffers::FBT_BLOB:
            return "a blob";
        default:
            return "a vector";
    }
}

}  // namespace

Payload Payload::encode_bool(bool v) {
    return finish_value([v](flexbuffers::Builder& b) { b.Bool(v); });
}
Payload Payload::encode_int(std::int64_t v) {
    return finish_value([v](flexbuffers::Builder& b) { b.Int(v); });
}
Payload Payload::encode_double(double v) {
    return finish_value([v](flexbuffers::Builder& b) { b.Double(v); });
}
Payload Payload::encode_string(std::string_view v) {
    return finish_value([v](flexbuffers::Builder& b) { b.String(v.data(), v.size()); });
}

namespace {

// The verified root reference of a value payload; DecodeError naming `wanted` otherwise.
flexbuffers::Reference value_root(PayloadKind kind, std::span<const std::byte> bytes,
                                  std::string_view wanted) {
    if (kind != PayloadKind::value) {
        throw DecodeError("Payload::value<" + std::string(wanted) + ">(): the payload is " +
                          std::string(to_string(kind)) + ", not a value");
    }
    const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
    // The FlexBuffers Verifier asserts on sizes beyond FLATBUFFERS_MAX_BUFFER_SIZE.
    if (bytes.size() >= FLATBUFFERS_MAX_BUFFER_SIZE ||
        !flexbuffers::VerifyBuffer(data, bytes.size())) {
        throw DecodeError("Payload::value<" + std::string(wanted) + ">(): corrupt FlexBuffer (" +
                          std::to_string(bytes.size()) + " bytes)");
    }
    return flexbuffers::GetRoot(data, bytes.size());
}

[[noreturn]] void throw_mismatch(std::string_view wanted, flexbuffers::Type got) {
    throw DecodeError("Payload::value<" + std::string(wanted) + ">(): the value is " +
                      std::string(flex_type_name(got)));
}

}  // namespace

bool Payload::decode_bool() const {
    const flexbuffers::Reference r = value_root(kind_, bytes(), "bool");
    if (r.GetType() != flexbuffers::FBT_BOOL) {
        throw_mismatch("bool", r.GetType());
    }
    return r.AsBool();
}

std::int64_t Payload::decode_int() const {
    const flexbuffers::Reference r = value_root(kind_, bytes(), "integer");
    switch (r.GetType()) {
        case flexbuffers::FBT_INT:
        case flexbuffers::FBT_INDIRECT_INT:
            return r.AsInt64();
        case flexbuffers::FBT_UINT:
        case flexbuffers::FBT_INDIRECT_UINT: {
            // Written by another FlexBuffers producer; accepted when it fits int64.
            const std::uint64_t u = r.AsUInt64();
            if (!std::in_range<std::int64_t>(u)) {
                throw DecodeError("Payload::value<integer>(): " + std::to_string(u) +
                                  " does not fit int64");
            }
            return static_cast<std::int64_t>(u);
        }
        default:
            throw_mismatch("integer", r.GetType());
    }
}

double Payload::decode_double() const {
    const flexbuffers::Reference r = value_root(kind_, bytes(), "floating-point");
    if (r.GetType() != flexbuffers::FBT_FLOAT && r.GetType() != flexbuffers::FBT_INDIRECT_FLOAT) {
        throw_mismatch("floating-point", r.GetType());
    }
    return r.AsDouble();
}

std::string_view Payload::decode_string() const {
    if (kind_ == PayloadKind::string) {
        return {reinterpret_cast<const char*>(data()), size_};
    }
    const flexbuffers::Reference r = value_root(kind_, bytes(), "string");
    if (r.GetType() != flexbuffers::FBT_STRING) {
        throw_mismatch("string", r.GetType());
    }
    const flexbuffers::String s = r.AsString();  // verified: length and terminator in bounds
    return {s.c_str(), s.length()};
}

void Payload::throw_int_range(std::int64_t v) {
    throw DecodeError("Payload::value<T>(): " + std::to_string(v) + " does not fit T");
}

void Payload::check_flatbuffer_kind() const {
    if (kind_ != PayloadKind::flatbuffer && kind_ != PayloadKind::bytes) {
        throw DecodeError("Payload::as<T>(): the payload is " + std::string(to_string(kind_)) +
                          ", not a FlatBuffer");
    }
}

// --- FlatBuffers verification front ---

namespace detail {

void check_flatbuffer_frame(std::span<const std::byte> buf, const char* identifier) {
    const std::string ident(identifier, flatbuffers::kFileIdentifierLength);
    // Root offset plus identifier; the Verifier itself asserts on sizes of 2 GiB and more.
    constexpr std::size_t kMinBytes =
        sizeof(flatbuffers::uoffset_t) + flatbuffers::kFileIdentifierLength;
    if (buf.size() < kMinBytes || buf.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
        throw DecodeError("FlatBuffer '" + ident + "': " + std::to_string(buf.size()) +
                          " bytes is not a valid buffer size");
    }
    // The Verifier checks alignment relative to the buffer start; the absolute address must be
    // aligned too, or reading an 8-byte scalar in place would be a misaligned access.
    if (reinterpret_cast<std::uintptr_t>(buf.data()) % kPayloadAlign != 0) {
        throw DecodeError("FlatBuffer '" + ident + "': buffer is not 8-byte aligned");
    }
    const char* found = reinterpret_cast<const char*>(buf.data()) + sizeof(flatbuffers::uoffset_t);
    if (std::memcmp(found, identifier, flatbuffers::kFileIdentifierLength) != 0) {
        std::string shown;
        for (std::size_t i = 0; i < flatbuffers::kFileIdentifierLength; ++i) {
            const auto c = static_cast<unsigned char>(found[i]);
            if (c >= 0x20 && c < 0x7f) {
                shown += static_cast<char>(c);
            } else {
                static constexpr char kHex[] = "0123456789abcdef";
                shown += "\\x";
                shown += kHex[c >> 4];
                shown += kHex[c & 0xf];
            }
        }
        throw DecodeError("FlatBuffer: wrong file identifier: expected '" + ident + "', found '" +
                          shown + "'");
    }
}

void throw_verify_failed(std::size_t size_bytes, const char* identifier) {
    throw DecodeError("FlatBuffer '" + std::string(identifier, flatbuffers::kFileIdentifierLength) +
                      "' (" + std::to_string(size_bytes) +
                      " bytes) failed verification: an offset, length, alignment, nesting or "
                      "required field is invalid");
}

flatbuffers::Verifier::Options payload_verifier_options() noexcept {
    flatbuffers::Verifier::Options o;
    o.max_depth = 64;          // user schemas nest; 64 is FlatBuffers' own default
    o.max_tables = 1'000'000;  // bounds verification time of a hostile buffer
    o.check_alignment = true;  // relative to the start, which we checked is 8-aligned
    o.check_nested_flatbuffers = true;
    return o;
}

}  // namespace detail

}  // namespace shmctx
