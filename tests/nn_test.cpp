// nn modules: registration and names, state and loading, train/eval, every layer against PyTorch
// 1.13 outputs (weights set by name to the same deterministic values), and default inits.
#include <cmath>
#include <memory>
#include <type_traits>

#include "testing.h"

namespace crisp::testing {
namespace {

class Nn : public BackendTest {};

// PyTorch 1.13 references. Inputs are det(shape, seed, scale); every floating-point entry k of
// the module's state_dict (in its order) is det(shape, 1 + k, 0.5). See set_det below.
// kLinear shape [2, 4]
const std::vector<double> kLinear = {0.87816715, -0.31872955, 0.0631603,   -0.72897404,
                                     0.1058569,  0.53927696,  -0.71592897, -0.17827469};
// kConv1d shape [1, 3, 4]
const std::vector<double> kConv1d = {0.35136032,  0.55709732,  0.52776933,  0.3831875,
                                     0.1548067,   0.28275523,  0.028834142, 0.0099913403,
                                     -0.15798101, -0.20130195, -0.4942978,  -0.3736347};
// kConv2d shape [1, 4, 4, 3]
const std::vector<double> kConv2d = {
    0.53038871,   0.70752186,   0.26555318,  0.55626827,  0.66067332,  0.68436909,  0.25710696,
    0.23400199,   0.27005798,   0.80562568,  0.40388891,  0.34267253,  0.40167654,  0.56149811,
    -0.035353743, -0.062675975, 0.047949277, 0.39554328,  0.21886244,  0.020827435, -0.21495384,
    0.26263359,   0.094418302,  0.32698956,  -0.15720637, -0.67605937, -0.44920179, -0.27366382,
    0.14463079,   -0.049120009, -0.48363477, -0.7924335,  -0.45041561, -0.15153693, 0.16599056,
    -0.35800642,  -0.3885718,   -0.48159453, -0.40598881, -0.64655668, -0.30250353, -0.29245192,
    -0.49613988,  -0.79344952,  -0.71767157, -0.29229081, 0.031333864, -0.48371762};
// kConv3d shape [1, 2, 2, 2, 2]
const std::vector<double> kConv3d = {0.32594121, 0.76325929,    0.011214457, -0.60901594,
                                     0.61479867, -0.0020091087, -0.7654261,  -0.33429658,
                                     0.1710882,  0.77131903,    0.20812817,  -0.52908188,
                                     0.78167522, 0.19396514,    -0.86596769, -0.53605437};
// kConvT1d shape [1, 3, 8]
const std::vector<double> kConvT1d = {
    0.7355777,    0.87961662,   0.8100394,    0.86600798,   0.61554855,  0.54109085,
    0.29929191,   0.26526105,   -0.074321575, -0.1749931,   -0.15769467, -0.29337734,
    -0.031198017, -0.099209897, 0.20943823,   0.31137639,   -0.23617512, -0.19818541,
    -0.15988627,  0.029479027,  -0.1941196,   0.0033133626, -0.31296802, -0.46325606};
// kConvT2d shape [1, 2, 3, 3]
const std::vector<double> kConvT2d = {
    0.29143828,  0.20644727, 0.20648894,   0.7327069,   0.63008243,   0.602741,
    0.30934197,  0.38747519, 0.52216023,   0.088888854, 0.073208325,  0.090465099,
    0.072220162, 0.13837668, -0.037781753, 0.11410872,  -0.032036386, 0.14192671};
// kConvT3d shape [1, 2, 3, 3, 3]
const std::vector<double> kConvT3d = {
    0.59285748,  0.82022035,  0.69097328,  0.63271707,  0.53249043,  0.2580381,   0.5036338,
    0.35441199,  0.49064586,  0.097316116, -0.31186619, 0.071340233, 0.21636729,  0.73836887,
    0.98933232,  0.45782274,  0.64909935,  0.30817935,  0.68388712,  0.83489478,  0.60906541,
    0.46890137,  0.095823616, 0.15041742,  0.44982344,  0.4389492,   0.59700537,  0.27413651,
    0.40696919,  0.1993148,   0.16783339,  -0.19698554, -0.15065053, 0.040072836, 0.011023596,
    0.18725476,  -0.21130526, -0.31119531, 0.083058581, 0.24588054,  1.047309,    0.61532807,
    0.26778233,  0.1481092,   -0.11052076, 0.27961665,  0.24067587,  0.090465099, -0.049866028,
    -0.40569544, -0.06268727, 0.08405447,  0.22473624,  0.27611902};
// kMaxPool2d shape [1, 2, 5, 6]
const std::vector<double> kMaxPool2d = {
    0.062227212, 0.42729944,  0.062227212, -0.26828647, 0.16373722, -0.26828647, 0.42287341,
    0.47184783,  0.42287341,  0.15577067,  0.46899998,  0.15577067, 0.47456229,  0.42729944,
    0.47456229,  0.41832781,  0.16373722,  -0.26828647, 0.42287341, 0.47714254,  0.42287341,
    0.47714254,  0.41366395,  0.037132721, 0.47456229,  0.41832781, 0.47456229,  0.41832781,
    0.045511208, -0.36174738, -0.4926492,  -0.23932296, 0.19511811, 0.48189768,  0.40398669,
    0.48189768,  -0.2466705,  0.18735014,  0.47958791,  0.40888312, 0.48407122,  0.40888312,
    0.011943766, 0.39897606,  0.19511811,  0.48189768,  0.40398669, 0.48189768,  0.39385262,
    0.48610789,  0.39385262,  0.20283094,  0.48407122,  0.20283094, 0.011943766, 0.39897606,
    0.011943766, -0.22442698, 0.21048641,  -0.22442698};
// kAvgPool2d shape [1, 2, 3, 3]
const std::vector<double> kAvgPool2d = {
    0.0540509,   -0.31704909, -0.042066276, 0.33841124,  0.030474713,  -0.28074235,
    0.14295015,  0.33478948,  -0.12136368,  -0.40162095, -0.019431083, 0.33303621,
    -0.13553707, -0.27780873, 0.11472865,   0.32272008,  -0.1422911,   -0.26624867};
// kMaxPool1d shape [1, 2, 4]
const std::vector<double> kMaxPool1d = {0.070560001, -0.27534276, 0.46899998, 0.46899998,
                                        0.062227212, -0.26828647, 0.47184783, 0.47184783};
// kAvgPool1d shape [1, 2, 3]
const std::vector<double> kAvgPool1d = {-0.13666153, -0.38671255, 0.31238532,
                                        -0.14385507, -0.38278139, 0.31779253};
// kMaxPool3d shape [1, 1, 2, 2, 1]
const std::vector<double> kMaxPool3d = {0.47184783, 0.47456229, 0.48189768, 0.47958791};
// kAvgPool3d shape [1, 1, 2, 1, 2]
const std::vector<double> kAvgPool3d = {-0.10688058, -0.15480646, 0.15077169, -0.092017084};
// kAdaptive shape [1, 2, 3, 2]
const std::vector<double> kAdaptive = {-0.26250264, 0.19586241, -0.26484999, 0.20082939,
                                       -0.2670601,  0.20569226, -0.26972157, 0.21195625,
                                       -0.27150166, 0.21648456, -0.27314106, 0.22090068};
// kAdaptiveUp shape [2, 4, 3]
const std::vector<double> kAdaptiveUp = {
    0.070560001, -0.13666153,  -0.34388307, -0.21376115, -0.26168704,  -0.30961293,
    -0.17115581, -0.037163615, 0.09682861,  0.15577067,  0.31238532,   0.46899998,
    0.42729944,  0.24476333,   0.062227212, 0.038681045, -0.089421749, -0.21752454,
    -0.30911189, -0.23794071,  -0.16676953, -0.26828647, -0.052274622, 0.16373722};
// kBN1dTrain shape [4, 3]
const std::vector<double> kBN1dTrain = {0.010386135, -0.16180572, -0.19036053, 0.98621798,
                                        0.49739203,  -0.41097364, 0.07608895,  -0.50687271,
                                        -0.52067792, 0.74590176,  0.6497851,   -0.10170364};
// kBN1dRunMean shape [3]
const std::vector<double> kBN1dRunMean = {-0.014496053, 0.019855428, 0.039180718};
// kBN1dRunVar shape [3]
const std::vector<double> kBN1dRunVar = {1.2758709, 1.2374873, 0.99962246};
// kBN1dEval shape [2, 3]
const std::vector<double> kBN1dEval = {0.40800974, 0.23419365,  -0.22885229,
                                       0.58351994, 0.074106276, -0.38617817};
// kBN2dTrain shape [2, 2, 2, 3]
const std::vector<double> kBN2dTrain = {
    -0.13042018, 0.22333232,   0.74816757,   1.0469007,   0.89345652,   0.40395847,
    -0.38702422, -0.47189823,  -0.071185455, 0.51186258,  0.83600682,   0.65594131,
    0.39382702,  -0.056783643, -0.12432536,  0.2423161,   0.76567382,   1.0496811,
    0.64805865,  0.096684061,  -0.39939556,  -0.46475697, -0.049936049, 0.53113902};
// kBN2dRunVar shape [2]
const std::vector<double> kBN2dRunVar = {1.3338249, 1.3478664};
// kBN2dEval shape [2, 2, 2, 3]
const std::vector<double> kBN2dEval = {
    -0.24591951, 0.18034513,  0.81276107,  1.1727285,   0.98783135,  0.39799601,
    -0.53690171, -0.63975978, -0.15413927, 0.55245191,  0.94527966,  0.72705972,
    0.38578781,  -0.15718897, -0.23857538, 0.20322022,  0.83385575,  1.1760788,
    0.71750677,  0.049300436, -0.55189443, -0.63110536, -0.12838729, 0.57581288};
// kLayerNorm shape [2, 2, 3]
const std::vector<double> kLayerNorm = {0.040267233, -0.48632962, -0.40674034, -0.6424349,
                                        -0.94954634, -0.26418304, 0.55042619,  -0.32440627,
                                        -0.51524049, -0.37532663, -0.71780914, -0.46445224};
// kGroupNorm shape [2, 4, 3]
const std::vector<double> kGroupNorm = {
    0.040267229, -0.084179252, 0.20141627,  0.37408534,  0.72330523,   0.61822194,
    -0.26780006, -0.46311492,  -0.51524049, -0.37532663, -0.71440178,  -0.92952281,
    1.0844911,   0.56593537,   0.043374728, -0.4903197,  -0.085952938, 0.56419849,
    -0.06800954, -0.11295082,  -0.29147679, -0.24285768, -0.1771697,   -0.37546739};
// kMHA shape [2, 3, 4]
const std::vector<double> kMHA = {
    0.014866859,  -0.86075234, 0.037181914, 0.08862865,  0.18056741,   -0.88242358,
    -0.089650869, 0.33777672,  0.086000383, -0.89841247, 0.033592522,  0.13272649,
    -0.049757212, -0.63935161, -0.29527992, 0.46350384,  0.15799507,   -0.89656949,
    -0.041707635, 0.26593557,  0.058907926, -0.82074201, -0.078618288, 0.25630799};
// kMHACross shape [2, 2, 6]
const std::vector<double> kMHACross = {
    -1.0586945,  -1.9306697, -1.3792168, 0.18598986,  1.610013,   1.8450747,
    -0.18880449, -1.2532238, -1.3891665, -0.50408614, 0.74399018, 1.4358335,
    -1.1833854,  -0.237627,  0.89459836, 1.3792958,   0.85096335, -0.31175813,
    -0.98887026, 0.75954521, 1.9658793,  1.7419925,   0.24008438, -1.4498959};
// kMHABoolMask shape [2, 2, 6]
const std::vector<double> kMHABoolMask = {
    -1.2383348, -1.8447771,  -1.0905457, 0.46653229,  1.6774584,  1.6501464,
    0.10609961, -1.1648643,  -1.5719086, -0.82441562, 0.52011055, 1.4719734,
    -1.0274487, -0.21095645, 0.77251685, 1.1976568,   0.74247491, -0.26783285,
    -2.4727726, -0.38247091, 2.0001233,  2.9274769,   1.7106777,  -0.76862991};
// kMHAKeyPad shape [2, 2, 6]
const std::vector<double> kMHAKeyPad = {
    -1.409476,   -2.1610646,  -1.3208956, 0.49041724,   1.9381274,   1.9571511,
    -0.71854591, -1.6902539,  -1.414185,  -0.098813996, 1.2834554,   1.7153507,
    -1.0274487,  -0.21095645, 0.77251685, 1.1976568,    0.74247491,  -0.26783285,
    -0.72919631, 0.79102945,  1.746171,   1.4316137,    0.065802217, -1.3607484};
// kMHAFloatMask shape [2, 2, 6]
const std::vector<double> kMHAFloatMask = {
    -1.678268,   -2.4055634,  -1.3624665, 0.68214601,  2.2230763,  2.1271322,
    0.32725623,  -0.73410594, -1.2462666, -0.84180886, 0.17238998, 1.0479749,
    -0.76679885, 0.6884352,   1.653542,   1.4166259,   0.13940594, -1.2523289,
    -1.365792,   0.26849437,  1.7194682,  1.9202527,   0.7127763,  -1.0281276};
// kMHACausal shape [2, 3, 4]
const std::vector<double> kMHACausal = {
    0.032541484, -0.79297394, -0.10205433, 0.27057284,  0.20567921,   -0.88802743,
    -0.10471214, 0.37039316,  0.086000383, -0.89841247, 0.033592522,  0.13272649,
    0.22154692,  -0.84975922, -0.18921439, 0.4836812,   0.1940144,    -0.97938609,
    0.070805997, 0.1469571,   0.058907926, -0.82074201, -0.078618288, 0.25630799};
// kEncPre shape [2, 3, 4]
const std::vector<double> kEncPre = {1.5404987,   -0.54707229,  -1.0337723,  -1.4045932, 0.84666693,
                                     0.68260068,  1.1959258,    0.12468129,  0.58596641, -1.0272636,
                                     -0.67407215, -0.4824014,   1.8100861,   0.78633022, 0.37205043,
                                     -0.95757139, -0.022203445, -0.80475581, 0.2018134,  0.44628525,
                                     2.0083303,   0.21128488,   -0.54802263, -1.5226352};
// kEncPost shape [2, 3, 4]
const std::vector<double> kEncPost = {
    -0.94338644, 0.030833466,   0.42104453,  -0.18472338, -0.66546929, -0.20253552,
    0.35134867,  -0.0022339316, -0.74807727, -0.11672854, 0.4223941,   -0.22933155,
    -1.0263902,  0.32539713,    0.33526462,  0.50747472,  -0.68979698, -0.16657314,
    0.4074727,   -0.19119382,   -1.0950849,  0.30490533,  0.45032841,  -0.035066254};

// scale * sin(0.9 i + seed): the same formula as the PyTorch script.
Tensor det(Shape shape, double seed, double scale = 0.5, DType dtype = f32) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * std::sin(0.9 * double(i) + seed);
  return Tensor(v, shape, dtype);
}

// Sets every floating-point state entry k (in state order) to det(shape, 1 + k), by name.
void set_det(nn::Module& m) {
  State s;
  double k = 1;
  for (const auto& [name, t] : m.state()) {
    s.set(name, is_floating(t.dtype()) ? det(t.shape(), k) : t);
    k += 1;
  }
  m.load_state(s);
}

// ---- the DESIGN.md model ----

struct MyModel : nn::Module {
  Param some{this, "some", Tensor({1.0f})};
  Param other{this, "customName", zeros({7})};
  Child<nn::Linear> layer{this, "layer", 3, 7};
  Tensor operator()(const Tensor& in) { return some * (layer(in) + other); }
};

struct Outer : nn::Module {
  Param a{this, "a", randn({2})};
  Child<MyModel> inner{this, "inner"};
  Buffer buf{this, "buf", Tensor({1, 2, 3})};
  Child<nn::Sequential> seq{this, "seq", std::make_shared<nn::Linear>(7, 5),
                            std::make_shared<nn::ReLU>(), std::make_shared<nn::BatchNorm1d>(5)};
  Param b{this, "b", randn({3})};
  Tensor operator()(const Tensor& x) { return seq(inner(x)); }
};

// A child that cannot be built: its error names the user's code, not nn.h. For a default
// member initializer compilers differ on the line: the member's, or the class's (where the
// implicit constructor that runs it is).
constexpr uint32_t kBadChildLine = __LINE__ + 1;
struct BadChild : nn::Module {
  Child<nn::Linear> layer{this, "layer", 0, 7};
};

TEST(Modules, ChildConstructionErrorsNameTheDeclaringLine) {
  try {
    BadChild m;
    ADD_FAILURE() << "expected crisp::Error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("in_features"), std::string::npos) << e.what();
    ASSERT_FALSE(e.trace().empty());
    EXPECT_NE(std::string(e.trace().front().file).find(__FILE__), std::string::npos) << e.what();
    EXPECT_GE(e.trace().front().line, kBadChildLine) << e.what();
    EXPECT_LE(e.trace().front().line, kBadChildLine + 1) << e.what();
  }
}

std::vector<std::string> names(const std::vector<nn::NamedParam>& ps) {
  std::vector<std::string> out;
  for (const auto& p : ps) out.push_back(p.name);
  return out;
}

static_assert(!std::is_copy_constructible_v<nn::Linear> && !std::is_move_constructible_v<MyModel>);
static_assert(!std::is_copy_assignable_v<nn::Module> && !std::is_move_assignable_v<nn::Module>);
static_assert(std::is_base_of_v<Tensor, nn::Param> && std::is_base_of_v<Tensor, nn::Buffer>);

TEST_P(Nn, DesignModelComputesAndTrains) {
  MyModel model;
  Tensor x = randn({2, 3});
  Tensor lin = matmul(x, model.layer->weight.t()) + model.layer->bias;
  expect_tensors_close(model(x), lin, 1e-6);
  model.some = Tensor({2.0f});
  EXPECT_TRUE(model.some.requires_grad());
  expect_tensors_close(model(x), lin * 2, 1e-6);

  Tensor loss = model(x).sum();
  loss.backward();
  // d/d some = sum(lin); d/d customName = some * batch; d/d layer.bias = some * batch.
  expect_close(model.some.grad(), {values(lin.sum())[0]}, 1e-5);
  expect_close(model.other.grad(), std::vector<double>(7, 4.0), 1e-6);
  expect_close(model.layer->bias.grad(), std::vector<double>(7, 4.0), 1e-6);
  EXPECT_EQ(model.layer->weight.grad().shape(), Shape({7, 3}));

  // An optimizer step as optim does it: assign through the pointer, then mark it a leaf.
  auto params = model.parameters();
  std::vector<Tensor> before, grads;
  for (const auto& p : params) {
    before.push_back(p.tensor->detach());
    grads.push_back(p.tensor->grad());
  }
  {
    NoGrad no_grad;
    for (const auto& p : params) {
      *p.tensor = *p.tensor - p.tensor->grad() * 0.1;
      p.tensor->requires_grad_();
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(params[i].tensor->requires_grad()) << params[i].name;
    EXPECT_FALSE(params[i].tensor->grad().defined()) << params[i].name;
    expect_tensors_close(*params[i].tensor, before[i] - grads[i] * 0.1, 1e-6);
  }
  model(x).sum().backward();
  for (const auto& p : model.parameters()) EXPECT_TRUE(p.tensor->grad().defined()) << p.name;
  model.zero_grad();
  for (const auto& p : model.parameters()) EXPECT_FALSE(p.tensor->grad().defined()) << p.name;
}

TEST_P(Nn, NamesAreDottedInPyTorchOrder) {
  Outer m;
  EXPECT_EQ(names(m.parameters()),
            (std::vector<std::string>{"a", "b", "inner.some", "inner.customName",
                                      "inner.layer.weight", "inner.layer.bias", "seq.0.weight",
                                      "seq.0.bias", "seq.2.weight", "seq.2.bias"}));
  EXPECT_EQ(names(m.named_buffers()),
            (std::vector<std::string>{"buf", "seq.2.running_mean", "seq.2.running_var",
                                      "seq.2.num_batches_tracked"}));
  EXPECT_EQ(m.state().names(),
            (std::vector<std::string>{
                "a", "b", "buf", "inner.some", "inner.customName", "inner.layer.weight",
                "inner.layer.bias", "seq.0.weight", "seq.0.bias", "seq.2.weight", "seq.2.bias",
                "seq.2.running_mean", "seq.2.running_var", "seq.2.num_batches_tracked"}));
  std::vector<std::string> mods;
  for (const auto& [name, mod] : m.named_modules()) mods.push_back(name);
  EXPECT_EQ(mods, (std::vector<std::string>{"", "inner", "inner.layer", "seq", "seq.0", "seq.1",
                                            "seq.2"}));
  EXPECT_EQ(m.named_children().size(), 2u);
  EXPECT_EQ(m.num_parameters(), 2 + 3 + 1 + 7 + 21 + 7 + 35 + 5 + 5 + 5);
  // Pointers reach the members themselves.
  EXPECT_EQ(m.parameters()[4].tensor, &m.inner->layer->weight);
  for (const auto& p : m.parameters()) EXPECT_TRUE(p.tensor->requires_grad()) << p.name;
  EXPECT_FALSE(m.buf.requires_grad());
  // A child module's own listing starts from it.
  EXPECT_EQ(names(m.inner->parameters()),
            (std::vector<std::string>{"some", "customName", "layer.weight", "layer.bias"}));
  EXPECT_EQ(m(randn({4, 3})).shape(), Shape({4, 5}));
}

TEST_P(Nn, RegistrationRejectsBadNamesAtTheCallersLine) {
  nn::Module m;
  Tensor t = randn({2}), u = randn({2});
  m.register_parameter("w", &t);
  EXPECT_TRUE(t.requires_grad());
  EXPECT_CRISP_ERROR(m.register_buffer("w", &u), "already registered");
  EXPECT_CRISP_ERROR(m.register_parameter("a.b", &u), "must not contain '.'");
  nn::ReLU r;
  EXPECT_CRISP_ERROR(m.register_module("", &r), "non-empty name");
  EXPECT_CRISP_ERROR(m.register_module("self", &m), "own child");
  EXPECT_CRISP_ERROR(nn::Param p(&m, "i", Tensor({1, 2})), "floating-point");
  EXPECT_EQ(names(m.parameters()), (std::vector<std::string>{"w"}));
  // Assigning a computed value to a Param keeps it a leaf that requires grad.
  nn::Param p(&m, "p", randn({3}));
  p = p * 2;
  EXPECT_TRUE(p.requires_grad());
  (p * p).sum().backward();
  expect_tensors_close(p.grad(), p * 2, 1e-6);
}

TEST_P(Nn, StateRoundTripsAndStrictLoadNamesTheEntry) {
  manual_seed(1);
  Outer a;
  manual_seed(2);
  Outer b;
  a.train();
  a(randn({4, 3}));  // moves a's running statistics off their initial values
  Tensor x = randn({4, 3});
  b.load_state(a.state());
  a.eval();
  b.eval();
  expect_tensors_close(b(x), a(x), 1e-6);
  for (const auto& p : b.parameters()) EXPECT_TRUE(p.tensor->requires_grad()) << p.name;
  expect_close(b.seq->get<nn::BatchNorm1d>(2).num_batches_tracked, {1});

  const std::vector<double> some = values(b.inner->some);
  State s = a.state();
  s.set("inner.some", Tensor({42.f}));
  s.erase("inner.layer.bias");
  EXPECT_CRISP_ERROR(b.load_state(s), "lacks entry \"inner.layer.bias\"");
  s = a.state();
  s.set("extra.w", randn({1}));
  EXPECT_CRISP_ERROR(b.load_state(s), "unexpected entry \"extra.w\"");
  s = a.state();
  s.set("inner.some", Tensor({42.f}));
  s.set("inner.layer.weight", randn({3, 7}));
  EXPECT_CRISP_ERROR(b.load_state(s), "\"inner.layer.weight\" has shape [3, 7] in the state");
  s.set("inner.layer.weight", randn({7, 3}, f64));
  EXPECT_CRISP_ERROR(b.load_state(s), "\"inner.layer.weight\" has dtype float64");
  EXPECT_CRISP_ERROR(b.load_state(s, false), "dtype");
  expect_close(b.inner->some, some);  // nothing was loaded by the failed calls

  // Non-strict: loads the rest and reports what did not match.
  s = a.state();
  s.set("inner.some", Tensor({42.f}));
  s.erase("seq.0.bias");
  s.set("extra", randn({1}));
  nn::LoadReport r = b.load_state(s, false);
  EXPECT_EQ(r.missing, (std::vector<std::string>{"seq.0.bias"}));
  EXPECT_EQ(r.unexpected, (std::vector<std::string>{"extra"}));
  expect_close(b.inner->some, {42});
  EXPECT_TRUE(b.inner->some.requires_grad());
}

TEST_P(Nn, TrainAndEvalSwitchDropoutAndBatchNorm) {
  struct Net : nn::Module {
    Child<nn::Sequential> body{this, "body", std::make_shared<nn::Dropout>(0.5)};
    Child<nn::Dropout> drop{this, "drop", 0.5};
  } net;
  Tensor x = rand({2000}) + 1;
  EXPECT_TRUE(net.training());
  net.eval();
  EXPECT_FALSE(net.training());
  EXPECT_FALSE(net.body->get<nn::Dropout>(0).training());
  expect_tensors_close(net.drop(x), x, 0);
  expect_tensors_close(net.body(x), x, 0);
  net.train();
  EXPECT_TRUE(net.body->get<nn::Dropout>(0).training());
  std::vector<double> y = values(net.drop(x)), xv = values(x);
  int zeros_seen = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (y[i] == 0) {
      ++zeros_seen;
    } else {
      EXPECT_NEAR(y[i], 2 * xv[i], 1e-5);
    }
  }
  EXPECT_GT(zeros_seen, 850);
  EXPECT_LT(zeros_seen, 1150);
  nn::Dropout all(1.0);
  expect_close(all(Tensor({1.f, 2.f})), {0, 0});
  EXPECT_CRISP_ERROR(nn::Dropout(1.5), "p must be in [0, 1]");
}

TEST_P(Nn, BatchNormMatchesPyTorchInTrainingAndEval) {
  nn::BatchNorm1d bn(3);
  EXPECT_EQ(bn.state().names(), (std::vector<std::string>{"weight", "bias", "running_mean",
                                                          "running_var", "num_batches_tracked"}));
  set_det(bn);
  bn.running_mean = zeros({3});
  bn.running_var = ones({3});
  expect_close(bn(det({4, 3}, 5, 2)), kBN1dTrain, 1e-5);
  expect_close(bn.running_mean, kBN1dRunMean, 1e-5);
  expect_close(bn.running_var, kBN1dRunVar, 1e-5);
  expect_close(bn.num_batches_tracked, {1});
  EXPECT_EQ(bn.num_batches_tracked.dtype(), i64);
  bn.eval();
  expect_close(bn(det({2, 3}, 6)), kBN1dEval, 1e-5);
  expect_close(bn.num_batches_tracked, {1});

  nn::BatchNorm2d bn2(2, {.momentum = 0.3});
  set_det(bn2);
  bn2.running_mean = zeros({2});
  bn2.running_var = ones({2});
  Tensor x = det({2, 2, 2, 3}, 5, 2);
  expect_close(bn2(x), kBN2dTrain, 1e-5);
  expect_close(bn2.running_var, kBN2dRunVar, 1e-5);
  bn2.eval();
  expect_close(bn2(x), kBN2dEval, 1e-5);
  EXPECT_CRISP_ERROR(bn2(randn({2, 3, 2, 2})), "expected 2 channels");
  EXPECT_CRISP_ERROR(bn2(randn({2, 2, 2})), "expected 4-d input");

  nn::BatchNorm1d plain(3, {.affine = false, .track_running_stats = false});
  EXPECT_TRUE(plain.state().empty());
  plain.eval();  // no running statistics: batch statistics even in eval mode
  Tensor y = plain(det({4, 3}, 5, 2));
  expect_close(y.mean(0), {0, 0, 0}, 1e-5);
}

TEST_P(Nn, LinearAndConvolutionsMatchPyTorch) {
  nn::Linear linear(3, 4);
  set_det(linear);
  expect_close(linear(det({2, 3}, 7)), kLinear, 1e-5);
  nn::Conv1d c1(2, 3, 3, {.stride = 2, .padding = 1});
  set_det(c1);
  expect_close(c1(det({1, 2, 7}, 7)), kConv1d, 1e-5);
  nn::Conv2d c2(2, 4, {3, 2}, {.stride = {1, 2}, .padding = 1, .groups = 2});
  EXPECT_EQ(c2.weight.shape(), Shape({4, 1, 3, 2}));
  set_det(c2);
  expect_close(c2(det({1, 2, 4, 4}, 7)), kConv2d, 1e-5);
  nn::Conv3d c3(1, 2, 2, {.bias = false});
  EXPECT_FALSE(c3.bias.defined());
  EXPECT_EQ(c3.state().names(), (std::vector<std::string>{"weight"}));
  set_det(c3);
  expect_close(c3(det({1, 1, 3, 3, 3}, 7)), kConv3d, 1e-5);
  nn::ConvTranspose1d t1(2, 3, 3, {.stride = 2, .padding = 1, .output_padding = 1});
  EXPECT_EQ(t1.weight.shape(), Shape({2, 3, 3}));
  set_det(t1);
  expect_close(t1(det({1, 2, 4}, 7)), kConvT1d, 1e-5);
  nn::ConvTranspose2d t2(2, 2, 3, {.stride = 2, .padding = 1, .groups = 2});
  set_det(t2);
  expect_close(t2(det({1, 2, 2, 2}, 7)), kConvT2d, 1e-5);
  nn::ConvTranspose3d t3(1, 2, 2);
  set_det(t3);
  expect_close(t3(det({1, 1, 2, 2, 2}, 7)), kConvT3d, 1e-5);

  EXPECT_CRISP_ERROR(linear(randn({2, 4})), "in_features = 3");
  EXPECT_CRISP_ERROR(nn::Conv2d(3, 4, 3, {.groups = 2}), "not divisible by groups");
  EXPECT_CRISP_ERROR(nn::Conv2d(2, 4, {3, 3, 3}), "kernel needs 1 or 2 values");
  EXPECT_CRISP_ERROR(c2(randn({1, 3, 4, 4})), "channels");
}

TEST_P(Nn, LinearGradientsReachWeightAndBias) {
  nn::Linear l(3, 2);
  Tensor x = randn({4, 3});
  l(x).sum().backward();
  std::vector<double> col = values(x.sum(0));
  expect_close(l.weight.grad(), {col[0], col[1], col[2], col[0], col[1], col[2]}, 1e-5);
  expect_close(l.bias.grad(), {4, 4}, 1e-6);
  l.to(f64);
  EXPECT_EQ(l.weight.dtype(), f64);
  EXPECT_TRUE(l.weight.requires_grad());
  check_gradients([&](const auto& in) { return l(in[0]); }, {randn({2, 3}, f64)});
}

TEST_P(Nn, PoolingMatchesPyTorch) {
  Tensor x = det({1, 2, 5, 6}, 3);
  expect_close(nn::MaxPool2d(2, 1, 1, 2)(x), kMaxPool2d, 1e-6);
  expect_close(nn::AvgPool2d(3, 2, 1, false)(x), kAvgPool2d, 1e-6);
  expect_close(nn::MaxPool1d(3, 2, 1)(det({1, 2, 7}, 3)), kMaxPool1d, 1e-6);
  expect_close(nn::AvgPool1d(2)(det({1, 2, 7}, 3)), kAvgPool1d, 1e-6);
  expect_close(nn::MaxPool3d(2)(det({1, 1, 4, 4, 3}, 3)), kMaxPool3d, 1e-6);
  expect_close(nn::AvgPool3d({2, 2, 1}, {}, {1, 0, 0})(det({1, 1, 3, 3, 2}, 3)), kAvgPool3d, 1e-6);
  expect_close(nn::AdaptiveAvgPool2d({3, 2})(det({1, 2, 5, 7}, 3)), kAdaptive, 1e-6);
  expect_close(nn::AdaptiveAvgPool2d({4, 3})(det({2, 3, 2}, 3)), kAdaptiveUp, 1e-6);
  // Divisible sizes take the pooling path; the global average is the mean.
  Tensor y = randn({2, 3, 4, 6});
  expect_tensors_close(nn::AdaptiveAvgPool2d(1)(y), y.mean({2, 3}, true), 1e-5);
  nn::AdaptiveAvgPool2d pool({3, 2});
  check_gradients([&](const auto& in) { return pool(in[0]); }, {randn({1, 2, 5, 7}, f64)});
  EXPECT_CRISP_ERROR(nn::MaxPool2d(2, 1, 3), "padding");
  EXPECT_CRISP_ERROR(pool(randn({5, 7})), "[N, C, H, W]");
}

TEST_P(Nn, NormsAndEmbeddingMatchReferences) {
  nn::LayerNorm ln({2, 3});
  set_det(ln);
  expect_close(ln(det({2, 2, 3}, 4, 2)), kLayerNorm, 1e-5);
  nn::GroupNorm gn(2, 4);
  set_det(gn);
  expect_close(gn(det({2, 4, 3}, 4, 2)), kGroupNorm, 1e-5);
  EXPECT_CRISP_ERROR(nn::GroupNorm(3, 4), "not divisible");

  // RMSNorm (not in PyTorch 1.13): x / sqrt(mean(x^2) + eps) * w, by hand in float64.
  nn::RMSNorm rms(4);
  set_det(rms);
  rms.to(f64);
  Tensor x = det({3, 4}, 2, 2, f64);
  std::vector<double> xv = values(x), wv = values(rms.weight), want;
  for (int r = 0; r < 3; ++r) {
    double ms = 0;
    for (int i = 0; i < 4; ++i) ms += xv[r * 4 + i] * xv[r * 4 + i] / 4;
    for (int i = 0; i < 4; ++i)
      want.push_back(xv[r * 4 + i] / std::sqrt(ms + 2.220446049250313e-16) * wv[i]);
  }
  expect_close(rms(x), want, 1e-12);
  nn::RMSNorm plain(4, 0.5, false);
  EXPECT_TRUE(plain.parameters().empty());
  expect_close(plain(x)[0], values(x[0] / (x[0].pow(2).mean() + 0.5).sqrt()), 1e-12);

  nn::Embedding emb(5, 3);
  Tensor idx({3, 0, 4, 3}, {2, 2});
  Tensor e = emb(idx);
  EXPECT_EQ(e.shape(), Shape({2, 2, 3}));
  expect_tensors_close(e[1, 1], emb.weight[3], 0);
  expect_tensors_close(e[0, 1], emb.weight[0], 0);
  e.sum().backward();
  expect_close(emb.weight.grad().sum(1), {3, 0, 0, 6, 3}, 1e-6);
}

TEST_P(Nn, ActivationsAndFlatten) {
  Tensor x = det({2, 3}, 1, 3);
  std::vector<double> xv = values(x);
  auto map = [&](double (*f)(double)) {
    std::vector<double> out;
    for (double v : xv) out.push_back(f(v));
    return out;
  };
  expect_close(nn::ReLU()(x), map([](double v) { return v > 0 ? v : 0; }), 1e-6);
  expect_close(nn::LeakyReLU(0.1)(x), map([](double v) { return v > 0 ? v : 0.1 * v; }), 1e-6);
  expect_close(nn::Tanh()(x), map([](double v) { return std::tanh(v); }), 1e-6);
  expect_close(nn::Sigmoid()(x), map([](double v) { return 1 / (1 + std::exp(-v)); }), 1e-6);
  expect_close(nn::SiLU()(x), map([](double v) { return v / (1 + std::exp(-v)); }), 1e-6);
  expect_close(nn::GELU()(x),
               map([](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }), 1e-5);
  expect_tensors_close(nn::Identity()(x), x, 0);
  std::vector<double> sm;
  for (int r = 0; r < 2; ++r) {
    double z = 0;
    for (int i = 0; i < 3; ++i) z += std::exp(xv[r * 3 + i]);
    for (int i = 0; i < 3; ++i) sm.push_back(std::exp(xv[r * 3 + i]) / z);
  }
  expect_close(nn::Softmax(1)(x), sm, 1e-6);
  std::vector<double> lsm;
  for (double v : sm) lsm.push_back(std::log(v));
  expect_close(nn::LogSoftmax(-1)(x), lsm, 1e-5);
  Tensor img = randn({2, 3, 4, 5});
  EXPECT_EQ(nn::Flatten()(img).shape(), Shape({2, 60}));
  EXPECT_EQ(nn::Flatten(0, 1)(img).shape(), Shape({6, 4, 5}));
  EXPECT_EQ(nn::Flatten(2)(img).shape(), Shape({2, 3, 20}));
}

TEST_P(Nn, SequentialAndModuleListHoldAnyModule) {
  struct Plain : nn::Module {  // no Loc parameter, no params
    Tensor operator()(const Tensor& x) { return x * 2; }
  };
  nn::Sequential seq;
  nn::Linear& first = seq.add<nn::Linear>(4, 3);
  seq.push_back(std::make_shared<nn::Tanh>());
  seq.push_back(std::make_shared<Plain>());
  auto head = std::make_shared<nn::Linear>(3, 2);
  seq.push_back("head", head);
  EXPECT_EQ(seq.size(), 4u);
  EXPECT_EQ(names(seq.parameters()),
            (std::vector<std::string>{"0.weight", "0.bias", "head.weight", "head.bias"}));
  Tensor x = randn({5, 4});
  expect_tensors_close(seq(x), (*head)(tanh(first(x)) * 2), 1e-6);
  EXPECT_EQ(&seq.get<nn::Linear>(0), &first);
  EXPECT_EQ(&seq.get<nn::Linear>(3), head.get());
  EXPECT_EQ(&seq[1], &seq.get<nn::Tanh>(1));
  EXPECT_CRISP_ERROR(seq.get<nn::Linear>(1), "not of the requested type");
  EXPECT_CRISP_ERROR(seq.get<nn::Linear>(9), "out of range");
  EXPECT_CRISP_ERROR(seq(randn({5, 3})), "in_features = 4");
  EXPECT_CRISP_ERROR(seq.push_back("head", std::make_shared<nn::ReLU>()), "already registered");
  nn::Sequential empty;
  expect_tensors_close(empty(x), x, 0);

  nn::ModuleList list;
  for (int i = 0; i < 3; ++i) list.add<nn::Linear>(2, 2, i != 1);
  EXPECT_EQ(names(list.parameters()),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "2.weight", "2.bias"}));
  Tensor h = randn({1, 2});
  for (size_t i = 0; i < list.size(); ++i) h = list.get<nn::Linear>(i)(h);
  EXPECT_EQ(h.shape(), Shape({1, 2}));
  size_t n = 0;
  for (const auto& m : list) n += m->parameters().size();
  EXPECT_EQ(n, 5u);
}

