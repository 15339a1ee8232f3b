// Optimizers, clipping, schedules and optimizer state, checked against PyTorch 1.13.
#include <cmath>
#include <cstring>
#include <memory>

#include "cpu/optim.h"
#include "testing.h"

namespace crisp {
namespace {

using optim::Optimizer;
using testing::expect_close;

// ---- PyTorch references ----
// Two parameters (shapes [2, 3] and [4]) start at kP0 and take one step per row of kGrads; the
// tables hold both parameters, flattened, after each step. /usr/bin/python3 with torch 1.13:
//   ps = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in p0]
//   opt = torch.optim.Adam(ps, lr=0.05)   # etc., as named in kOptimCases
//   for g in grads: opt.zero_grad(); sum((p * torch.tensor(gg)).sum() ...).backward(); opt.step()
const std::vector<std::vector<double>> kP0 = {{0.5, -1.2, 0.3, 2.0, -0.7, 0.05},
                                              {1.5, -0.25, 0.8, -2.2}};
const std::vector<std::vector<std::vector<double>>> kGrads = {
    {{0.9, -2.0, 0.4, 1.1, -0.3, 3.0}, {-1.5, 0.7, 0.2, -0.05}},
    {{0.01, 0.2, -0.05, 0.03, 0.1, -0.02}, {0.04, -0.01, 0.02, 0.3}},
    {{-0.6, 0.5, 1.4, -0.2, 0.8, 0.25}, {0.9, 1.6, -0.4, 0.15}},
    {{0.3, -0.9, 0.05, 0.7, -1.1, 0.4}, {-0.2, 0.35, 1.2, -0.8}},
};

const std::vector<std::vector<double>> kSgdPlain = {
    {0.40999999999999998, -1, 0.26000000000000001, 1.8899999999999999, -0.66999999999999993, -0.25,
     1.6499999999999999, -0.32000000000000001, 0.78000000000000003, -2.1950000000000003},
    {0.40899999999999997, -1.02, 0.26500000000000001, 1.887, -0.67999999999999994, -0.248,
     1.6459999999999999, -0.31900000000000001, 0.77800000000000002, -2.2250000000000001},
    {0.46899999999999997, -1.0700000000000001, 0.12500000000000003, 1.907, -0.7599999999999999,
     -0.27300000000000002, 1.5559999999999998, -0.47900000000000004, 0.81800000000000006,
     -2.2400000000000002},
    {0.43899999999999995, -0.98000000000000009, 0.12000000000000002, 1.837, -0.64999999999999991,
     -0.313, 1.5759999999999998, -0.51400000000000001, 0.69800000000000006, -2.1600000000000001},
};
const std::vector<std::vector<double>> kSgdMomentum = {
    {0.40949999999999998, -0.99879999999999991, 0.25969999999999999, 1.8879999999999999,
     -0.66930000000000001, -0.25005000000000005, 1.6485000000000001, -0.31974999999999998, 0.7792,
     -2.1928000000000001},
    {0.32678144999999997, -0.83482107999999988, 0.22769626999999998, 1.7828008,
     -0.65006763000000001, -0.51806995500000008, 1.7770663500000001, -0.381337225,
     0.75797871999999999, -2.21134648},
    {0.30604065169499994, -0.73148871302799989, 0.072687986356999953, 1.70451699928,
     -0.70417343613299999, -0.78132165154050015, 1.8101767052850002, -0.58042252399750005,
     0.77419738715200004, -2.2395481001680002},
    {0.26009849663397444, -0.55683124291147468, -0.071384888109421368, 1.5695275133326481,
     -0.65323490556018027, -1.0535449889405637, 1.8563468660067437, -0.79057691282365228,
     0.68009740994036327, -2.1909139650290488},
};
const std::vector<std::vector<double>> kSgdNesterov = {
    {0.57650000000000001, -1.3692, 0.33329999999999999, 2.081, -0.72070000000000001, 0.31955,
     1.3514999999999999, -0.18475, 0.81080000000000008, -2.1847000000000003},
    {0.59941149999999999, -1.3990372, 0.3376403, 2.0937709999999998, -0.71257369999999998,
     0.41071405, 1.2901365, -0.16078724999999999, 0.80914280000000005, -2.1325977000000003},
    {0.56025199650000002, -1.3787924251999999, 0.46740697730000003, 2.074267861,
     -0.63454229669999995, 0.50452706354999999, 1.3142404715, 0.0034910352500000276,
     0.76697795480000008, -2.0789612807000002},
    {0.57727977173150002, -1.4567836223331998, 0.51686421754430001, 2.119372023051,
     -0.70025658818969994, 0.60267958701805002, 1.2728560304565, 0.10173909513275002,
     0.85357984824680011, -2.1038718845337003},
};
const std::vector<std::vector<double>> kAdam = {
    {0.45000000055555556, -1.1500000002499999, 0.25000000124999999, 1.9500000004545455,
     -0.6500000016666666, 1.6666666657894069e-10, 1.5499999996666667, -0.2999999992857143,
     0.75000000249999998, -2.1500000099999981},
    {0.41608556768986893, -1.1203675747458421, 0.22137327346810623, 1.9154946914206883,
     -0.62998907396404036, -0.033254002950268424, 1.5824986685806892, -0.33296775180929566,
     0.71295947296592421, -2.1811959418730891},
    {0.41200789405429183, -1.1058581397377862, 0.18456003881057059, 1.8949699475520605,
     -0.65401545189737187, -0.061525585186313916, 1.5875954204123544, -0.3724414946360482,
     0.7286596683060993, -2.2169550309567168},
    {0.40101552849444932, -1.0833662300509137, 0.153425440400802, 1.8652927582552623,
     -0.64324071968460161, -0.088314302000462128, 1.5950470573574913, -0.40985796698537824,
     0.70592586654252576, -2.2016222494714173},
};
const std::vector<std::vector<double>> kAdamAmsgradL2 = {
    {0.48000002105260942, -1.1800000094339578, 0.28000004651151972, 1.9800000153846036,
     -0.68000005405390795, 0.030000006655571832, 1.5199999851851962, -0.26999997037041429,
     0.7800000714283164, -2.1800000740737997},
    {0.4666401010588086, -1.1681874996865407, 0.26838125902633875, 1.9648661372846012,
     -0.66892934674587223, 0.017675131261194389, 1.5302059377390242, -0.28156210741125398,
     0.76277060212101055, -2.1724573080646308},
    {0.465320361205731, -1.1622580879889775, 0.2526710959227032, 1.954101199468059,
     -0.67780960873482432, 0.0077179389524837348, 1.527365621330915, -0.2976580470978093,
     0.76490069123189708, -2.1637374933201445},
    {0.4602030330591389, -1.1521202506665165, 0.24016231234440233, 1.9394305011801809,
     -0.6708738599184314, -0.0015311885667701492, 1.5255930660434356, -0.31225709799483387,
     0.75301549669278056, -2.1493935140640268},
};
const std::vector<std::vector<double>> kAdamMaximize = {
    {0.50999999988888889, -1.20999999995, 0.30999999974999998, 2.0099999999090907,
     -0.7099999996666666, 0.059999999966666669, 1.4900000000666667, -0.24000000014285713,
     0.80999999950000001, -2.2099999980000007},
    {0.51678288646202619, -1.2159264850508316, 0.31572534530637875, 2.016901061715862,
     -0.71400218520719183, 0.066650800590053683, 1.4835002662838621, -0.23340644963814086,
     0.81740810540681519, -2.2037608116253824},
    {0.51759842118914157, -1.2188283720524427, 0.32308799223788587, 2.0210060104895877,
     -0.70919690962052551, 0.072305117037262778, 1.4824809159175292, -0.22551170107279037,
     0.81426806633878013, -2.196608993808657},
    {0.51979689430111009, -1.2233267539898172, 0.32931491191983958, 2.0269414483489472,
     -0.7113518560630796, 0.077662860400092418, 1.4809905885285017, -0.21802840660292436,
     0.81881482669149486, -2.199675550105717},
};
const std::vector<std::vector<double>> kAdamW = {
    {0.44750000055555555, -1.1440000002499999, 0.24850000124999996, 1.9400000004545455,
     -0.64650000166666666, -0.00024999983333333364, 1.5424999996666666, -0.29874999928571427,
     0.74600000249999998, -2.139000009999998},
    {0.41134806768709115, -1.1086475747445921, 0.21863077346185619, 1.8957946914184156,
     -0.6232565739557071, -0.033502752951101757, 1.5672861685823558, -0.33022400181286704,
     0.7052294729534242, -2.1595009418230888},
    {0.4052136537130786, -1.0885949018628132, 0.18072438493701126, 1.8657909740926957,
     -0.64416666901926012, -0.061606821422391739, 1.5645464895711092, -0.36804662463055526,
     0.71740352092883219, -2.184462526197601},
    {0.39219521988467071, -1.0606600176666265, 0.14868616460255762, 1.8267848299254339,
     -0.6301711034613936, -0.088087504129427993, 1.5641753940683907, -0.40362286385673252,
     0.69108270156061447, -2.1582074320813134},
};
const std::vector<std::vector<double>> kAdamWAmsgrad = {
    {0.46985000033333335, -1.16964000015, 0.26991000074999999, 1.9694000002727274,
     -0.66979000099999997, 0.019985000100000001, 1.5295499998000002, -0.27992499957142858,
     0.7697600014999999, -2.1693400059999992},
    {0.45001045035507131, -1.1521322672146181, 0.25329053127218537, 1.9487408755368221,
     -0.65832562747314061, 0.00068709008065575769, 1.5479255334714592, -0.29895864457765153,
     0.74779707636101045, -2.1880597163392621},
    {0.44877628920735707, -1.1441953991393337, 0.2304835808446527, 1.9369016765625806,
     -0.67376069018899576, -0.015394812493875643, 1.5491939394014944, -0.32304248052486451,
     0.75830174366204894, -2.2093557226486524},
    {0.44275094222310368, -1.1307960312992822, 0.21180681685782046, 1.9187544771071032,
     -0.66642215693414775, -0.030592329702919127, 1.5522448613997952, -0.34546413890143146,
     0.74351058158405392, -2.1982160179839232},
};
const std::vector<std::vector<double>> kRMSprop = {
    {0.40000001111110994, -1.1000000049999998, 0.20000002499999381, 1.9000000090909084,
     -0.60000003333332219, -0.049999996666666727, 1.5999999933333338, -0.3499999857142877,
     0.70000004999997512, -2.1000001999996001},
    {0.3988833721745893, -1.1100000044999998, 0.21246501326608008, 1.8972600262194026,
     -0.63176607014199782, -0.04932998651828082, 1.5973208547040976, -0.34856436557683773,
     0.69000005499997263, -2.1986528922918085},
    {0.45473708772840549, -1.1343685122537803, 0.11629654276082438, 1.9153168329140842,
     -0.72488322245485537, -0.057717644351129568, 1.5455042947903235, -0.44032540190055708,
     0.77953233116706599, -2.243069256914255},
    {0.42771379363267825, -1.0940300437204524, 0.11284670643210737, 1.8617008942229769,
     -0.64592264273912958, -0.071084467410406735, 1.5570003680235072, -0.4601008496722464,
     0.68575955645051379, -2.1508718987137705},
};
const std::vector<std::vector<double>> kRMSpropCenteredMomentum = {
    {0.46666678678635393, -1.166666720604012, 0.26666693440213329, 1.9666667592590021,
     -0.66666699833832499, 0.016666703672824121, 1.5333332553608061, -0.2833331717179553,
     0.76666712962319972, -2.166667361096644},
    {0.4354035904497715, -1.1390457524481481, 0.23971213652576343, 1.9329093093782117,
     -0.6433361538864838, -0.013110364634599837, 1.5605079746371466, -0.3121102803600419,
     0.72822303418830192, -2.1615052675524704},
    {0.42533311905736521, -1.1216426920812042, 0.1825380164132758, 1.9056508862311747,
     -0.6523743518497549, -0.042966253527891608, 1.5658326783834049, -0.37005555430867498,
     0.72068187188572697, -2.1625208509649361},
    {0.40612841196160038, -1.0905160861926011, 0.12963340533246984, 1.8600331069969076,
     -0.63423928827272569, -0.074970667006450165, 1.5731283296172616, -0.42925325753941485,
     0.68263628993888059, -2.1314378266505343},
};
const std::vector<std::vector<double>> kRMSpropMomentumMaximize = {
    {0.69999997777778011, -1.3999999900000004, 0.49999995000001235, 2.1999999818181832,
     -0.89999993333335537, 0.24999999333333348, 1.3000000133333325, -0.050000028571424548,
     0.9999999000000499, -2.3999996000007999},
    {0.80223324453971145, -1.4799999860000006, 0.57506994846784598, 2.3054799384702864,
     -0.93646782638268189, 0.34865996970322838, 1.2053582972584711, 0.047128716867963195,
     1.1199998400000799, -2.3026940154167832},
    {0.7416424468130447, -1.4712629684924396, 0.80494188871227423, 2.3221063034069749,
     -0.76846746828162993, 0.41476527355387333, 1.2616705590485886, 0.27921516223509579,
     1.0009352576659083, -2.1652084938798817},
    {0.76539363614116573, -1.5475713968053151, 0.92677753149192232, 2.4376513632575336,
     -0.84238844866255558, 0.47455157159775013, 1.2668345434772799, 0.43480928046204076,
     1.128948515931927, -2.2808604495123999},
};

// Schedules: get_last_lr() after construction and after each step, from
//   opt = torch.optim.SGD([p], lr=0.1); s = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5); etc.
const std::vector<double> kStepLR = {
    0.10000000000000001,  0.10000000000000001,  0.10000000000000001,  0.050000000000000003,
    0.050000000000000003, 0.050000000000000003, 0.025000000000000001, 0.025000000000000001,
    0.025000000000000001, 0.012500000000000001, 0.012500000000000001};
const std::vector<double> kCosine = {
    0.10000000000000001,  0.090546341221559898, 0.06579634122155989,
    0.035203658778440096, 0.010453658778440105, 0.001,
    0.010453658778440102, 0.035203658778440117, 0.065796341221559931,
    0.090546341221559953, 0.10000000000000005,  0.090546341221559981,
    0.065796341221559945, 0.035203658778440138};
const std::vector<double> kLinearLR = {
    0.025000000000000001, 0.043750000000000004, 0.062500000000000014,
    0.081250000000000017, 0.10000000000000002,  0.10000000000000002,
    0.10000000000000002,  0.10000000000000002,  0.10000000000000002};
const std::vector<double> kOneCycle = {
    0.0040000000000000036, 0.052000000000000005,   0.10000000000000001,  0.095048463201347383,
    0.081174565394976306,  0.06112620219362893,    0.038874197806371073, 0.018825834605023701,
    0.0049519367986526289, 3.9999999999999998e-07, 0.0049519367986526237};
const std::vector<double> kOneCycleMomentum = {
    0.94999999999999996, 0.89999999999999991, 0.84999999999999998, 0.85495155660487898,
    0.86882550990706331, 0.88887395330218422, 0.91112604669781572, 0.93117449009293662,
    0.94504844339512095, 0.94999999999999996, 0.94504844339512095};
const std::vector<double> kOneCycleThree = {0.002,
                                            0.011000000000000001,
                                            0.020000000000000004,
                                            0.010999999999999999,
                                            0.0019999999999999983,
                                            0.0017171428571428572,
                                            0.0014342857142857143,
                                            0.0011514285714285715,
                                            0.00086857142857142862,
                                            0.00058571428571428576,
                                            0.00030285714285714291,
                                            2.0000000000000052e-05,
                                            -0.0002628571428571428};
const std::vector<double> kOneCycleThreeMomentum = {
    0.94999999999999996, 0.89999999999999991, 0.84999999999999998, 0.89999999999999991,
    0.94999999999999996, 0.94999999999999996, 0.94999999999999996, 0.94999999999999996,
    0.94999999999999996, 0.94999999999999996, 0.94999999999999996, 0.94999999999999996,
    0.94999999999999996};

// Two parameters at kP0, named "a" and "b".
struct TwoParams {
  Tensor a, b;
  explicit TwoParams(DType d = f64)
      : a(Tensor(kP0[0], {2, 3}, d).requires_grad_()), b(Tensor(kP0[1], {4}, d).requires_grad_()) {}
  std::vector<nn::NamedParam> named() { return {{"a", &a}, {"b", &b}}; }
  // Gradients kGrads[k] through backward, as a training loop makes them (they accumulate).
  void backward(size_t k) {
    const Tensor ga(kGrads[k][0], {2, 3}, a.dtype()), gb(kGrads[k][1], {4}, b.dtype());
    ((a * ga).sum() + (b * gb).sum()).backward();
  }
  std::vector<double> values() const {
    std::vector<double> v = a.to_vector<double>(), w = b.to_vector<double>();
    v.insert(v.end(), w.begin(), w.end());
    return v;
  }
};

void expect_all_near(const std::vector<double>& got, const std::vector<double>& want, double tol,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::abs(want[i]))) << what << " at " << i;
}

