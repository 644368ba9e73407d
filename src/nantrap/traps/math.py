"""NT1xx: unsafe maths — an op leaves its domain or overflows."""

from nantrap.findings import Category, Severity
from nantrap.traps import trap

trap(
    code="NT101",
    name="log-of-probability",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="log of a softmax or sigmoid output, which reaches exactly 0 in float",
    summary="""
The input of log is a probability from softmax or sigmoid. Mathematically it is > 0; in
float it underflows to exactly 0 for confident predictions, log returns -inf, and the
gradient 1/0 = inf times 0 gives NaN in every weight upstream. Only the step it happens
at is unknown.""",
    mechanism="""
softmax(x)_i = exp(x_i - max(x)) / sum(...). In float32 exp(z) is exactly 0 for
z < -103.97 (float16: z < -17.33), so any logit gap above ~104 gives p_i == 0.0.
sigmoid(x) is exactly 0.0 for x < -88.72 in float32 and exactly 1.0 for x > 16.64,
so log(sigmoid(x)) and log(1 - sigmoid(x)) reach log(0) = -inf.""",
    fix="""
Never take log of a probability. Keep logits and use the fused, stable op:
log_softmax / logsigmoid, or the loss on logits (cross_entropy,
binary_cross_entropy_with_logits). Do not clip the probability (see NT102).""",
    bad="""
p = torch.softmax(logits, dim=-1)
loss = -(y_onehot * torch.log(p)).sum(dim=-1).mean()""",
    good="""
loss = torch.nn.functional.cross_entropy(logits, y)
# or: logp = torch.log_softmax(logits, dim=-1)""",
    examples={
        "tensorflow": (
            "y = tf.nn.softmax(logits)\ncross_entropy = -tf.reduce_sum(y_ * tf.log(y))",
            "cross_entropy = tf.reduce_mean(\n"
            "    tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=logits))",
        )
    },
    references=("The NaN traps in TensorFlow (seed post), section 1",),
)

trap(
    code="NT102",
    name="clip-before-log",
    category=Category.CLIP_TRAP,
    severity=Severity.WARNING,
    title="log of a clipped probability: the loss is fake where the clip is active",
    summary="""
The usual "fix" for NaN, log(clip(p, 1e-8, 1)), stops the NaN but makes a fake loss.
Wherever p was clipped, the clip's gradient is exactly 0, so that element's loss
(-log(1e-8) = 18.4) is a constant: it shows up in the loss value but no gradient
flows back. The loss keeps moving, accuracy stalls, and nothing says why.""",
    mechanism="""
d clip(p, a, b)/dp = 0 for p < a or p > b. The examples that are most wrong (p below
1e-8 for the true class) are exactly the clipped ones, so the optimizer stops correcting
the worst mistakes. clip(y, 1e-8, reduce_max(y)) does the same on both ends.""",
    fix="""
Remove the clip and compute the loss from logits (cross_entropy / log_softmax /
binary_cross_entropy_with_logits). If probabilities are all you have, the gradient
still must flow: use log(p + eps) with an eps the dtype keeps (>= 1e-7 in float32),
knowing it biases the loss.""",
    bad="""
p = torch.softmax(logits, dim=-1)
loss = -(y_onehot * torch.log(torch.clamp(p, 1e-8, 1.0))).sum(-1).mean()""",
    good="""
loss = torch.nn.functional.cross_entropy(logits, y)""",
    examples={
        "tensorflow": (
            "cross_entropy = -tf.reduce_sum(y_ * tf.log(tf.clip_by_value(y, 1e-8, 1.0)))",
            "cross_entropy = tf.reduce_mean(\n"
            "    tf.nn.softmax_cross_entropy_with_logits(labels=y_, logits=logits))",
        )
    },
    references=("The NaN traps in TensorFlow (seed post), section 1",),
)

trap(
    code="NT103",
    name="log-of-nonpositive",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="log of a value that can be 0 or negative",
    summary="""
log(x) is -inf at x = 0 and NaN for x < 0. Sums, differences, counts, norms and
ReLU outputs can all be exactly 0.""",
    mechanism="""
log(0) = -inf; its gradient 1/x = inf, and inf * 0 = NaN in the backward pass.
log1p(x) has the same problem at x = -1.""",
    fix="""
Make the argument positive by construction: softplus(z) + eps, exp of a log-parameter,
or the log-space op (log_softmax, logsigmoid, logsumexp). Add an eps only if the dtype
keeps it (NT107).""",
    bad="""
scale = torch.relu(h).mean(dim=-1)
loss = -torch.log(scale).mean()""",
    good="""
scale = torch.nn.functional.softplus(h).mean(dim=-1) + 1e-6
loss = -torch.log(scale).mean()""",
)