TEST_P(Nn, DefaultInitsFollowPyTorch) {
  auto check_uniform = [](const Tensor& t, double bound, const char* what) {
    std::vector<double> v = values(t);
    double mx = 0, mean = 0, sq = 0;
    for (double x : v) {
      mx = std::max(mx, std::abs(x));
      mean += x / double(v.size());
      sq += x * x / double(v.size());
    }
    EXPECT_LE(mx, bound) << what;
    EXPECT_GT(mx, 0.95 * bound) << what;
    EXPECT_NEAR(mean, 0, 4 * bound / std::sqrt(3.0 * double(v.size()))) << what;
    EXPECT_NEAR(std::sqrt(sq), bound / std::sqrt(3.0), 0.05 * bound) << what;
  };
  manual_seed(11);
  nn::Linear l(200, 100);
  check_uniform(l.weight, 1 / std::sqrt(200.0), "linear weight");
  check_uniform(l.bias, 1 / std::sqrt(200.0), "linear bias");
  nn::Conv2d c(6, 40, {3, 2}, {.groups = 2});
  check_uniform(c.weight, 1 / std::sqrt(18.0), "conv weight");
  nn::ConvTranspose2d ct(6, 400, 3, {.groups = 2});
  EXPECT_EQ(ct.weight.shape(), Shape({6, 200, 3, 3}));
  check_uniform(ct.weight, 1 / std::sqrt(1800.0), "conv transpose weight");
  check_uniform(ct.bias, 1 / std::sqrt(1800.0), "conv transpose bias");
  nn::MultiheadAttention mha(32, 4);
  check_uniform(mha.in_proj_weight, std::sqrt(6.0 / 128), "in_proj_weight");
  check_uniform(mha.out_proj->weight, 1 / std::sqrt(32.0), "out_proj.weight");
  expect_close(mha.in_proj_bias, std::vector<double>(96, 0));
  expect_close(mha.out_proj->bias, std::vector<double>(32, 0));
  nn::Embedding e(100, 50);
  EXPECT_NEAR(values(e.weight.mean())[0], 0, 0.06);
  EXPECT_NEAR(values(e.weight.std())[0], 1, 0.04);
  nn::LayerNorm ln(5);
  expect_close(ln.weight, std::vector<double>(5, 1));
  expect_close(ln.bias, std::vector<double>(5, 0));
  nn::BatchNorm2d bn(3);
  expect_close(bn.running_var, {1, 1, 1});
  // Reproducible under manual_seed.
  manual_seed(5);
  nn::Linear a(4, 3);
  manual_seed(5);
  nn::Linear b(4, 3);
  expect_tensors_close(a.weight, b.weight, 0);
  nn::Linear c2(4, 3);
  EXPECT_NE(values(a.weight), values(c2.weight));
}

