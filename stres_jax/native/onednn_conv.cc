// oneDNN's 3-D convolutions as XLA FFI handlers: forward, input gradient, kernel gradient.
//
// Activations are NDHWC (XLA's row-major (N, T, H, W, C)), kernels DHWIO (Flax's
// (kt, kh, kw, in, out)), float32 or bfloat16 (all operands alike). oneDNN picks its own kernel layout ("any"); the kernel is
// reordered to it on each call, except by the inference forward (`StresOnednnConvForwardReuse`), which
// keeps reordered kernels keyed by their exact bytes; the kernel gradient may reorder x and dy to oneDNN's
// blocked layout first (`blocked`). Primitives are cached by shape. Built on first use by
// stres_jax/models/onednn.py (g++, the onednn-devel-cpu-gomp headers, jaxlib's FFI headers).
#include <cstdint>
#include <cstring>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Geometry {
  memory::dims src, weights, dst, strides, pad_l, pad_r;
  memory::data_type type;
  std::string key(const char* kind) const {
    std::string k(kind);
    k += type == memory::data_type::bf16 ? ":bf16;" : ":f32;";
    for (const auto* d : {&src, &weights, &dst, &strides, &pad_l, &pad_r}) {
      for (auto v : *d) k += "," + std::to_string(v);
      k += ";";
    }
    return k;
  }
};

// (N, D, H, W, C) activations, (KD, KH, KW, I, O) kernel -> oneDNN's logical dims.
Geometry geometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, ffi::Span<const int64_t> y,
                  ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, ffi::DataType type) {
  if (type != ffi::DataType::F32 && type != ffi::DataType::BF16)
    throw std::invalid_argument("oneDNN convolutions take float32 or bfloat16 operands");
  Geometry g;
  g.type = type == ffi::DataType::BF16 ? memory::data_type::bf16 : memory::data_type::f32;
  g.src = {x[0], x[4], x[1], x[2], x[3]};
  g.weights = {w[4], w[3], w[0], w[1], w[2]};
  g.dst = {y[0], y[4], y[1], y[2], y[3]};
  g.strides = {strides[0], strides[1], strides[2]};
  g.pad_l = {padding[0], padding[2], padding[4]};
  g.pad_r = {padding[1], padding[3], padding[5]};
  return g;
}

memory::desc act_md(const memory::dims& d, memory::data_type t) { return memory::desc(d, t, tag::ndhwc); }
memory::desc any_md(const memory::dims& d, memory::data_type t) { return memory::desc(d, t, tag::any); }
memory::desc user_w_md(const memory::dims& d, memory::data_type t) { return memory::desc(d, t, tag::dhwio); }

// Scratchpads are the caller's: XLA runs the devices of a host mesh on concurrent threads, and a
// primitive's own (library-mode) scratchpad would be shared between them.
dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc forward_pd(const Geometry& g, prop_kind kind) {
  return dnnl::convolution_forward::primitive_desc(cpu_engine(), kind, algorithm::convolution_direct,
                                                   act_md(g.src, g.type), any_md(g.weights, g.type),
                                                   act_md(g.dst, g.type), g.strides, g.pad_l, g.pad_r,
                                                   user_scratchpad());
}

struct Entry {
  dnnl::primitive conv;
  memory::desc weights_md;  // the layout the primitive wants its (diff) weights in
  bool reorder;             // whether that differs from DHWIO
  dnnl::reorder weights_reorder;
  size_t scratch_bytes;
  memory::desc scratchpad_md;
  memory::desc src_md, diff_dst_md;  // the kernel gradient's activation layouts (NDHWC unless blocked)
  dnnl::reorder src_reorder, diff_dst_reorder;  // NDHWC to those, where they differ
};

std::mutex cache_mutex;
std::unordered_map<std::string, std::shared_ptr<Entry>> cache;

template <typename Make>
std::shared_ptr<Entry> cached(const std::string& key, Make make) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  auto entry = std::make_shared<Entry>(make());
  cache.emplace(key, entry);
  return entry;
}