trap(
    code="NT104",
    name="log-of-sigmoid",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="log(sigmoid(x)) or log(1 - sigmoid(x)) instead of logsigmoid",
    summary="""
sigmoid saturates to exactly 1.0 in float32 for x > 16.64 and to 0.0 for x < -88.72;
log(1 - sigmoid(x)) is then log(0) = -inf.""",
    mechanism="""
1 + exp(-x) rounds to 1 once exp(-x) < 2**-24 (x > 16.64 in float32, x > 7.62 in
float16), so sigmoid(x) == 1.0 and 1 - sigmoid(x) == 0.0. logsigmoid(x) =
-softplus(-x) is exact there.""",
    fix="""
log(sigmoid(x)) -> logsigmoid(x); log(1 - sigmoid(x)) -> logsigmoid(-x). For a binary
loss use binary_cross_entropy_with_logits.""",
    bad="""
p = torch.sigmoid(z)
loss = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()""",
    good="""
loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)""",
)

trap(
    code="NT105",
    name="hand-written-cross-entropy",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="cross-entropy written by hand from probabilities",
    summary="""
-sum(y * log(p)) on a softmax output is the seed's NaN: p underflows to 0 for a
confident wrong prediction and the loss becomes inf, its gradient NaN.""",
    mechanism="""
The fused losses compute log_softmax as x - logsumexp(x), which never takes log of a
number that rounded to 0. The hand-written form does.""",
    fix="""
Use the framework's loss on logits: F.cross_entropy(logits, y) (class indices or
probabilities as targets), tf.nn.softmax_cross_entropy_with_logits, or
keras.losses.CategoricalCrossentropy(from_logits=True).""",
    bad="""
loss = -(y_onehot * torch.log(torch.softmax(logits, -1))).sum(-1).mean()""",
    good="""
loss = torch.nn.functional.cross_entropy(logits, y_onehot)""",
)

trap(
    code="NT106",
    name="bce-on-probabilities",
    category=Category.DOMAIN,
    severity=Severity.WARNING,
    title="binary cross-entropy on sigmoid outputs instead of logits",
    summary="""
binary_cross_entropy(sigmoid(z), y) takes log of a sigmoid output; PyTorch clamps the
log at -100 to hide the inf, which makes the same fake loss as NT102 for saturated
elements. Under autocast it is refused outright as unsafe.""",
    mechanism="""
sigmoid(z) == 1.0 for z > 16.64 in float32; log(1 - 1.0) = -inf is clamped to -100,
whose gradient is 0.""",
    fix="""
binary_cross_entropy_with_logits(z, y) (BCEWithLogitsLoss), or Keras
BinaryCrossentropy(from_logits=True) on a layer without the sigmoid activation.""",
    bad="""
loss = torch.nn.functional.binary_cross_entropy(torch.sigmoid(z), y)""",
    good="""
loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)""",
)

trap(
    code="NT107",
    name="epsilon-absorbed",
    category=Category.PRECISION,
    severity=Severity.WARNING,
    title="an epsilon too small for the dtype: x + eps == x, so log(x + eps) still hits log(0)",
    summary="""
Adding eps protects log/div/sqrt only if the sum is not rounded back. 1e-10 added to
1.0 in float32 is 1.0, so log(1 + 1e-10 - p) is still log(0) when p == 1.0, and
clamp(p, 1e-10, 1 - 1e-10) does not keep p below 1.0 (1 - 1e-10 rounds to 1.0).
(Order matters: (1 - p) + 1e-10 keeps the eps, because 1 - p is already small.)""",
    mechanism="""
float32 keeps 24 bits: near 1.0 its spacing is 1.19e-7, so anything below 5.96e-8 is
absorbed. float16 spacing near 1 is 9.77e-4; bfloat16's is 7.81e-3.""",
    fix="""
Use the stable op (logsigmoid(-z) for log(1 - sigmoid(z))). If an eps must stay,
pick one the dtype keeps at the value's scale (>= 1e-7 near 1.0 in float32, >= 1e-3 in
float16), e.g. torch.finfo(x.dtype).eps.""",
    bad="""
p = torch.sigmoid(z).clamp(1e-10, 1 - 1e-10)  # 1 - 1e-10 == 1.0 in float32
loss = -torch.log(1 - p).mean()""",
    good="""
loss = -torch.nn.functional.logsigmoid(-z).mean()""",
)

trap(
    code="NT110",
    name="division-by-possible-zero",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="division by a sum, norm, std, count or difference that can be 0",
    summary="""
x / s is inf or NaN (0/0) where s == 0; the backward pass divides by s**2 and
spreads NaN to every weight.""",
    mechanism="""
A norm of an all-zero vector, the std of a constant row, a count of an empty mask and a
difference of equal values are all exactly 0 in float, not just small.""",
    fix="""
Divide by s.clamp_min(eps) or (s + eps) with an eps the dtype keeps; use
F.normalize(x, eps=...) for unit vectors; guard empty masks.""",
    bad="""
w = x / x.norm(dim=-1, keepdim=True)""",
    good="""
w = torch.nn.functional.normalize(x, dim=-1, eps=1e-6)""",
)

