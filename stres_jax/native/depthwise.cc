// A depthwise (channel-separated) 3-D convolution's forward and kernel gradient as XLA FFI handlers.
//
// y[n, od, oh, ow, c] = bias[c] + sum over kd, kh, kw of x[n, od*sd + kd - pd, ...] * k[kd, kh, kw, 0, c]
// [then ReLU]: each output row is summed in place, tap by tap, while the input rows it reads are in
// cache; no padded copy of x (XLA pads, then fuses 27 shifted products: 2 passes over memory).
//
// dk[kd, kh, kw, 0, c] = sum over n, od, oh, ow of x[n, od*sd + kd - pd, oh*sh + kh - ph, ow*sw + kw - pw, c]
//                        * dy[n, od, oh, ow, c]   (zero outside x: the conv's padding)
// x and dy are NDHWC, dk is DHWIO with I = 1 (Flax's depthwise kernel), float32 or float64. One pass
// over dy: each output row meets the kt*kh*kw input rows it was made from while they are in cache, and
// every tap's sums stay in a per-thread accumulator of kt*kh*kw*C values. XLA computes the same sum as
// one product and one reduction per tap, 27 passes over memory (ir-CSN-152: 3.7 s of a 10 s step).
// The forward also takes bfloat16 operands: summed in float32 as the float32 forward sums, rounded
// once to bfloat16 (to nearest even) when stored.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shape {
  int64_t n, d, h, w, c, od, oh, ow, kd, kh, kw, s[3], p[3];
};

// The first and one-past-last output column whose tap `k` lands inside the input's `size` columns.
inline void valid_range(int64_t k, int64_t stride, int64_t pad, int64_t size, int64_t out, int64_t& lo, int64_t& hi) {
  lo = pad - k <= 0 ? 0 : (pad - k + stride - 1) / stride;
  hi = size - 1 + pad - k < 0 ? 0 : std::min<int64_t>(out, (size - 1 + pad - k) / stride + 1);
}

// Calls `tap(kd, kh, x_row)` for each (kd, kh) tap of output row (n, od, oh) that lands inside x,
// with x_row the start of the input row it reads (the padding's rows are skipped: zeros).
template <typename T, typename Tap>
__attribute__((always_inline)) inline void for_each_input_row(const T* x, const Shape& s, int64_t n, int64_t od,
                                                              int64_t oh, Tap tap) {
  for (int64_t kd = 0; kd < s.kd; ++kd) {
    const int64_t id = od * s.s[0] + kd - s.p[0];
    if (id < 0 || id >= s.d) continue;
    for (int64_t kh = 0; kh < s.kh; ++kh) {
      const int64_t ih = oh * s.s[1] + kh - s.p[1];
      if (ih < 0 || ih >= s.h) continue;
      tap(kd, kh, x + ((n * s.d + id) * s.h + ih) * s.w * s.c);
    }
  }
}

template <typename T>
__attribute__((always_inline)) inline void accumulate_row(const T* __restrict x, const T* __restrict dy,
                                                          T* __restrict acc, const Shape& s, int64_t n, int64_t od,
                                                          int64_t oh) {
  const int64_t C = s.c;
  const T* dy_row = dy + ((n * s.od + od) * s.oh + oh) * s.ow * C;
  for_each_input_row(x, s, n, od, oh, [&](int64_t kd, int64_t kh, const T* __restrict x_row) {
    for (int64_t kw = 0; kw < s.kw; ++kw) {
      T* a = acc + ((kd * s.kh + kh) * s.kw + kw) * C;
      int64_t lo, hi;
      valid_range(kw, s.s[2], s.p[2], s.w, s.ow, lo, hi);
      for (int64_t ow = lo; ow < hi; ++ow) {
        const T* xv = x_row + (ow * s.s[2] + kw - s.p[2]) * C;
        const T* gv = dy_row + ow * C;
        for (int64_t c = 0; c < C; ++c) a[c] += xv[c] * gv[c];
      }
    }
  });
}

#define ROWS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

ROWS_CLONES void rows_f32(const float* x, const float* dy, float* acc, const Shape& s, int64_t first, int64_t last) {
  for (int64_t r = first; r < last; ++r) accumulate_row(x, dy, acc, s, r / (s.od * s.oh), r / s.oh % s.od, r % s.oh);
}

ROWS_CLONES void rows_f64(const double* x, const double* dy, double* acc, const Shape& s, int64_t first, int64_t last) {
  for (int64_t r = first; r < last; ++r) accumulate_row(x, dy, acc, s, r / (s.od * s.oh), r / s.oh % s.od, r % s.oh);
}

inline void rows(const float* x, const float* dy, float* acc, const Shape& s, int64_t a, int64_t b) {
  rows_f32(x, dy, acc, s, a, b);
}
inline void rows(const double* x, const double* dy, double* acc, const Shape& s, int64_t a, int64_t b) {
  rows_f64(x, dy, acc, s, a, b);
}

