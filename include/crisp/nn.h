// Neural-network modules: parameters that register with their owner, layers, and losses.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "crisp/ops.h"
#include "crisp/state.h"
#include "crisp/tensor.h"

namespace crisp::nn {

class Module;
class Param;
class Buffer;
template <class M>
class Child;

// Names are dotted paths from the module they were asked of ("layer.weight").
// A buffer is listed the same way as a parameter: its name and the member holding it.
using NamedBuffer = NamedParam;

// What a non-strict load_state left out.
struct LoadReport {
  std::vector<std::string> missing;     // in the module, absent from the state
  std::vector<std::string> unexpected;  // in the state, absent from the module
};

// A trainable tensor of a module: `Param w{this, "weight", randn({3, 3})};`. It is a Tensor
// (use it anywhere one is expected) that requires grad, registered with its owner under name.
// An undefined value is an absent parameter (like PyTorch's `bias=None`): it is left out of
// parameters() and state().
//
// Optimizers replace the value through the Tensor* of NamedParam (`*p.tensor = v;`). That
// goes through Tensor's assignment, which keeps the slot registered but not the gradient
// flag: the updater must then call `p.tensor->requires_grad_()` with v a leaf (computed under
// NoGrad, or detached). The new leaf starts with no gradient. Assigning to a Param directly
// (`model.w = v;`) does this itself.
class Param : public Tensor {
 public:
  Param(Module* owner, std::string name, Tensor value, Loc loc = Loc::current());
  Param(const Param&) = delete;
  // Replaces the value, keeping it a leaf that requires grad.
  Param& operator=(const Tensor& value);
  Param& operator=(const Param& value) { return *this = static_cast<const Tensor&>(value); }
};

// A non-trainable tensor saved with the module's state (running statistics, counters).
class Buffer : public Tensor {
 public:
  Buffer(Module* owner, std::string name, Tensor value, Loc loc = Loc::current());
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Tensor& value) {
    Tensor::operator=(value);
    return *this;
  }
  Buffer& operator=(const Buffer& value) { return *this = static_cast<const Tensor&>(value); }
};

// The base of every module. Parameters, buffers and child modules register themselves in
// declaration order, so a module is written as a plain struct of members (see Param, Child).
// Modules are neither copyable nor movable: their registry points at their members.
//
// Order of parameters(), named_buffers() and state(): as PyTorch's named_parameters() and
// state_dict(): a module's own parameters in registration order, then (state() only) its own
// buffers, then each child's entries, children in registration order, recursively.
class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  // The copy constructor takes Module& (not const&): a derived module's then does too, and a
  // braced argument (`LayerNorm ln({2, 3})`) cannot be read as a deleted copy of a temporary.
  Module(Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = delete;
  Module& operator=(Module&&) = delete;

  // So that a module's members are declared unqualified: `Param w{this, "w", ...};`.
  using Param = nn::Param;
  using Buffer = nn::Buffer;
  template <class M>
  using Child = nn::Child<M>;

  // Every defined parameter, with dotted names.
  std::vector<NamedParam> parameters();
  std::vector<NamedBuffer> named_buffers();
  // Direct children, and every module below this one (this one first, named "").
  std::vector<std::pair<std::string, Module*>> named_children();
  std::vector<std::pair<std::string, Module*>> named_modules();
  // The number of parameter elements.
  int64_t num_parameters();

  // Sets training mode on this module and every module below it.
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  // Drops every parameter's accumulated gradient.
  void zero_grad();

  // Parameters then buffers, dotted names, in the order above; detached handles.
  State state() const;
  // Loads entries by name. Strict refuses names missing from s or unknown to the module.
  // Either way a shape or dtype that differs from the module's throws (naming the entry),
  // and nothing is loaded when anything throws. Values move to each member's backend.
  LoadReport load_state(const State& s, bool strict = true, Loc loc = Loc::current());

  // Moves every parameter and buffer to backend (parameters stay leaves, gradients dropped).
  Module& to(std::shared_ptr<Backend> backend, Loc loc = Loc::current());
  // Casts every floating-point parameter and buffer to dtype (integer buffers keep theirs).
  Module& to(DType dtype, Loc loc = Loc::current());

  // Registration, as Param, Buffer and Child do it. Names are non-empty, without '.', and
  // unique within the module. The registered object must outlive the module's use of it.
  void register_parameter(const std::string& name, Tensor* t, Loc loc = Loc::current());
  void register_buffer(const std::string& name, Tensor* t, Loc loc = Loc::current());
  void register_module(const std::string& name, Module* m, Loc loc = Loc::current());

 private:
  friend Param;
  friend Buffer;
  enum class Kind { param, buffer, child };
  struct Entry {
    std::string name;
    Kind kind;
    Tensor* tensor = nullptr;
    Module* module = nullptr;
  };
  void add_entry(Entry e);
  void collect(const std::string& prefix, Kind kind, std::vector<NamedParam>& out);
  void collect_state(const std::string& prefix, State& out) const;
  void collect_modules(const std::string& prefix,
                       std::vector<std::pair<std::string, Module*>>& out);

  std::vector<Entry> entries_;
  bool training_ = true;
};