using Make = std::function<std::unique_ptr<Optimizer>(std::vector<nn::NamedParam>)>;
struct OptimCase {
  const char* torch;  // the PyTorch constructor the table came from
  Make make;
  const std::vector<std::vector<double>>& expected;
};

const std::vector<OptimCase>& optim_cases() {
  using namespace optim;
  static const std::vector<OptimCase> cases{
      {"SGD(lr=0.1)", [](auto p) { return std::make_unique<SGD>(p, SGDOptions{.lr = 0.1}); },
       kSgdPlain},
      {"SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)",
       [](auto p) {
         return std::make_unique<SGD>(
             p, SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
       },
       kSgdMomentum},
      {"SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1, maximize=True)",
       [](auto p) {
         return std::make_unique<SGD>(p, SGDOptions{.lr = 0.05,
                                                    .momentum = 0.8,
                                                    .weight_decay = 0.1,
                                                    .nesterov = true,
                                                    .maximize = true});
       },
       kSgdNesterov},
      {"Adam(lr=0.05)", [](auto p) { return std::make_unique<Adam>(p, AdamOptions{.lr = 0.05}); },
       kAdam},
      {"Adam(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, amsgrad=True)",
       [](auto p) {
         return std::make_unique<Adam>(p, AdamOptions{.lr = 0.02,
                                                      .beta1 = 0.8,
                                                      .beta2 = 0.95,
                                                      .eps = 1e-6,
                                                      .weight_decay = 0.1,
                                                      .amsgrad = true});
       },
       kAdamAmsgradL2},
      {"Adam(lr=0.01, maximize=True)",
       [](auto p) { return std::make_unique<Adam>(p, AdamOptions{.lr = 0.01, .maximize = true}); },
       kAdamMaximize},
      {"AdamW(lr=0.05, weight_decay=0.1)",
       [](auto p) {
         return std::make_unique<AdamW>(p, AdamWOptions{.lr = 0.05, .weight_decay = 0.1});
       },
       kAdamW},
      {"AdamW(lr=0.03, betas=(0.85, 0.99), amsgrad=True)",
       [](auto p) {
         return std::make_unique<AdamW>(
             p, AdamWOptions{.lr = 0.03, .beta1 = 0.85, .beta2 = 0.99, .amsgrad = true});
       },
       kAdamWAmsgrad},
      {"RMSprop(lr=0.01)",
       [](auto p) { return std::make_unique<RMSprop>(p, RMSpropOptions{.lr = 0.01}); }, kRMSprop},
      {"RMSprop(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.05, momentum=0.9, centered=True)",
       [](auto p) {
         return std::make_unique<RMSprop>(p, RMSpropOptions{.lr = 0.01,
                                                            .alpha = 0.9,
                                                            .eps = 1e-6,
                                                            .weight_decay = 0.05,
                                                            .momentum = 0.9,
                                                            .centered = true});
       },
       kRMSpropCenteredMomentum},
      {"RMSprop(lr=0.02, momentum=0.5, maximize=True)",
       [](auto p) {
         return std::make_unique<RMSprop>(
             p, RMSpropOptions{.lr = 0.02, .momentum = 0.5, .maximize = true});
       },
       kRMSpropMomentumMaximize},
  };
  return cases;
}

void run_against_torch(DType d, double tol) {
  for (const OptimCase& c : optim_cases()) {
    TwoParams p(d);
    auto opt = c.make(p.named());
    for (size_t k = 0; k < kGrads.size(); ++k) {
      opt->zero_grad();
      p.backward(k);
      opt->step();
      expect_all_near(p.values(), c.expected[k], tol,
                      std::string(c.torch) + " " + std::string(dtype_name(d)) + " step " +
                          std::to_string(k + 1));
    }
  }
}

TEST(Optim, MatchesPyTorchInFloat64) { run_against_torch(f64, 1e-12); }
TEST(Optim, MatchesPyTorchInFloat32) { run_against_torch(f32, 2e-6); }

// PyTorch's Adam/AdamW formulas, in double, beside the float32 kernel; 70001 elements spread
// over threads, vector bodies and a scalar tail.
TEST(Optim, AdamOnALargeTensorMatchesItsFormula) {
  const int64_t saved_stream_bytes = cpu::optim_stream_bytes();
  struct Restore {
    int64_t bytes;
    ~Restore() { cpu::optim_stream_bytes() = bytes; }
  } restore{saved_stream_bytes};
  for (int variant = 0; variant < 4; ++variant) {
    const bool decoupled = variant % 2 == 1;
    // Through the cache, then with streaming stores (the path for updates larger than it).
    cpu::optim_stream_bytes() = variant < 2 ? saved_stream_bytes : 0;
    const int64_t n = 70001;
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.05;
    Tensor p = randn({n}).requires_grad_();
    std::vector<double> x = p.to_vector<double>(), m(n), v(n), vmax(n);
    std::unique_ptr<Optimizer> opt;
    if (decoupled)
      opt = std::make_unique<optim::AdamW>(std::vector<nn::NamedParam>{{"p", &p}},
                                           optim::AdamWOptions{.lr = lr, .weight_decay = wd});
    else
      opt = std::make_unique<optim::Adam>(
          std::vector<nn::NamedParam>{{"p", &p}},
          optim::AdamOptions{.lr = lr, .weight_decay = wd, .amsgrad = true});
    for (int t = 1; t <= 3; ++t) {
      const Tensor g = randn({n}) * (t == 2 ? 0.01 : 1.0);
      const std::vector<double> gv = g.to_vector<double>();
      opt->zero_grad();
      (p * g).sum().backward();
      opt->step();
      for (int64_t i = 0; i < n; ++i) {
        double d = gv[i];
        if (decoupled)
          x[i] *= 1 - lr * wd;
        else
          d += wd * x[i];
        m[i] = b1 * m[i] + (1 - b1) * d;
        v[i] = b2 * v[i] + (1 - b2) * d * d;
        vmax[i] = std::max(vmax[i], v[i]);
        const double u = decoupled ? v[i] : vmax[i];
        const double denom = std::sqrt(u) / std::sqrt(1 - std::pow(b2, t)) + eps;
        x[i] -= lr / (1 - std::pow(b1, t)) * m[i] / denom;
      }
      expect_all_near(p.to_vector<double>(), x, 1e-5, decoupled ? "AdamW" : "Adam");
    }
  }
}

TEST(Optim, SixteenBitParametersKeepFloat32State) {
  for (DType d : {f16, bf16}) {
    Tensor p = Tensor(kP0[0], {2, 3}, d).requires_grad_();
    Tensor ref = Tensor(kP0[0], {2, 3}, f32).requires_grad_();
    optim::Adam half({{"p", &p}}, {.lr = 0.05}), full({{"p", &ref}}, {.lr = 0.05});
    for (size_t k = 0; k < kGrads.size(); ++k) {
      half.zero_grad();
      full.zero_grad();
      (p * Tensor(kGrads[k][0], {2, 3}, d)).sum().backward();
      (ref * Tensor(kGrads[k][0], {2, 3}, f32)).sum().backward();
      optim::step(half, full);
    }
    EXPECT_EQ(p.dtype(), d);
    EXPECT_EQ(half.state().at("p.exp_avg").dtype(), f32);
    expect_all_near(p.to_vector<double>(), ref.to_vector<double>(), 1e-2, "16-bit Adam");
  }
}

TEST(Optim, ParameterStaysALeafAndKeepsItsGradient) {
  TwoParams p(f32);
  optim::SGD opt(p.named(), {.lr = 0.1});
  const Tensor before = p.a;
  p.backward(0);
  opt.step();
  EXPECT_TRUE(p.a.requires_grad());
  EXPECT_NO_THROW(p.a.requires_grad_());  // only leaves accept it: the step recorded no graph
  ASSERT_TRUE(p.a.grad().defined());
  expect_close(p.a.grad(), kGrads[0][0]);
  expect_close(before, kP0[0]);  // other handles keep the old value
  p.backward(1);                 // gradients accumulate until zero_grad, as in PyTorch
  std::vector<double> sum(6);
  for (size_t i = 0; i < 6; ++i) sum[i] = kGrads[0][0][i] + kGrads[1][0][i];
  expect_close(p.a.grad(), sum);
  opt.zero_grad();
  EXPECT_FALSE(p.a.grad().defined());
  EXPECT_FALSE(p.b.grad().defined());
  const auto v = p.values();
  opt.step();  // nothing has a gradient: nothing moves
  EXPECT_EQ(p.values(), v);
}

TEST(Optim, SkipsParametersWithoutGradient) {
  TwoParams p;
  Tensor frozen = Tensor({1.0, 2.0});
  optim::Adam opt({{"a", &p.a}, {"b", &p.b}, {"frozen", &frozen}}, {.lr = 0.1});
  (p.a * 2.0).sum().backward();
  opt.step();
  expect_close(p.b, kP0[1], 0);
  expect_close(frozen, {1.0, 2.0}, 0);
  const State s = opt.state();
  EXPECT_EQ(s.at("a.step").item<int64_t>(), 1);
  EXPECT_EQ(s.at("a.step").dtype(), i64);
  EXPECT_FALSE(s.contains("b.step"));
  EXPECT_FALSE(s.contains("b.exp_avg"));
}

TEST(Optim, GroupsHaveTheirOwnHyperParameters) {
  TwoParams p;
  std::vector<nn::NamedParam> first{{"a", &p.a}}, second{{"b", &p.b}};
  optim::SGD opt({{first, {.lr = 0.1}}, {second, {.lr = 0.01, .momentum = 0.5}}});
  ASSERT_EQ(opt.num_groups(), 2u);
  EXPECT_EQ(opt.lr(0), 0.1);
  EXPECT_EQ(opt.lr(1), 0.01);
  EXPECT_EQ(opt.options(1).momentum, 0.5);
  EXPECT_EQ(opt.params(1)[0].tensor, &p.b);
  p.backward(0);
  opt.step();
  std::vector<double> a(6), b(4);
  for (size_t i = 0; i < 6; ++i) a[i] = kP0[0][i] - 0.1 * kGrads[0][0][i];
  for (size_t i = 0; i < 4; ++i) b[i] = kP0[1][i] - 0.01 * kGrads[0][1][i];
  expect_close(p.a, a, 1e-14);
  expect_close(p.b, b, 1e-14);
  opt.set_lr(0.5);
  EXPECT_EQ(opt.lr(0), 0.5);
  EXPECT_EQ(opt.lr(1), 0.5);
  opt.set_lr(1, 0.25);
  EXPECT_EQ(opt.lr(1), 0.25);
  Tensor c = Tensor({3.0}).requires_grad_();
  opt.add_param_group({{{"c", &c}}, {.lr = 1.0}});
  EXPECT_EQ(opt.num_groups(), 3u);
  EXPECT_CRISP_ERROR(opt.lr(3), "group 3 is out of range");
  // The forms the documentation shows compile as written.
  optim::Adam one(p.named(), {.lr = 1e-3});
  optim::Adam two({{first, {.lr = 1e-3}}, {second, {.lr = 1e-4}}});
  EXPECT_EQ(two.lr(1), 1e-4);
}

TEST(Optim, RepeatedNamesAcrossGroupsAreQualifiedInState) {
  Tensor w1 = Tensor({1.0, 2.0}).requires_grad_(), w2 = Tensor({3.0}).requires_grad_();
  optim::Adam opt({{{{"weight", &w1}}, {}}, {{{"weight", &w2}}, {}}});
  (w1.sum() + w2.sum()).backward();
  opt.step();
  const State s = opt.state();
  EXPECT_TRUE(s.contains("group0.weight.exp_avg"));
  EXPECT_TRUE(s.contains("group1.weight.exp_avg"));
  EXPECT_TRUE(s.contains("group1.lr"));
}

TEST(Optim, StepsSeveralOptimizersInOneCall) {
  TwoParams p, q;
  optim::Adam adam_p({{"a", &p.a}}, {.lr = 0.05}), adam_q({{"a", &q.a}}, {.lr = 0.05});
  optim::SGD sgd_p({{"b", &p.b}}, {.lr = 0.1}), sgd_q({{"b", &q.b}}, {.lr = 0.1});
  p.backward(0);
  q.backward(0);
  optim::step({&adam_p, &sgd_p});
  adam_q.step();
  sgd_q.step();
  EXPECT_EQ(p.values(), q.values());
  p.backward(1);
  q.backward(1);
  optim::step(adam_p, sgd_p);
  adam_q.step();
  sgd_q.step();
  EXPECT_EQ(p.values(), q.values());
  // Every optimizer is checked before any parameter moves.
  sgd_p.options().lr = -1;
  const auto v = p.values();
  EXPECT_CRISP_ERROR(optim::step(adam_p, sgd_p), "invalid learning rate -1");
  EXPECT_EQ(p.values(), v);
}

// One optimizer updates its parameters in batches (one op per dtype and step count); each must
// move exactly as it would alone. Parameters of two dtypes, and one that skips the first step.
TEST(Optim, BatchedUpdatesEqualOneOptimizerPerParameter) {
  for (const OptimCase& c : optim_cases()) {
    const DType dtypes[] = {f64, f32, f64, f32, f64};
    std::vector<Tensor> together, alone;
    for (size_t i = 0; i < 5; ++i) {
      Tensor init = randn({static_cast<int64_t>(3 + 5 * i)}).cast(dtypes[i]);
      together.push_back(init.detach().requires_grad_());
      alone.push_back(init.detach().requires_grad_());
    }
    std::vector<nn::NamedParam> named;
    std::vector<std::unique_ptr<Optimizer>> singles;
    const char* names[] = {"p0", "p1", "p2", "p3", "p4"};
    for (size_t i = 0; i < 5; ++i) {
      named.push_back({names[i], &together[i]});
      singles.push_back(c.make({{"p", &alone[i]}}));
    }
    auto opt = c.make(named);
    for (int step = 0; step < 3; ++step) {
      opt->zero_grad();
      for (auto& o : singles) o->zero_grad();
      for (size_t i = step == 0 ? 1 : 0; i < 5; ++i) {
        Tensor g = randn(together[i].shape()).cast(dtypes[i]);
        (together[i] * g).sum().backward();
        (alone[i] * g).sum().backward();
      }
      opt->step();
      for (auto& o : singles) o->step();
      for (size_t i = 0; i < 5; ++i)
        EXPECT_EQ(together[i].to_vector<double>(), alone[i].to_vector<double>())
            << c.torch << " parameter " << i << " step " << step + 1;
    }
  }
}

TEST(Optim, RejectsBadArguments) {
  TwoParams p;
  EXPECT_CRISP_ERROR(optim::Adam(p.named(), {.beta1 = 1.0}), "invalid beta1 1: must be in [0, 1)");
  EXPECT_CRISP_ERROR(optim::SGD(p.named(), {.lr = 0.1, .nesterov = true}), "Nesterov momentum");
  EXPECT_CRISP_ERROR(optim::RMSprop(p.named(), {.lr = -1}), "invalid learning rate -1");
  EXPECT_CRISP_ERROR(optim::SGD({{"a", &p.a}, {"again", &p.a}}), "appears more than once");
  EXPECT_CRISP_ERROR(optim::SGD({{"w", &p.a}, {"w", &p.b}}), "both named 'w'");
  Tensor ints = Tensor({1, 2});
  EXPECT_CRISP_ERROR(optim::SGD({{"i", &ints}}), "must be floating-point");
  optim::SGD opt(p.named());
  EXPECT_CRISP_ERROR(opt.set_lr(-0.5), "invalid learning rate");
}

TEST(Optim, TrainsAModule) {
  manual_seed(11);
  nn::Linear model(3, 1);
  optim::Adam opt(model.parameters(), {.lr = 0.05});
  const Tensor x = randn({64, 3});
  const Tensor y = x.matmul(Tensor({1.5f, -2.0f, 0.5f}, {3, 1})) + 0.3f;
  float first = 0, last = 0;
  for (int i = 0; i < 300; ++i) {
    opt.zero_grad();
    Tensor loss = nn::mse_loss(model(x), y);
    loss.backward();
    opt.step();
    (i == 0 ? first : last) = loss.item<float>();
  }
  EXPECT_LT(last, 1e-3f * first);
  EXPECT_TRUE(model.weight.requires_grad());
  EXPECT_TRUE(model.weight.grad().defined());
  EXPECT_EQ(opt.state().at("weight.exp_avg").shape(), (Shape{1, 3}));
  EXPECT_EQ(opt.state().at("bias.step").item<int64_t>(), 300);
}

// ---- clipping ----

TEST(Optim, ClipGradNormScalesAllGradientsTogether) {
  TwoParams p;
  std::vector<double> g = kGrads[0][0];
  g.insert(g.end(), kGrads[0][1].begin(), kGrads[0][1].end());
  double sq = 0, l1 = 0, linf = 0;
  for (double x : g) {
    sq += x * x;
    l1 += std::abs(x);
    linf = std::max(linf, std::abs(x));
  }
  auto grads = [&] {
    std::vector<double> v = p.a.grad().to_vector<double>(), w = p.b.grad().to_vector<double>();
    v.insert(v.end(), w.begin(), w.end());
    return v;
  };
  auto scaled = [&](double c) {
    std::vector<double> out;
    for (double x : g) out.push_back(x * c);
    return out;
  };
  const std::pair<double, double> norms[] = {{2, std::sqrt(sq)}, {1, l1}, {optim::inf, linf}};
  for (const auto& [type, total] : norms) {
    p.a.zero_grad();
    p.b.zero_grad();
    p.backward(0);
    EXPECT_NEAR(optim::clip_grad_norm(p.named(), 1.5, type), total, 1e-12) << type;
    expect_all_near(grads(), scaled(1.5 / (total + 1e-6)), 1e-12, "clipped");
    // Under the limit nothing changes.
    EXPECT_NEAR(optim::clip_grad_norm(p.named(), 100, type), 1.5 / (total + 1e-6) * total, 1e-9);
    expect_all_near(grads(), scaled(1.5 / (total + 1e-6)), 1e-12, "unclipped");
  }
  EXPECT_CRISP_ERROR(optim::clip_grad_norm(p.named(), 1, 0), "norm_type must be > 0");
  p.a.zero_grad();
  p.b.zero_grad();
  EXPECT_EQ(optim::clip_grad_norm(p.named(), 1), 0);  // no gradients at all
}

TEST(Optim, ClipGradValueClampsEachElement) {
  TwoParams p;
  p.backward(0);
  optim::clip_grad_value(p.named(), 0.5);
  std::vector<double> a;
  for (double x : kGrads[0][0]) a.push_back(std::clamp(x, -0.5, 0.5));
  expect_close(p.a.grad(), a, 0);
  EXPECT_TRUE(p.a.requires_grad());
  EXPECT_CRISP_ERROR(optim::clip_grad_value(p.named(), -1), "clip must be >= 0");
}

// ---- state ----

// Every tensor copied through host memory, as a checkpoint file does.
State through_host(const State& s) {
  State out;
  for (const auto& [name, t] : s) {
    if (t.dtype() == i64)
      out.set(name, Tensor(t.to_vector<int64_t>(), t.shape(), i64));
    else if (t.dtype() == f64)
      out.set(name, Tensor(t.to_vector<double>(), t.shape(), f64));
    else
      out.set(name, Tensor(t.to_vector<float>(), t.shape(), f32));
  }
  return out;
}

TEST(OptimState, ResumingGivesBitIdenticalSteps) {
  for (const OptimCase& c : optim_cases()) {
    TwoParams p(f32), q(f32);
    auto original = c.make(p.named());
    for (size_t k = 0; k < 2; ++k) {
      original->zero_grad();
      p.backward(k);
      original->step();
    }
    const State saved = through_host(original->state());
    q.a = Tensor(p.a.to_vector<float>(), {2, 3}).requires_grad_();
    q.b = Tensor(p.b.to_vector<float>(), {4}).requires_grad_();
    auto resumed = c.make(q.named());
    resumed->set_lr(123.0);  // load_state restores the saved hyper-parameters
    resumed->load_state(saved);
    EXPECT_EQ(resumed->lr(), original->lr()) << c.torch;
    for (size_t k = 2; k < kGrads.size(); ++k) {
      original->zero_grad();
      resumed->zero_grad();
      p.backward(k);
      q.backward(k);
      original->step();
      resumed->step();
      EXPECT_EQ(p.a.to_vector<float>(), q.a.to_vector<float>()) << c.torch << " step " << k;
      EXPECT_EQ(p.b.to_vector<float>(), q.b.to_vector<float>()) << c.torch << " step " << k;
    }
  }
}

TEST(OptimState, RoundTripsThroughACheckpointFile) {
  manual_seed(5);
  const Tensor x = randn({16, 4}), y = randn({16, 2});
  nn::Linear model(4, 2), resumed(4, 2);
  optim::AdamW opt(model.parameters(), {.lr = 0.01, .amsgrad = true});
  optim::AdamW opt2(resumed.parameters());
  auto train_step = [&](nn::Linear& m, Optimizer& o) {
    o.zero_grad();
    nn::mse_loss(m(x), y).backward();
    o.step();
  };
  for (int i = 0; i < 3; ++i) train_step(model, opt);
  const std::string path = ::testing::TempDir() + "optim_state.safetensors";
  save(path, {{"model", model.state()}, {"opt", opt.state()}}, {{"step", 3}});
  const Checkpoint ckpt = load(path);
  resumed.load_state(ckpt["model"]);
  opt2.load_state(ckpt["opt"]);
  for (int i = 0; i < 2; ++i) {
    train_step(model, opt);
    train_step(resumed, opt2);
    EXPECT_EQ(model.weight.to_vector<float>(), resumed.weight.to_vector<float>());
    EXPECT_EQ(model.bias.to_vector<float>(), resumed.bias.to_vector<float>());
  }
}

TEST(OptimState, NamesDtypesAndShapes) {
  TwoParams p(f32);
  optim::Adam opt(p.named(), {.lr = 0.05, .amsgrad = true});
  p.backward(0);
  opt.step();
  const State s = opt.state();
  const std::vector<std::string> names{
      "group0.lr",        "group0.beta1",    "group0.beta2", "group0.eps",   "group0.weight_decay",
      "group0.amsgrad",   "group0.maximize", "a.step",       "a.exp_avg",    "a.exp_avg_sq",
      "a.max_exp_avg_sq", "b.step",          "b.exp_avg",    "b.exp_avg_sq", "b.max_exp_avg_sq"};
  EXPECT_EQ(s.names(), names);
  EXPECT_EQ(s.at("group0.lr").dtype(), f64);
  EXPECT_EQ(s.at("group0.lr").ndim(), 0);
  EXPECT_EQ(s.at("group0.amsgrad").item<double>(), 1.0);
  EXPECT_EQ(s.at("b.step").dtype(), i64);
  EXPECT_EQ(s.at("b.exp_avg").shape(), (Shape{4}));
  EXPECT_EQ(s.at("b.exp_avg").dtype(), f32);
  // After a step the saved state is a snapshot: the next step leaves it alone.
  const std::vector<float> m = s.at("a.exp_avg").to_vector<float>();
  p.backward(1);
  opt.step();
  EXPECT_EQ(s.at("a.exp_avg").to_vector<float>(), m);
}

TEST(OptimState, LoadStateRefusesMismatchesAndChangesNothing) {
  TwoParams p;
  optim::Adam opt(p.named(), {.lr = 0.05});
  p.backward(0);
  opt.step();
  const State good = opt.state();
  State bad = good;
  bad.set("a.exp_avg", zeros({3, 2}, f64));
  bad.set("group0.lr", scalar(7.0, f64));
  EXPECT_CRISP_ERROR(opt.load_state(bad),
                     "entry 'a.exp_avg' has shape [3, 2] but parameter 'a' has shape [2, 3]");
  EXPECT_EQ(opt.lr(), 0.05);
  bad = good;
  bad.set("c.exp_avg", zeros({2}, f64));
  EXPECT_CRISP_ERROR(opt.load_state(bad), "unexpected entry 'c.exp_avg'");
  bad = good;
  bad.set("a.momentum_buffer", zeros({2, 3}, f64));
  EXPECT_CRISP_ERROR(opt.load_state(bad), "unexpected entry 'a.momentum_buffer'");
  bad = good;
  bad.erase("group0.lr");
  EXPECT_CRISP_ERROR(opt.load_state(bad), "missing entry 'group0.lr'");
  bad = good;
  bad.erase("a.exp_avg_sq");
  EXPECT_CRISP_ERROR(opt.load_state(bad), "missing entry 'a.exp_avg_sq'");
  bad = good;
  bad.set("group1.lr", scalar(0.1, f64));
  EXPECT_CRISP_ERROR(opt.load_state(bad), "is for group 1 but the optimizer has 1 group");
  bad = good;
  bad.set("group0.amsgrad", scalar(1.0, f64));  // needs max_exp_avg_sq, which is absent
  EXPECT_CRISP_ERROR(opt.load_state(bad), "missing entry 'a.max_exp_avg_sq'");
  EXPECT_FALSE(opt.options().amsgrad);
  // The refusals left the state as it was: it matches a twin that never saw them.
  TwoParams q;
  optim::Adam twin(q.named(), {.lr = 0.05});
  q.backward(0);
  twin.step();
  p.backward(1);
  q.backward(1);
  opt.step();
  twin.step();
  EXPECT_EQ(p.values(), q.values());
  // Fresh state loads into an optimizer that has stepped: its state is replaced.
  optim::Adam fresh(q.named(), {.lr = 0.05});
  opt.load_state(fresh.state());
  EXPECT_FALSE(opt.state().contains("a.step"));
}

// ---- schedules ----

void expect_schedule(optim::LRScheduler& s, Optimizer& opt, const std::vector<double>& want,
                     const char* what) {
  for (size_t k = 0; k < want.size(); ++k) {
    if (k > 0) s.step();
    EXPECT_EQ(s.last_epoch(), static_cast<int64_t>(k)) << what;
    EXPECT_NEAR(s.lr(), want[k], 1e-12 * (std::abs(want[k]) + 1e-3)) << what << " epoch " << k;
    EXPECT_EQ(opt.lr(), s.lr()) << what;
  }
}

TEST(Schedules, MatchPyTorch) {
  Tensor w = Tensor({1.0, 2.0}).requires_grad_();
  {
    optim::SGD opt({{"w", &w}}, {.lr = 0.1});
    optim::StepLR s(opt, 3, 0.5);
    expect_schedule(s, opt, kStepLR, "StepLR");
  }
  {
    optim::SGD opt({{"w", &w}}, {.lr = 0.1});
    optim::CosineAnnealingLR s(opt, 5, 0.001);
    expect_schedule(s, opt, kCosine, "CosineAnnealingLR");
  }
  {
    optim::SGD opt({{"w", &w}}, {.lr = 0.1});
    optim::LinearLR s(opt, 0.25, 1.0, 4);
    expect_schedule(s, opt, kLinearLR, "LinearLR");
  }
}

TEST(Schedules, OneCycleMatchesPyTorchWithMomentum) {
  Tensor w = Tensor({1.0, 2.0}).requires_grad_();
  {
    optim::SGD opt({{"w", &w}}, {.lr = 0.1, .momentum = 0.9});
    optim::OneCycleLR s(opt, 0.1, 10);
    for (size_t k = 0; k < kOneCycle.size(); ++k) {
      if (k > 0) s.step();
      EXPECT_NEAR(s.lr(), kOneCycle[k], 1e-12 * kOneCycle[k]) << k;
      EXPECT_NEAR(opt.options().momentum, kOneCycleMomentum[k], 1e-12) << k;
    }
    EXPECT_CRISP_ERROR(s.step(), "stepped 11 times, but total_steps is 10");
  }
  {
    optim::Adam opt({{"w", &w}}, {.lr = 0.1});
    optim::OneCycleLR s(opt, 0.02, 12,
                        {.pct_start = 0.25,
                         .anneal = optim::Anneal::linear,
                         .div_factor = 10,
                         .final_div_factor = 100,
                         .three_phase = true});
    for (size_t k = 0; k < kOneCycleThree.size(); ++k) {
      if (k > 0) s.step();
      EXPECT_NEAR(s.lr(), kOneCycleThree[k], 1e-14) << k;
      EXPECT_NEAR(opt.options().beta1, kOneCycleThreeMomentum[k], 1e-12) << k;
    }
  }
}

TEST(Schedules, ResumeFromState) {
  Tensor w1 = Tensor({1.0, 2.0}).requires_grad_(), w2 = Tensor({1.0, 2.0}).requires_grad_();
  optim::SGD o1({{"w", &w1}}, {.lr = 0.1, .momentum = 0.9});
  optim::OneCycleLR s1(o1, 0.1, 10);
  for (int k = 0; k < 4; ++k) s1.step();
  optim::SGD o2({{"w", &w2}}, {.lr = 0.1, .momentum = 0.9});
  optim::OneCycleLR s2(o2, 0.1, 10);
  o2.load_state(through_host(o1.state()));
  s2.load_state(through_host(s1.state()));
  EXPECT_EQ(s2.last_epoch(), 4);
  EXPECT_EQ(o2.lr(), o1.lr());
  for (int k = 4; k < 10; ++k) {
    s1.step();
    s2.step();
    EXPECT_EQ(s1.lr(), s2.lr());
    EXPECT_EQ(o1.options().momentum, o2.options().momentum);
  }
  State bad = s1.state();
  bad.set("extra", scalar(1.0, f64));
  EXPECT_CRISP_ERROR(s2.load_state(bad), "unexpected entry 'extra'");
  EXPECT_CRISP_ERROR(optim::StepLR(o2, 0), "step_size must be > 0");
  EXPECT_CRISP_ERROR(optim::OneCycleLR(o2, 0.1, 100, {.pct_start = 0.01}), "phase 0");
}

}  // namespace
}  // namespace crisp