TEST_P(Nn, MultiheadAttentionMatchesPyTorch) {
  auto run = [](int64_t E, int64_t H, int64_t N, int64_t L, int64_t S, nn::AttentionMasks masks,
                const std::vector<double>& want, const char* what) {
    nn::MultiheadAttention m(E, H);
    EXPECT_EQ(m.state().names(), (std::vector<std::string>{"in_proj_weight", "in_proj_bias",
                                                           "out_proj.weight", "out_proj.bias"}));
    set_det(m);
    m.eval();
    Tensor q = det({N, L, E}, 11, 1), k = det({N, S, E}, 12, 1), v = det({N, S, E}, 13, 1);
    expect_close(m(q, k, v, masks), want, 1e-5, what);
  };
  run(4, 2, 2, 3, 3, {}, kMHA, "self");
  run(6, 3, 2, 2, 4, {}, kMHACross, "cross");
  std::vector<int64_t> keep;
  for (int l = 0; l < 2; ++l)
    for (int s = 0; s < 4; ++s) keep.push_back((l + s) % 3 != 1);
  run(6, 3, 2, 2, 4, {.attn_mask = Tensor(keep, {2, 4}) != 0}, kMHABoolMask, "bool mask");
  run(6, 3, 2, 2, 4, {.key_padding_mask = Tensor({1, 1, 0, 1, 1, 0, 1, 1}, {2, 4}) != 0},
      kMHAKeyPad, "key padding");
  run(6, 3, 2, 2, 4, {.attn_mask = det({2, 4}, 21, 1)}, kMHAFloatMask, "float mask");
  run(4, 2, 2, 3, 3, {.is_causal = true}, kMHACausal, "causal");

  // Unbatched input is batch 0 of the batched result; gradients reach every parameter.
  nn::MultiheadAttention m(4, 2);
  set_det(m);
  Tensor q = det({2, 3, 4}, 11, 1), k = det({2, 3, 4}, 12, 1), v = det({2, 3, 4}, 13, 1);
  expect_tensors_close(m(q[0], k[0], v[0]), m(q, k, v)[0], 1e-6);
  m(q).sum().backward();
  for (const auto& p : m.parameters()) EXPECT_TRUE(p.tensor->grad().defined()) << p.name;
  EXPECT_CRISP_ERROR(m(randn({2, 3, 5})), "[N, L, 4]");
  EXPECT_CRISP_ERROR(nn::MultiheadAttention(6, 4), "not divisible");
  EXPECT_CRISP_ERROR(m(q, k, v, {.key_padding_mask = ones({2, 2}, bool_)}), "key_padding_mask");
  // Attention dropout acts only in training.
  nn::MultiheadAttention d(4, 2, 0.5);
  set_det(d);
  d.eval();
  expect_tensors_close(d(q, k, v), m(q, k, v), 1e-6);
  d.train();
  EXPECT_NE(values(d(q, k, v)), values(m(q, k, v)));
}