namespace detail {
// Modules whose forward takes the caller's line (all of crisp's layers do).
template <class M>
concept TracedUnary = std::invocable<M&, const Tensor&, Loc>;

template <class M, class... A>
constexpr bool one_tensor_arg() {
  if constexpr (sizeof...(A) == 1)
    return (std::is_convertible_v<A, const Tensor&> && ...);
  else
    return false;
}

// Calls a module on one tensor, passing the caller's line where it takes one.
template <class M>
Tensor call_module(M& m, const Tensor& x, Loc loc) {
  if constexpr (TracedUnary<M>)
    return m(x, loc);
  else
    return m(x);
}
}  // namespace detail

// A child's name and the line that declared it. A string converts to it where the child is
// declared, and that is where the default argument is evaluated: errors raised while the
// child is built then name the user's line rather than this header.
struct ChildName {
  std::string name;
  Loc loc;
  ChildName(const char* n, Loc l = Loc::current()) : name(n), loc(l) {}
  ChildName(std::string n, Loc l = Loc::current()) : name(std::move(n)), loc(l) {}
};

namespace detail {
// Keeps a call record open while a Child's module is built (a base is built before members).
class ChildScope {
 protected:
  explicit ChildScope(const Loc& loc) { scope_.emplace("Child", loc); }
  void close() { scope_.reset(); }

 private:
  std::optional<CallScope> scope_;
};
}  // namespace detail

// A child module constructed in place: `Child<nn::Linear> fc{this, "fc", 3, 7};` builds
// Linear(3, 7) and registers it as "fc". `fc(x)` calls it, `fc->weight` reaches its members.
template <class M>
class Child : private detail::ChildScope {
 public:
  template <class... A>
  Child(Module* owner, const ChildName& name, A&&... args)
      : ChildScope(name.loc), module_(std::forward<A>(args)...) {
    close();
    owner->register_module(name.name, &module_, name.loc);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  M* operator->() { return &module_; }
  const M* operator->() const { return &module_; }
  M& operator*() { return module_; }
  const M& operator*() const { return module_; }

  // One tensor in: the caller's line goes to the module, so errors name it.
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) requires detail::TracedUnary<M> {
    return module_(x, loc);
  }
  template <class... A>
  requires std::invocable<M&, A...> &&
      (!(detail::TracedUnary<M> && detail::one_tensor_arg<M, A...>())) decltype(auto)
      operator()(A&&... args) {
    return module_(std::forward<A>(args)...);
  }

 private:
  M module_;
};

// Modules in order, each fed the previous one's output. Children are named "0", "1", ...
// unless given a name. Any module callable on one tensor can be held.
class Sequential : public Module {
 public:
  Sequential() = default;
  template <class... M>
  explicit Sequential(std::shared_ptr<M>... modules) {
    (push_back(std::move(modules)), ...);
  }