// Called once per kind and shape: the primitive and the reorder between DHWIO and its kernel layout.
Entry make_entry(dnnl::primitive conv, const memory::desc& weights_md, const memory::desc& scratchpad_md,
                 bool to_user) {
  Entry e;
  e.conv = conv;
  e.scratchpad_md = scratchpad_md;
  e.weights_md = weights_md;
  auto user = user_w_md(weights_md.get_dims(), weights_md.get_data_type());
  e.reorder = weights_md != user;
  if (e.reorder) {
    e.weights_reorder = to_user ? dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), weights_md, cpu_engine(), user))
                                : dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), user, cpu_engine(), weights_md));
  }
  e.scratch_bytes = weights_md.get_size();
  return e;
}

thread_local std::vector<char> weights_scratch, primitive_scratch;

void* scratch(size_t bytes) {
  if (weights_scratch.size() < bytes) weights_scratch.resize(bytes);
  return weights_scratch.data();
}

memory scratchpad(const Entry& entry) {
  size_t bytes = entry.scratchpad_md.get_size();
  if (primitive_scratch.size() < bytes) primitive_scratch.resize(bytes);
  return memory(entry.scratchpad_md, cpu_engine(), primitive_scratch.data());
}

// Reorders the DHWIO kernel at `data` into `dest`, in the primitive's layout.
memory reorder_kernel(const Entry& entry, dnnl::stream& stream, const Geometry& g, const void* data, void* dest) {
  memory user(user_w_md(g.weights, g.type), cpu_engine(), const_cast<void*>(data));
  memory weights(entry.weights_md, cpu_engine(), dest);
  entry.weights_reorder.execute(stream, user, weights);
  return weights;
}

// The DHWIO kernel at `data`, reordered (into a per-thread buffer) to the primitive's layout.
memory kernel_for(const Entry& entry, dnnl::stream& stream, const Geometry& g, void* data) {
  if (!entry.reorder) return memory(user_w_md(g.weights, g.type), cpu_engine(), data);
  return reorder_kernel(entry, stream, g, data, scratch(entry.scratch_bytes));
}

// Reordered kernels of the inference forward, found by content: an entry is used only when the
// caller's DHWIO bytes equal the copy it was made from (memcmp, exact; a changed kernel at the
// same address, or the same kernel at another, is told apart). Comparing reads twice the
// kernel's bytes in order, cheaper than the strided reorder; least recently used entries go
// beyond kKernelCacheBytes.
struct KernelCopy {
  std::string key;            // the primitive's key (shape and type, hence its kernel layout)
  std::vector<char> source;   // the DHWIO bytes it was reordered from
  std::vector<char> blocked;  // the kernel in the primitive's layout (only read once made)
};

constexpr size_t kKernelCacheBytes = size_t(1) << 30;
std::mutex kernels_mutex;
std::list<std::shared_ptr<KernelCopy>> kernels;  // most recently used first
size_t kernels_bytes = 0;

std::shared_ptr<KernelCopy> kernel_copy(const std::string& key, const Entry& entry, dnnl::stream& stream,
                                        const Geometry& g, const void* data, size_t bytes) {
  std::vector<std::shared_ptr<KernelCopy>> candidates;
  {
    std::lock_guard<std::mutex> lock(kernels_mutex);
    for (const auto& copy : kernels)
      if (copy->key == key) candidates.push_back(copy);
  }
  // Compared outside the lock: the devices of a host mesh check their kernels at the same time.
  for (const auto& copy : candidates) {
    if (std::memcmp(copy->source.data(), data, bytes) != 0) continue;
    std::lock_guard<std::mutex> lock(kernels_mutex);
    for (auto it = kernels.begin(); it != kernels.end(); ++it)
      if (*it == copy) {
        kernels.splice(kernels.begin(), kernels, it);
        break;
      }
    return copy;
  }
  auto copy = std::make_shared<KernelCopy>();
  copy->key = key;
  copy->source.assign(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
  copy->blocked.resize(entry.scratch_bytes);
  reorder_kernel(entry, stream, g, data, copy->blocked.data());
  stream.wait();
  std::lock_guard<std::mutex> lock(kernels_mutex);
  kernels.push_front(copy);
  kernels_bytes += copy->source.size() + copy->blocked.size();
  while (kernels_bytes > kKernelCacheBytes && kernels.size() > 1) {
    kernels_bytes -= kernels.back()->source.size() + kernels.back()->blocked.size();
    kernels.pop_back();
  }
  return copy;
}

ffi::Error run(const std::function<void()>& body) {
  try {
    body();
  } catch (const dnnl::error& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + err.what());
  } catch (const std::exception& err) {
    return ffi::Error(ffi::ErrorCode::kInternal, err.what());
  }
  return ffi::Error::Success();
}

