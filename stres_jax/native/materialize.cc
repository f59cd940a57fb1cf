// An identity that XLA cannot see through: the buffer copied as it lies, for any element type.
//
// XLA's CPU fusion duplicates cheap elementwise producers into every consumer; along a residual
// stream (each block's output = ReLU(BN(conv) + the previous block's output)) that rebuilds the
// whole chain of earlier blocks inside each fusion, a cost that grows with the square of the depth
// (ir-CSN-152's layer3: fusions of up to 188 operands). A custom call's operand is materialised once.
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

static ffi::Error MaterializeImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y) {
  if (y->untyped_data() != x.untyped_data()) std::memcpy(y->untyped_data(), x.untyped_data(), x.size_bytes());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(StresMaterialize, MaterializeImpl,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());