template <typename T>
void kernel_grad(const T* x, const T* dy, T* dk, const Shape& s) {
  const int64_t taps = s.kd * s.kh * s.kw, size = taps * s.c, total_rows = s.n * s.od * s.oh;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), total_rows)));
  std::vector<T> partial(static_cast<size_t>(threads) * size, T(0));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int64_t first = total_rows * t / threads, last = total_rows * (t + 1) / threads;
    rows(x, dy, partial.data() + static_cast<size_t>(t) * size, s, first, last);
  }
  for (int64_t i = 0; i < size; ++i) {
    T sum = T(0);
    for (int t = 0; t < threads; ++t) sum += partial[static_cast<size_t>(t) * size + i];
    dk[i] = sum;
  }
}

// bfloat16 as stored (its 16 high bits of a float32); sums of it are float32.
struct bf16 {
  uint16_t bits;
};
template <typename T> struct Sum { using type = T; };
template <> struct Sum<bf16> { using type = float; };
inline float widen(bf16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
template <typename T> inline T narrow(typename Sum<T>::type v) { return v; }
template <> inline bf16 narrow<bf16>(float v) {  // round to nearest even, NaN kept quiet (as XLA's convert)
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x40)};
  return bf16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// One output pixel's channels [c0, c0 + width): every tap summed in a local accumulator (registers
// when `width` is the compile-time block), stored once with the bias and the ReLU.
template <typename T, int kBlock>
__attribute__((always_inline)) inline void forward_pixel(const T* __restrict x, const T* __restrict k,
                                                         const T* __restrict bias, T* __restrict y, const Shape& s,
                                                         int64_t n, int64_t od, int64_t oh, int64_t ow, int64_t c0,
                                                         int64_t width, bool relu) {
  using A = typename Sum<T>::type;
  const int64_t C = s.c;
  const int64_t n_width = kBlock > 0 ? kBlock : width;
  A acc[kBlock > 0 ? kBlock : 64];
  for (int64_t j = 0; j < n_width; ++j) acc[j] = widen(bias[c0 + j]);
  for_each_input_row(x, s, n, od, oh, [&](int64_t kd, int64_t kh, const T* __restrict x_row) {
    const T* w_row = k + (kd * s.kh + kh) * s.kw * C + c0;
    for (int64_t kw = 0; kw < s.kw; ++kw) {
      const int64_t iw = ow * s.s[2] + kw - s.p[2];
      if (iw < 0 || iw >= s.w) continue;
      const T* xv = x_row + iw * C + c0;
      const T* wv = w_row + kw * C;
      for (int64_t j = 0; j < n_width; ++j) acc[j] += widen(xv[j]) * widen(wv[j]);
    }
  });
  T* yv = y + (((n * s.od + od) * s.oh + oh) * s.ow + ow) * C + c0;
  for (int64_t j = 0; j < n_width; ++j) yv[j] = narrow<T>(relu && acc[j] < A(0) ? A(0) : acc[j]);
}

template <typename T>
__attribute__((always_inline)) inline void forward_row(const T* __restrict x, const T* __restrict k,
                                                       const T* __restrict bias, T* __restrict y, const Shape& s,
                                                       int64_t n, int64_t od, int64_t oh, bool relu) {
  constexpr int kBlock = 64 / sizeof(typename Sum<T>::type) * 4;  // 4 cache lines of sums: 64 float32, 32 float64
  const int64_t whole = s.c / kBlock * kBlock;
  for (int64_t ow = 0; ow < s.ow; ++ow) {
    for (int64_t c0 = 0; c0 < whole; c0 += kBlock) forward_pixel<T, kBlock>(x, k, bias, y, s, n, od, oh, ow, c0, kBlock, relu);
    for (int64_t c0 = whole; c0 < s.c; c0 += 64)
      forward_pixel<T, 0>(x, k, bias, y, s, n, od, oh, ow, c0, std::min<int64_t>(64, s.c - c0), relu);
  }
}

ROWS_CLONES void forward_rows_f32(const float* x, const float* k, const float* b, float* y, const Shape& s,
                                  int64_t first, int64_t last, bool relu) {
  for (int64_t r = first; r < last; ++r) forward_row(x, k, b, y, s, r / (s.od * s.oh), r / s.oh % s.od, r % s.oh, relu);
}

ROWS_CLONES void forward_rows_f64(const double* x, const double* k, const double* b, double* y, const Shape& s,
                                  int64_t first, int64_t last, bool relu) {
  for (int64_t r = first; r < last; ++r) forward_row(x, k, b, y, s, r / (s.od * s.oh), r / s.oh % s.od, r % s.oh, relu);
}