ffi::Error ConvForward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                       ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, bool reuse) {
  return run([&] {
    Geometry g = geometry(x.dimensions(), w.dimensions(), y->dimensions(), strides, padding, x.element_type());
    std::string key = g.key("fwd");
    auto entry = cached(key, [&] {
      auto pd = forward_pd(g, prop_kind::forward_inference);
      return make_entry(dnnl::convolution_forward(pd), pd.weights_desc(), pd.scratchpad_desc(), false);
    });
    dnnl::stream stream(cpu_engine());
    memory src(act_md(g.src, g.type), cpu_engine(), x.untyped_data());
    memory dst(act_md(g.dst, g.type), cpu_engine(), y->untyped_data());
    auto execute = [&](const memory& weights) {
      entry->conv.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst},
                                   {DNNL_ARG_SCRATCHPAD, scratchpad(*entry)}});
      stream.wait();
    };
    if (reuse && entry->reorder) {
      auto copy = kernel_copy(key, *entry, stream, g, w.untyped_data(), w.size_bytes());
      execute(memory(entry->weights_md, cpu_engine(), copy->blocked.data()));
    } else {
      execute(kernel_for(*entry, stream, g, w.untyped_data()));
    }
  });
}

// The inference forward of a conv whose BatchNorm was folded into it, with what follows it as
// oneDNN post-ops: y = conv(x) + bias [+ residual] [then ReLU]; a block's shortcut is the residual.
// The residual is added by the "sum" post-op, which accumulates into y where it already lies (the
// caller aliases the residual operand to y; it is copied there otherwise): the same (conv + bias) +
// residual, 13-24% faster than a binary add reading a second tensor (1x1x1 convs, AVX2).
ffi::Error ConvForwardFusedImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer bias, ffi::RemainingArgs rest,
                                ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> strides,
                                ffi::Span<const int64_t> padding, bool relu) {
  return run([&] {
    Geometry g = geometry(x.dimensions(), w.dimensions(), y->dimensions(), strides, padding, x.element_type());
    bool residual = rest.size() > 0;
    std::string key = g.key(residual ? (relu ? "fwd+b+sum+relu" : "fwd+b+sum") : (relu ? "fwd+b+relu" : "fwd+b"));
    memory::desc bias_md({g.dst[1]}, g.type, tag::x);
    auto entry = cached(key, [&] {
      dnnl::post_ops ops;
      if (residual) ops.append_sum(1.f);
      if (relu) ops.append_eltwise(algorithm::eltwise_relu, 0.f, 0.f);
      auto attr = user_scratchpad();
      attr.set_post_ops(ops);
      dnnl::convolution_forward::primitive_desc pd(cpu_engine(), prop_kind::forward_inference, algorithm::convolution_direct,
                                                   act_md(g.src, g.type), any_md(g.weights, g.type), bias_md,
                                                   act_md(g.dst, g.type), g.strides, g.pad_l, g.pad_r, attr);
      return make_entry(dnnl::convolution_forward(pd), pd.weights_desc(), pd.scratchpad_desc(), false);
    });
    dnnl::stream stream(cpu_engine());
    std::shared_ptr<KernelCopy> copy;
    memory weights = memory(user_w_md(g.weights, g.type), cpu_engine(), w.untyped_data());
    if (entry->reorder) {
      copy = kernel_copy(key, *entry, stream, g, w.untyped_data(), w.size_bytes());
      weights = memory(entry->weights_md, cpu_engine(), copy->blocked.data());
    }
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(act_md(g.src, g.type), cpu_engine(), x.untyped_data())},
        {DNNL_ARG_WEIGHTS, weights},
        {DNNL_ARG_BIAS, memory(bias_md, cpu_engine(), bias.untyped_data())},
        {DNNL_ARG_DST, memory(act_md(g.dst, g.type), cpu_engine(), y->untyped_data())},
        {DNNL_ARG_SCRATCHPAD, scratchpad(*entry)}};
    if (residual) {
      auto shortcut = rest.get<ffi::AnyBuffer>(0);
      if (shortcut.has_error()) throw std::invalid_argument("the residual operand is not a buffer");
      if (shortcut.value().size_bytes() != y->size_bytes()) throw std::invalid_argument("the residual is not shaped like the output");
      if (shortcut.value().untyped_data() != y->untyped_data())
        std::memcpy(y->untyped_data(), shortcut.value().untyped_data(), y->size_bytes());
    }
    entry->conv.execute(stream, args);
    stream.wait();
  });
}