  template <class M>
  requires std::derived_from<M, Module> && std::invocable<M&, const Tensor&> M& push_back(
      std::shared_ptr<M> m, Loc loc = Loc::current()) {
    return push_back(std::to_string(modules_.size()), std::move(m), loc);
  }
  template <class M>
  requires std::derived_from<M, Module> && std::invocable<M&, const Tensor&> M& push_back(
      const std::string& name, std::shared_ptr<M> m, Loc loc = Loc::current()) {
    check(m != nullptr, "Sequential: push_back got a null module");
    M& ref = *m;
    register_module(name, &ref, loc);
    calls_.push_back([&ref](const Tensor& x, Loc l) { return detail::call_module(ref, x, l); });
    modules_.push_back(std::move(m));
    return ref;
  }
  // Constructs M(args...) at the end: `seq.add<nn::Linear>(784, 128);`.
  template <class M, class... A>
  M& add(A&&... args) {
    return push_back(std::make_shared<M>(std::forward<A>(args)...));
  }

  Tensor forward(const Tensor& x, Loc loc = Loc::current());
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) { return forward(x, loc); }

  size_t size() const { return modules_.size(); }
  bool empty() const { return modules_.empty(); }
  Module& operator[](size_t i) { return at(i, Loc::current()); }
  // The i-th module as an M; throws crisp::Error when it is not one.
  template <class M>
  M& get(size_t i, Loc loc = Loc::current()) {
    CallScope scope("Sequential", loc);
    M* m = dynamic_cast<M*>(&at(i, loc));
    check(m != nullptr, "module ", i, " is not of the requested type");
    return *m;
  }

 private:
  Module& at(size_t i, Loc loc);
  std::vector<std::shared_ptr<Module>> modules_;
  std::vector<std::function<Tensor(const Tensor&, Loc)>> calls_;
};

// Modules held in order, named "0", "1", ...; not callable itself.
class ModuleList : public Module {
 public:
  ModuleList() = default;
  template <class M>
  requires std::derived_from<M, Module> M& push_back(std::shared_ptr<M> m,
                                                     Loc loc = Loc::current()) {
    check(m != nullptr, "ModuleList: push_back got a null module");
    M& ref = *m;
    register_module(std::to_string(modules_.size()), &ref, loc);
    modules_.push_back(std::move(m));
    return ref;
  }
  template <class M, class... A>
  M& add(A&&... args) {
    return push_back(std::make_shared<M>(std::forward<A>(args)...));
  }

  size_t size() const { return modules_.size(); }
  bool empty() const { return modules_.empty(); }
  Module& operator[](size_t i) { return at(i, Loc::current()); }
  template <class M>
  M& get(size_t i, Loc loc = Loc::current()) {
    CallScope scope("ModuleList", loc);
    M* m = dynamic_cast<M*>(&at(i, loc));
    check(m != nullptr, "module ", i, " is not of the requested type");
    return *m;
  }
  std::vector<std::shared_ptr<Module>>::const_iterator begin() const { return modules_.begin(); }
  std::vector<std::shared_ptr<Module>>::const_iterator end() const { return modules_.end(); }

 private:
  Module& at(size_t i, Loc loc);
  std::vector<std::shared_ptr<Module>> modules_;
};

// Per-dimension sizes: one value for every dimension (`3`) or one per dimension (`{3, 5}`).
struct Ints {
  std::vector<int64_t> v;
  Ints() = default;
  Ints(int64_t x) : v{x} {}
  Ints(std::initializer_list<int64_t> x) : v(x) {}
  Ints(std::vector<int64_t> x) : v(std::move(x)) {}
};

// Every layer has `Tensor forward(const Tensor& x, Loc)` and the same as operator().
#define CRISP_NN_CALL                                                                      \
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) { return forward(x, loc); } \
  Tensor forward(const Tensor& x, Loc loc = Loc::current())

// y = x W^T + b. weight [out, in] and bias [out] ~ U(-1/sqrt(in), 1/sqrt(in)), as PyTorch.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Loc loc = Loc::current());
  CRISP_NN_CALL;
  const int64_t in_features, out_features;
  Param weight, bias;
};