trap(
    code="NT111",
    name="sqrt-gradient-at-zero",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="sqrt / norm of a value that can be exactly 0, on a gradient path",
    summary="""
The forward pass is fine (sqrt(0) = 0), but the backward pass computes 1/(2*sqrt(0)) =
inf, and inf * 0 = NaN. A hand-written distance between identical points, or the norm of
a zero vector, poisons the gradients with NaN while the loss looks finite.""",
    mechanism="""
d sqrt(x)/dx = 1/(2 sqrt(x)) is inf at 0; d ||x||/dx = x/||x|| is 0/0. autograd's
detect_anomaly blames PowBackward0 / MulBackward0, not the sqrt.""",
    fix="""
sqrt(x + eps) or sqrt(x.clamp_min(eps)) with eps >= 1e-12 in float32 (>= 1e-6 near
unit scale); for distances use torch.cdist or (d2 + eps).sqrt().""",
    bad="""
dist = torch.sqrt(((a - b) ** 2).sum(dim=-1))""",
    good="""
dist = torch.sqrt(((a - b) ** 2).sum(dim=-1) + 1e-12)""",
)

trap(
    code="NT112",
    name="sqrt-of-negative",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="sqrt / rsqrt of a value that can be negative (or rsqrt of 0)",
    summary="""
sqrt(x) is NaN for x < 0; rsqrt(0) = inf. A variance computed as E[x^2] - E[x]^2 can
come out slightly negative from rounding.""",
    mechanism="""
E[x^2] - E[x]^2 cancels catastrophically: for values around 1e3 in float32 the
difference carries an error of ~1e-1, enough to go below 0.""",
    fix="""
Use the two-pass var (torch.var), clamp the argument at 0 (or eps for rsqrt) before the
root.""",
    bad="""
std = torch.sqrt((x ** 2).mean(0) - x.mean(0) ** 2)""",
    good="""
std = torch.sqrt(x.var(0, unbiased=False) + 1e-5)""",
)

trap(
    code="NT113",
    name="exp-overflow",
    category=Category.OVERFLOW,
    severity=Severity.ERROR,
    title="exp (or cosh, sinh, expm1) of an unbounded value overflows",
    summary="""
exp(x) is inf for x > 88.72 in float32 and bfloat16, and for x > 11.09 in float16;
inf / inf and inf - inf then give NaN.""",
    mechanism="""
float32 max is 3.40e38 = exp(88.72); float16 max is 65504 = exp(11.09). A logit, an
energy or a log-variance that grows during training crosses that line silently.""",
    fix="""
Use the log-space op: logsumexp, log_softmax, softplus (= log(1 + exp(x))). If exp is
needed, subtract the max first or clamp x (e.g. log-variance to [-30, 20]).""",
    bad="""
probs = torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True)""",
    good="""
probs = torch.softmax(scores, dim=-1)""",
)

trap(
    code="NT114",
    name="inverse-trig-domain",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="acos / asin of a value that can leave [-1, 1]; atanh at ±1",
    summary="""
The cosine of two unit vectors computed in float can be 1.0000001; acos is then NaN.
At exactly ±1 the gradient of acos/asin/atanh is infinite.""",
    mechanism="""
Rounding in a dot product of normalized vectors gives |cos| up to ~1 + 1e-7 in float32.
d acos(x)/dx = -1/sqrt(1 - x^2) is inf at ±1.""",
    fix="""
acos(x.clamp(-1 + 1e-7, 1 - 1e-7)), or use atan2(|cross|, dot) for angles.""",
    bad="""
angle = torch.acos((u * v).sum(-1))""",
    good="""
angle = torch.acos((u * v).sum(-1).clamp(-1 + 1e-7, 1 - 1e-7))""",
)

trap(
    code="NT115",
    name="fractional-pow-of-negative",
    category=Category.DOMAIN,
    severity=Severity.ERROR,
    title="x ** p with fractional p on a value that can be negative (or 0 on a gradient path)",
    summary="""
(-0.5) ** 0.5 is NaN; 0 ** 0.5 is fine forward but its gradient 0.5 * 0 ** -0.5 = inf.""",
    mechanism="""
Real powers are only defined for x >= 0 when p is not an integer; the derivative
p * x ** (p - 1) is infinite at 0 when p < 1.""",
    fix="""
Clamp the base (x.clamp_min(eps) ** p) or use x.abs() ** p * sign(x) when the sign
matters.""",
    bad="""
y = (x - x.mean()) ** 0.5""",
    good="""
y = (x - x.mean()).clamp_min(1e-6) ** 0.5""",
)

trap(
    code="NT116",
    name="accumulation-overflow",
    category=Category.OVERFLOW,
    severity=Severity.ERROR,
    title="a matmul, sum or square whose result passes the dtype's max",
    summary="""
Finite inputs, infinite output: a dot product or sum of large values overflows. In
float16 the limit is 65504, reached by a 256-wide dot product of values around 16.""",
    mechanism="""
float16 max is 65504; float32 and bfloat16 max is 3.4e38. Growing activations (no
normalization, a learning rate too high) get there first in the widest reduction.""",
    fix="""
Normalize activations (LayerNorm), scale before the reduction (attention's 1/sqrt(d)),
compute the reduction in float32 (autocast does this for sums), or lower the LR.""",
    bad="""
with torch.autocast("cuda", dtype=torch.float16):
    scores = q @ k.transpose(-1, -2)  # no 1/sqrt(d)""",
    good="""
scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5""",
)