ffi::Error ConvForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                           ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  return ConvForward(x, w, y, strides, padding, false);
}

ffi::Error ConvForwardReuseImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                                ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  return ConvForward(x, w, y, strides, padding, true);
}

// dx from dy and the kernel; `x_shape` gives the input's shape (its values are not read).
ffi::Error ConvInputGradImpl(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                             ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  return run([&] {
    Geometry g = geometry(dx->dimensions(), w.dimensions(), dy.dimensions(), strides, padding, dy.element_type());
    auto entry = cached(g.key("bwd_data"), [&] {
      auto hint = forward_pd(g, prop_kind::forward_training);
      dnnl::convolution_backward_data::primitive_desc pd(cpu_engine(), algorithm::convolution_direct,
                                                         act_md(g.src, g.type), any_md(g.weights, g.type), act_md(g.dst, g.type),
                                                         g.strides, g.pad_l, g.pad_r, hint, user_scratchpad());
      return make_entry(dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.scratchpad_desc(), false);
    });
    dnnl::stream stream(cpu_engine());
    memory weights = kernel_for(*entry, stream, g, w.untyped_data());
    memory diff_dst(act_md(g.dst, g.type), cpu_engine(), dy.untyped_data());
    memory diff_src(act_md(g.src, g.type), cpu_engine(), dx->untyped_data());
    entry->conv.execute(stream, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, weights},
                                 {DNNL_ARG_DIFF_SRC, diff_src}, {DNNL_ARG_SCRATCHPAD, scratchpad(*entry)}});
    stream.wait();
  });
}

// The NDHWC activation at `data` in layout `md`: itself where they agree, else reordered by `to_md`
// into the per-thread buffer `slot`.
memory activation_in(const memory::desc& md, const dnnl::reorder& to_md, const memory::dims& dims, memory::data_type type,
                     const void* data, std::vector<char>& slot, dnnl::stream& stream) {
  memory user(act_md(dims, type), cpu_engine(), const_cast<void*>(data));
  if (md == user.get_desc()) return user;
  if (slot.size() < md.get_size()) slot.resize(md.get_size());
  memory laid_out(md, cpu_engine(), slot.data());
  to_md.execute(stream, user, laid_out);
  return laid_out;
}

// A reorder from NDHWC to `md`, or none where they agree.
dnnl::reorder reorder_from_ndhwc(const memory::desc& md) {
  auto user = act_md(md.get_dims(), md.get_data_type());
  if (md == user) return dnnl::reorder();
  return dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), user, cpu_engine(), md));
}

thread_local std::vector<char> src_scratch, diff_dst_scratch;

