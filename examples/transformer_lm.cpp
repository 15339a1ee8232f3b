// A character-level transformer language model trained on a short built-in text, then sampled.
// Embedding, pre-norm TransformerEncoderLayers with a causal mask, AdamW, gradient clipping.
//
// Usage: transformer_lm [--steps N] [--sample N]
#include <crisp/crisp.h>

#include <cstdio>
#include <map>
#include <string>

using namespace crisp;

const char* kText =
    "The orchard keeper walked the rows at dawn. She counted the apples on the low branches, "
    "and she counted the apples on the high branches, and she wrote the numbers in a small "
    "green book. The red apples were sweet and the green apples were sharp. The wind came down "
    "from the hill and the leaves turned silver, then green again. When the sun was high she "
    "sat under the oldest tree and ate a crisp apple, and the bees worked the clover at her "
    "feet. In the afternoon she carried the baskets to the barn. One basket for the market, one "
    "basket for the cider press, one basket for the neighbours down the road. The cider press "
    "turned slowly, and the apples became juice, and the juice became cider in the cool cellar. "
    "At dusk the orchard keeper walked the rows again. She counted the trees, she counted the "
    "baskets, and she wrote the numbers in the small green book. Then she closed the book and "
    "went home, and the orchard slept under the stars until the dawn came back to the hill. ";

// Tokens [B, T] -> logits [B, T, vocab]; position t attends to positions <= t only.
struct CharLM : nn::Module {
  CharLM(int64_t vocab, int64_t context, int64_t dim, int64_t heads, int64_t layers)
      : tokens(this, "tokens", vocab, dim),
        positions(this, "positions", context, dim),
        norm(this, "norm", dim),
        head(this, "head", dim, vocab) {
    for (int64_t i = 0; i < layers; ++i)
      blocks->add<nn::TransformerEncoderLayer>(
          dim, heads, nn::TransformerArgs{.dim_feedforward = 4 * dim, .activation = "gelu"});
  }
  Tensor operator()(const Tensor& idx) {
    Tensor x = tokens(idx) + positions(arange(idx.shape()[1]));
    for (size_t i = 0; i < blocks->size(); ++i)
      x = blocks->get<nn::TransformerEncoderLayer>(i)(x, nn::AttentionMasks{.is_causal = true});
    return head(norm(x));
  }
  Child<nn::Embedding> tokens, positions;
  Child<nn::ModuleList> blocks{this, "blocks"};
  Child<nn::LayerNorm> norm;
  Child<nn::Linear> head;
};

int main(int argc, char** argv) try {
  int64_t steps = 300, sample = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--steps")
      steps = std::stoll(v);
    else if (a == "--sample")
      sample = std::stoll(v);
    else
      throw std::runtime_error("unknown option " + a);
  }
  if (Backend::cuda_available()) Backend::set_default(Backend::cuda());

  // The vocabulary: every character of the text, numbered in order of first appearance.
  const std::string text = kText;
  std::map<char, int64_t> id;
  std::string chars;
  std::vector<int64_t> ids;
  for (char c : text) {
    if (!id.contains(c)) id[c] = static_cast<int64_t>(chars.size()), chars += c;
    ids.push_back(id[c]);
  }
  const int64_t vocab = static_cast<int64_t>(chars.size()), context = 64, batch = 32;
  const Tensor data(ids);

  manual_seed(0);
  CharLM model(vocab, context, 64, 4, 2);
  optim::AdamW opt(model.parameters(), {.lr = 3e-3, .weight_decay = 0.01});
  std::printf("%zu characters, vocabulary %lld, %lld parameters\n", text.size(),
              static_cast<long long>(vocab), static_cast<long long>(model.num_parameters()));

  for (int64_t step = 1; step <= steps; ++step) {
    // Random windows of the text; the targets are the next characters.
    Tensor start = randint(0, static_cast<int64_t>(ids.size()) - context - 1, {batch, 1});
    Tensor at = start + arange(context);
    Tensor x = index_select(data, 0, at.flatten()).reshape({batch, context});
    Tensor y = index_select(data, 0, (at + 1).flatten()).reshape({batch * context});
    Tensor loss = cross_entropy(model(x).reshape({batch * context, vocab}), y);
    loss.backward();
    optim::clip_grad_norm(model.parameters(), 1.0);
    opt.step();
    opt.zero_grad();
    if (step % 50 == 0 || step == steps)
      std::printf("step %lld  loss %.3f\n", static_cast<long long>(step), loss.item<float>());
  }

  // Sampling, one character at a time, from the model's distribution at temperature 0.8.
  NoGrad no_grad;
  model.eval();
  std::vector<int64_t> out = {id['T'], id['h'], id['e'], id[' ']};
  for (int64_t i = 0; i < sample; ++i) {
    const size_t from = out.size() > static_cast<size_t>(context) ? out.size() - context : 0;
    std::vector<int64_t> window(out.begin() + static_cast<std::ptrdiff_t>(from), out.end());
    Tensor logits = model(Tensor(window).unsqueeze(0))[0, -1];
    std::vector<float> p = softmax(logits / 0.8).to_vector<float>();
    float u = rand({}).item<float>();
    int64_t next = 0;
    while (next + 1 < vocab && (u -= p[static_cast<size_t>(next)]) > 0) ++next;
    out.push_back(next);
  }
  std::string sampled;
  for (int64_t t : out) sampled += chars[static_cast<size_t>(t)];
  std::printf("sample: %s\n", sampled.c_str());
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "transformer_lm: %s\n", e.what());
  return 1;
}
