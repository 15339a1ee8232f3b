// State: ordered named tensors — insertion order, replacement, lookup errors, prefixes.
#include "testing.h"

namespace crisp::testing {
namespace {

std::vector<std::string> names_of(const State& s) {
  std::vector<std::string> out;
  for (const auto& [name, t] : s) out.push_back(name);
  return out;
}

TEST(State, KeepsInsertionOrderAndReplacesInPlace) {
  Tensor a = randn({2}), b = randn({3}), c = randn({4});
  State s{{"z", a}, {"a", b}};
  s.set("m", c);
  s.set("z", c);  // replaced, keeps its place
  EXPECT_EQ(names_of(s), (std::vector<std::string>{"z", "a", "m"}));
  EXPECT_EQ(s.names(), names_of(s));
  EXPECT_EQ(s.size(), 3u);
  EXPECT_FALSE(s.empty());
  EXPECT_TRUE(s.contains("a"));
  EXPECT_FALSE(s.contains("b"));
  expect_tensors_close(s.at("z"), c, 0);
  expect_tensors_close(s.at("a"), b, 0);
}

TEST(State, IndexingInsertsAndEraseRenameKeepTheIndexRight) {
  State s;
  EXPECT_TRUE(s.empty());
  EXPECT_FALSE(s["x"].defined());
  s["x"] = Tensor({1.f, 2.f});
  s["y"] = Tensor({3.f});
  s["w"] = Tensor({4.f});
  expect_close(s.at("x"), {1, 2});
  EXPECT_TRUE(s.erase("x"));
  EXPECT_FALSE(s.erase("x"));
  expect_close(s.at("w"), {4});  // positions after the erased entry moved down
  expect_close(s["y"], {3});
  EXPECT_TRUE(s.rename("y", "v"));
  EXPECT_FALSE(s.rename("nope", "q"));
  EXPECT_EQ(s.names(), (std::vector<std::string>{"v", "w"}));
  expect_close(s.at("v"), {3});
  EXPECT_CRISP_ERROR(s.rename("v", "w"), "already exists");
  EXPECT_CRISP_ERROR(s.at("y"), "\"y\"");
}

TEST(State, PrefixesNestAndUnnest) {
  State model{{"layer.weight", randn({2, 2})}, {"layer.bias", randn({2})}};
  State opt{{"step", Tensor({3})}};
  State all = model.with_prefix("model");
  all.merge(opt.with_prefix("opt"));
  EXPECT_EQ(all.names(),
            (std::vector<std::string>{"model.layer.weight", "model.layer.bias", "opt.step"}));
  State back = all.under("model");
  EXPECT_EQ(back.names(), model.names());
  expect_tensors_close(back.at("layer.bias"), model.at("layer.bias"), 0);
  EXPECT_EQ(all.under("model.layer").names(), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_TRUE(all.under("mod").empty());  // only whole name components match
  EXPECT_EQ(all.with_prefix("").names(), all.names());
  // merge replaces same-named entries in place.
  State m{{"a", Tensor({1.f})}, {"b", Tensor({2.f})}};
  m.merge(State{{"b", Tensor({5.f})}, {"c", Tensor({6.f})}});
  EXPECT_EQ(m.names(), (std::vector<std::string>{"a", "b", "c"}));
  expect_close(m.at("b"), {5});
}

}  // namespace
}  // namespace crisp::testing