// dW from x and dy. `blocked`: oneDNN picks the activations' layout too (nCdhw16c on AVX-512) and
// they are reordered to it first; on AVX-512 that measured faster than its NDHWC kernel (BENCHMARKS.md).
ffi::Error ConvKernelGradImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                              ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding, bool blocked) {
  return run([&] {
    Geometry g = geometry(x.dimensions(), dw->dimensions(), dy.dimensions(), strides, padding, x.element_type());
    auto entry = cached(g.key(blocked ? "bwd_weights_blocked" : "bwd_weights"), [&] {
      auto act = [&](const memory::dims& d) { return blocked ? any_md(d, g.type) : act_md(d, g.type); };
      auto hint = dnnl::convolution_forward::primitive_desc(
          cpu_engine(), prop_kind::forward_training, algorithm::convolution_direct, act(g.src),
          any_md(g.weights, g.type), act(g.dst), g.strides, g.pad_l, g.pad_r, user_scratchpad());
      dnnl::convolution_backward_weights::primitive_desc pd(cpu_engine(), algorithm::convolution_direct,
                                                            act(g.src), any_md(g.weights, g.type), act(g.dst),
                                                            g.strides, g.pad_l, g.pad_r, hint, user_scratchpad());
      Entry e = make_entry(dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(), pd.scratchpad_desc(), true);
      e.src_md = pd.src_desc();
      e.diff_dst_md = pd.diff_dst_desc();
      e.src_reorder = reorder_from_ndhwc(e.src_md);
      e.diff_dst_reorder = reorder_from_ndhwc(e.diff_dst_md);
      return e;
    });
    dnnl::stream stream(cpu_engine());
    memory user_dw(user_w_md(g.weights, g.type), cpu_engine(), dw->untyped_data());
    memory diff_weights = entry->reorder ? memory(entry->weights_md, cpu_engine(), scratch(entry->scratch_bytes))
                                         : user_dw;
    memory src = activation_in(entry->src_md, entry->src_reorder, g.src, g.type, x.untyped_data(), src_scratch, stream);
    memory diff_dst = activation_in(entry->diff_dst_md, entry->diff_dst_reorder, g.dst, g.type, dy.untyped_data(),
                                    diff_dst_scratch, stream);
    entry->conv.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst},
                                 {DNNL_ARG_DIFF_WEIGHTS, diff_weights}, {DNNL_ARG_SCRATCHPAD, scratchpad(*entry)}});
    if (entry->reorder) entry->weights_reorder.execute(stream, diff_weights, user_dw);
    stream.wait();
  });
}

}  // namespace

#define CONV_BINDING(FIRST, SECOND)                                      \
  ffi::Ffi::Bind()                                                       \
      .Arg<ffi::AnyBuffer>()                                             \
      .Arg<ffi::AnyBuffer>()                                             \
      .Ret<ffi::AnyBuffer>()                                             \
      .Attr<ffi::Span<const int64_t>>("strides")                         \
      .Attr<ffi::Span<const int64_t>>("padding")

XLA_FFI_DEFINE_HANDLER_SYMBOL(StresOnednnConvForward, ConvForwardImpl, CONV_BINDING(x, w));
XLA_FFI_DEFINE_HANDLER_SYMBOL(StresOnednnConvForwardReuse, ConvForwardReuseImpl, CONV_BINDING(x, w));
XLA_FFI_DEFINE_HANDLER_SYMBOL(StresOnednnConvForwardFused, ConvForwardFusedImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .RemainingArgs()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("strides")
                                  .Attr<ffi::Span<const int64_t>>("padding")
                                  .Attr<bool>("relu"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(StresOnednnConvInputGrad, ConvInputGradImpl, CONV_BINDING(dy, w));
XLA_FFI_DEFINE_HANDLER_SYMBOL(StresOnednnConvKernelGrad, ConvKernelGradImpl,
                              CONV_BINDING(x, dy).Attr<bool>("blocked"));

extern "C" int stres_onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