ROWS_CLONES void forward_rows_bf16(const bf16* x, const bf16* k, const bf16* b, bf16* y, const Shape& s,
                                   int64_t first, int64_t last, bool relu) {
  for (int64_t r = first; r < last; ++r) forward_row(x, k, b, y, s, r / (s.od * s.oh), r / s.oh % s.od, r % s.oh, relu);
}

inline void forward_rows(const bf16* x, const bf16* k, const bf16* b, bf16* y, const Shape& s, int64_t a, int64_t e,
                         bool relu) {
  forward_rows_bf16(x, k, b, y, s, a, e, relu);
}
inline void forward_rows(const float* x, const float* k, const float* b, float* y, const Shape& s, int64_t a,
                         int64_t e, bool relu) {
  forward_rows_f32(x, k, b, y, s, a, e, relu);
}
inline void forward_rows(const double* x, const double* k, const double* b, double* y, const Shape& s, int64_t a,
                         int64_t e, bool relu) {
  forward_rows_f64(x, k, b, y, s, a, e, relu);
}

template <typename T>
void forward(const T* x, const T* k, const T* bias, T* y, const Shape& s, bool relu) {
  const int64_t total_rows = s.n * s.od * s.oh;
#pragma omp parallel
  {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    forward_rows(x, k, bias, y, s, total_rows * t / threads, total_rows * (t + 1) / threads, relu);
  }
}

ffi::Error DepthwiseForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> y,
                                ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, bool relu) {
  auto xd = x.dimensions(), kd = k.dimensions(), yd = y->dimensions();
  if (xd.size() != 5 || yd.size() != 5 || kd.size() != 5 || kd[3] != 1 || kd[4] != xd[4] || yd[4] != xd[4] ||
      bias.element_count() != xd[4])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "depthwise forward: NDHWC x, (kd, kh, kw, 1, C) kernel, (C,) bias");
  Shape s{xd[0], xd[1], xd[2], xd[3], xd[4], yd[1], yd[2], yd[3], kd[0], kd[1], kd[2],
          {strides[0], strides[1], strides[2]}, {padding[0], padding[2], padding[4]}};
  auto type = x.element_type();
  if (k.element_type() != type || bias.element_type() != type || y->element_type() != type)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "depthwise forward: operands of one type");
  if (type == ffi::DataType::F32) {
    forward(static_cast<const float*>(x.untyped_data()), static_cast<const float*>(k.untyped_data()),
            static_cast<const float*>(bias.untyped_data()), static_cast<float*>(y->untyped_data()), s, relu);
  } else if (type == ffi::DataType::F64) {
    forward(static_cast<const double*>(x.untyped_data()), static_cast<const double*>(k.untyped_data()),
            static_cast<const double*>(bias.untyped_data()), static_cast<double*>(y->untyped_data()), s, relu);
  } else if (type == ffi::DataType::BF16) {
    forward(static_cast<const bf16*>(x.untyped_data()), static_cast<const bf16*>(k.untyped_data()),
            static_cast<const bf16*>(bias.untyped_data()), static_cast<bf16*>(y->untyped_data()), s, relu);
  } else {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "depthwise forward: float32, float64 or bfloat16 operands");
  }
  return ffi::Error::Success();
}

ffi::Error DepthwiseKernelGradImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dk,
                                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  auto xd = x.dimensions(), yd = dy.dimensions(), kd = dk->dimensions();
  if (xd.size() != 5 || yd.size() != 5 || kd.size() != 5 || kd[3] != 1 || kd[4] != xd[4] || yd[4] != xd[4])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "depthwise kernel gradient: NDHWC x and dy, (kd, kh, kw, 1, C) dk");
  Shape s{xd[0], xd[1], xd[2], xd[3], xd[4], yd[1], yd[2], yd[3], kd[0], kd[1], kd[2],
          {strides[0], strides[1], strides[2]}, {padding[0], padding[2], padding[4]}};
  if (x.element_type() == ffi::DataType::F32 && dy.element_type() == ffi::DataType::F32) {
    kernel_grad(static_cast<const float*>(x.untyped_data()), static_cast<const float*>(dy.untyped_data()),
                static_cast<float*>(dk->untyped_data()), s);
  } else if (x.element_type() == ffi::DataType::F64 && dy.element_type() == ffi::DataType::F64) {
    kernel_grad(static_cast<const double*>(x.untyped_data()), static_cast<const double*>(dy.untyped_data()),
                static_cast<double*>(dk->untyped_data()), s);
  } else {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "depthwise kernel gradient: float32 or float64 operands");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StresDepthwiseKernelGrad, DepthwiseKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("strides")
                                  .Attr<ffi::Span<const int64_t>>("padding"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(StresDepthwiseForward, DepthwiseForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("strides")
                                  .Attr<ffi::Span<const int64_t>>("padding")
                                  .Attr<bool>("relu"));