// Convolution options, PyTorch's argument names and defaults.
struct ConvArgs {
  Ints stride = 1;
  Ints padding = 0;
  Ints dilation = 1;
  int64_t groups = 1;
  bool bias = true;
  Ints output_padding = 0;  // transposed convolutions only
};

// weight [out, in/groups, *kernel]; weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
// fan_in = in/groups * prod(kernel). Transposed: weight [in, out/groups, *kernel] and
// fan_in = out/groups * prod(kernel), as PyTorch.
class ConvNd : public Module {
 public:
  ConvNd(int nd, bool transposed, int64_t in_channels, int64_t out_channels, Ints kernel,
         ConvArgs args, Loc loc);
  CRISP_NN_CALL;
  const int nd;
  const bool transposed;
  const int64_t in_channels, out_channels;
  const std::vector<int64_t> kernel;
  const ConvArgs args;
  Param weight, bias;
};
template <int N>
class Conv : public ConvNd {
 public:
  Conv(int64_t in_channels, int64_t out_channels, Ints kernel, ConvArgs args = {},
       Loc loc = Loc::current())
      : ConvNd(N, false, in_channels, out_channels, std::move(kernel), std::move(args), loc) {}
};
template <int N>
class ConvTranspose : public ConvNd {
 public:
  ConvTranspose(int64_t in_channels, int64_t out_channels, Ints kernel, ConvArgs args = {},
                Loc loc = Loc::current())
      : ConvNd(N, true, in_channels, out_channels, std::move(kernel), std::move(args), loc) {}
};
using Conv1d = Conv<1>;
using Conv2d = Conv<2>;
using Conv3d = Conv<3>;
using ConvTranspose1d = ConvTranspose<1>;
using ConvTranspose2d = ConvTranspose<2>;
using ConvTranspose3d = ConvTranspose<3>;

// Pooling over nd spatial dims of [N, C, *]; stride defaults to the kernel.
class PoolNd : public Module {
 public:
  PoolNd(int nd, bool max, Ints kernel, Ints stride, Ints padding, Ints dilation,
         bool count_include_pad, Loc loc);
  CRISP_NN_CALL;
  const int nd;
  const bool max;
  const PoolOptions options;
};
template <int N>
class MaxPool : public PoolNd {
 public:
  explicit MaxPool(Ints kernel, Ints stride = {}, Ints padding = 0, Ints dilation = 1,
                   Loc loc = Loc::current())
      : PoolNd(N, true, std::move(kernel), std::move(stride), std::move(padding),
               std::move(dilation), true, loc) {}
};
template <int N>
class AvgPool : public PoolNd {
 public:
  explicit AvgPool(Ints kernel, Ints stride = {}, Ints padding = 0, bool count_include_pad = true,
                   Loc loc = Loc::current())
      : PoolNd(N, false, std::move(kernel), std::move(stride), std::move(padding), 1,
               count_include_pad, loc) {}
};
using MaxPool1d = MaxPool<1>;
using MaxPool2d = MaxPool<2>;
using MaxPool3d = MaxPool<3>;
using AvgPool1d = AvgPool<1>;
using AvgPool2d = AvgPool<2>;
using AvgPool3d = AvgPool<3>;

// Averages [N, C, H, W] (or [C, H, W]) into output_size cells; cell i covers
// [floor(i*H/out), ceil((i+1)*H/out)), as PyTorch, for any sizes.
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Ints output_size, Loc loc = Loc::current());
  CRISP_NN_CALL;
  const std::vector<int64_t> output_size;
};

// Zeroes elements with probability p (scaling the rest by 1/(1-p)) in training mode only.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, Loc loc = Loc::current());
  CRISP_NN_CALL;
  const double p;
};

struct BatchNormArgs {
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};
// Batch statistics in training (updating running_mean/var with the unbiased variance, and
// num_batches_tracked); running statistics in eval mode.
class BatchNorm : public Module {
 public:
  BatchNorm(int64_t num_features, BatchNormArgs args, std::vector<int64_t> input_ndims,
            const char* name, Loc loc);
  CRISP_NN_CALL;
  // relu(forward(x)) as one op each way (batch_norm_relu).
  Tensor forward_relu(const Tensor& x, Loc loc = Loc::current());
  const int64_t num_features;
  const BatchNormArgs args;
  Param weight, bias;
  Buffer running_mean, running_var, num_batches_tracked;