TEST_P(Nn, TransformerEncoderLayerMatchesPyTorch) {
  const std::vector<std::string> torch_names = {"self_attn.in_proj_weight",
                                                "self_attn.in_proj_bias",
                                                "self_attn.out_proj.weight",
                                                "self_attn.out_proj.bias",
                                                "linear1.weight",
                                                "linear1.bias",
                                                "linear2.weight",
                                                "linear2.bias",
                                                "norm1.weight",
                                                "norm1.bias",
                                                "norm2.weight",
                                                "norm2.bias"};
  nn::TransformerEncoderLayer pre(4, 2, {.dim_feedforward = 6, .dropout = 0});
  EXPECT_EQ(pre.state().names(), torch_names);
  set_det(pre);
  pre.eval();
  Tensor x = det({2, 3, 4}, 9, 1);
  expect_close(pre(x), kEncPre, 1e-5);
  nn::TransformerEncoderLayer post(
      4, 2, {.dim_feedforward = 6, .dropout = 0, .activation = "gelu", .norm_first = false});
  set_det(post);
  expect_close(post(x), kEncPost, 1e-5);
  pre.train();
  pre(x, {.is_causal = true}).sum().backward();
  for (const auto& p : pre.parameters()) EXPECT_TRUE(p.tensor->grad().defined()) << p.name;
  EXPECT_CRISP_ERROR(nn::TransformerEncoderLayer(4, 2, {.activation = "swish"}), "activation");
}

TEST_P(Nn, ModuleMovesBetweenBackendsAndDtypes) {
  Outer m;
  m.to(Backend::cpu());
  for (const auto& p : m.parameters()) {
    EXPECT_EQ(p.tensor->backend(), Backend::cpu());
    EXPECT_TRUE(p.tensor->requires_grad());
  }
  m.to(f64);
  for (const auto& p : m.parameters()) EXPECT_EQ(p.tensor->dtype(), f64) << p.name;
  EXPECT_EQ(m.seq->get<nn::BatchNorm1d>(2).running_mean.dtype(), f64);
  EXPECT_EQ(m.seq->get<nn::BatchNorm1d>(2).num_batches_tracked.dtype(), i64);
  EXPECT_EQ(m.buf.dtype(), i64);
  EXPECT_EQ(m(randn({4, 3}, f64)).dtype(), f64);
  EXPECT_CRISP_ERROR(m.to(i32), "floating-point");
}

INSTANTIATE_TEST_SUITE_P(Backends, Nn, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