 private:
  Tensor run(const Tensor& x, bool relu);
  std::vector<int64_t> input_ndims_;
  const char* name_;
};
class BatchNorm1d : public BatchNorm {  // [N, C] or [N, C, L]
 public:
  explicit BatchNorm1d(int64_t num_features, BatchNormArgs args = {}, Loc loc = Loc::current())
      : BatchNorm(num_features, args, {2, 3}, "BatchNorm1d", loc) {}
};
class BatchNorm2d : public BatchNorm {  // [N, C, H, W]
 public:
  explicit BatchNorm2d(int64_t num_features, BatchNormArgs args = {}, Loc loc = Loc::current())
      : BatchNorm(num_features, args, {4}, "BatchNorm2d", loc) {}
};
class BatchNorm3d : public BatchNorm {  // [N, C, D, H, W]
 public:
  explicit BatchNorm3d(int64_t num_features, BatchNormArgs args = {}, Loc loc = Loc::current())
      : BatchNorm(num_features, args, {5}, "BatchNorm3d", loc) {}
};

// Normalizes over the trailing normalized_shape; weight ones, bias zeros.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(Ints normalized_shape, double eps = 1e-5, bool elementwise_affine = true,
                     bool bias = true, Loc loc = Loc::current());
  CRISP_NN_CALL;
  const Shape normalized_shape;
  const double eps;
  Param weight, bias;
};

// Normalizes [N, C, *] over groups of C/groups channels; weight ones, bias zeros.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5, bool affine = true,
            Loc loc = Loc::current());
  CRISP_NN_CALL;
  const int64_t num_groups, num_channels;
  const double eps;
  Param weight, bias;
};

// x / sqrt(mean(x^2) + eps) * weight over the trailing normalized_shape; eps defaults to the
// machine epsilon of x's dtype, as PyTorch.
class RMSNorm : public Module {
 public:
  explicit RMSNorm(Ints normalized_shape, std::optional<double> eps = {},
                   bool elementwise_affine = true, Loc loc = Loc::current());
  CRISP_NN_CALL;
  const Shape normalized_shape;
  const std::optional<double> eps;
  Param weight;
};

// A lookup table: int64 indices [*] -> [*, embedding_dim]; weight ~ N(0, 1).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, Loc loc = Loc::current());
  CRISP_NN_CALL;
  const int64_t num_embeddings, embedding_dim;
  Param weight;
};

// Multi-head attention on batch-first [N, L, E] inputs (or unbatched [L, E]). Parameters are
// named as PyTorch's (in_proj_weight [3E, E] xavier-uniform, in_proj_bias [3E] zeros,
// out_proj.weight, out_proj.bias zeros), so its state dicts load.
//
// Masks follow crisp's scaled_dot_product_attention: a bool mask is true where attention is
// ALLOWED (the opposite of torch.nn.MultiheadAttention's bool masks); a floating-point mask is
// added to the scores. attn_mask broadcasts to [N, heads, L, S]; key_padding_mask is [N, S]
// (bool: true = a real key).
struct AttentionMasks {
  std::optional<Tensor> attn_mask = {};
  std::optional<Tensor> key_padding_mask = {};
  bool is_causal = false;
};
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout = 0, bool bias = true,
                     Loc loc = Loc::current());
  // Self-attention: query = key = value = x.
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) { return forward(x, x, x, {}, loc); }
  Tensor operator()(const Tensor& query, const Tensor& key, const Tensor& value,
                    AttentionMasks masks = {}, Loc loc = Loc::current()) {
    return forward(query, key, value, std::move(masks), loc);
  }
  Tensor forward(const Tensor& query, const Tensor& key, const Tensor& value,
                 AttentionMasks masks = {}, Loc loc = Loc::current());
  const int64_t embed_dim, num_heads;
  const double dropout;
  Param in_proj_weight, in_proj_bias;
  Child<Linear> out_proj;
};

struct TransformerArgs {
  int64_t dim_feedforward = 2048;
  double dropout = 0.1;
  std::string activation = "relu";  // or "gelu"
  double layer_norm_eps = 1e-5;
  bool norm_first = true;  // pre-norm; false gives PyTorch's default post-norm layer
};
// A batch-first transformer encoder layer, children named as PyTorch's. Pre-norm:
//   x = x + dropout1(self_attn(norm1(x)));  x = x +
//   dropout2(linear2(dropout(act(linear1(norm2(x))))))
class TransformerEncoderLayer : public Module {
 public:
  TransformerEncoderLayer(int64_t d_model, int64_t nhead, TransformerArgs args = {},
                          Loc loc = Loc::current());
  Tensor operator()(const Tensor& x, Loc loc = Loc::current()) { return forward(x, {}, loc); }
  Tensor operator()(const Tensor& x, AttentionMasks masks, Loc loc = Loc::current()) {
    return forward(x, std::move(masks), loc);
  }
  Tensor forward(const Tensor& x, AttentionMasks masks = {}, Loc loc = Loc::current());
  const TransformerArgs args;
  Child<MultiheadAttention> self_attn;
  Child<Linear> linear1;
  Child<Dropout> dropout;
  Child<Linear> linear2;
  Child<LayerNorm> norm1, norm2;
  Child<Dropout> dropout1, dropout2;
};

// Flattens axes start..end (inclusive; negative counts from the end).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1)
      : start_dim(start_dim), end_dim(end_dim) {}
  CRISP_NN_CALL;
  const int64_t start_dim, end_dim;
};

// Parameter-free elementwise modules.
class Identity : public Module {
 public:
  CRISP_NN_CALL;
};
class ReLU : public Module {
 public:
  CRISP_NN_CALL;
};
class GELU : public Module {
 public:
  explicit GELU(std::string approximate = "none") : approximate(std::move(approximate)) {}
  CRISP_NN_CALL;
  const std::string approximate;
};
class SiLU : public Module {
 public:
  CRISP_NN_CALL;
};
class Tanh : public Module {
 public:
  CRISP_NN_CALL;
};
class Sigmoid : public Module {
 public:
  CRISP_NN_CALL;
};
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double negative_slope = 0.01) : negative_slope(negative_slope) {}
  CRISP_NN_CALL;
  const double negative_slope;
};
class Softmax : public Module {
 public:
  explicit Softmax(int64_t dim = -1) : dim(dim) {}
  CRISP_NN_CALL;
  const int64_t dim;
};
class LogSoftmax : public Module {
 public:
  explicit LogSoftmax(int64_t dim = -1) : dim(dim) {}
  CRISP_NN_CALL;
  const int64_t dim;
};

#undef CRISP_NN_CALL

// ---- losses ----
// input and target share shape and dtype; reduction is "mean", "sum" or "none" (as
// crisp::cross_entropy).
Tensor mse_loss(const Tensor& input, const Tensor& target, const std::string& reduction = "mean",
                Loc loc = Loc::current());
Tensor l1_loss(const Tensor& input, const Tensor& target, const std::string& reduction = "mean",
               Loc loc = Loc::current());
// 0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta.
Tensor smooth_l1_loss(const Tensor& input, const Tensor& target,
                      const std::string& reduction = "mean", double beta = 1,
                      Loc loc = Loc::current());
// 0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta).
Tensor huber_loss(const Tensor& input, const Tensor& target, const std::string& reduction = "mean",
                  double delta = 1, Loc loc = Loc::current());

struct BCEOptions {
  std::string reduction = "mean";
  std::optional<Tensor> weight = {};      // broadcasts to the input
  std::optional<Tensor> pos_weight = {};  // weight of positive targets, broadcasts (e.g. [C])
};
// -[pos_weight t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] * weight, computed stably.
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target,
                                        BCEOptions opt = {}, Loc loc = Loc::current());

using crisp::cross_entropy;
using crisp::CrossEntropyOptions;
using crisp::nll_loss;

}  // namespace crisp::nn
