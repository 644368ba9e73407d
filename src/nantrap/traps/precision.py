"""NT2xx: what float formats do to values — saturation, half-precision range, epsilons."""

from nantrap.findings import Category, Severity
from nantrap.traps import trap

trap(
    code="NT201",
    name="half-precision-overflow",
    category=Category.PRECISION,
    severity=Severity.ERROR,
    title="a value exceeds float16's range (65504) or underflows it",
    summary="""
The same model that trains in float32 overflows in float16: activations, logits or
loss values above 65504 become inf; gradients below 6e-8 become 0.""",
    mechanism="""
float16 has 5 exponent bits: max 65504, smallest normal 6.1e-5, smallest subnormal
6e-8. exp overflows above 11.09. bfloat16 keeps float32's range but only 8 bits of
mantissa (spacing 0.0078 near 1).""",
    fix="""
Use torch.autocast (which keeps softmax, sums and losses in float32) with a GradScaler,
or bfloat16 instead of float16; do not cast the whole model with .half().""",
    bad="""
model = model.half()
loss = loss_fn(model(x.half()), y)""",
    good="""
scaler = torch.amp.GradScaler()
with torch.autocast(device_type="cuda", dtype=torch.float16):
    loss = loss_fn(model(x), y)
scaler.scale(loss).backward()""",
)

trap(
    code="NT202",
    name="epsilon-below-dtype-resolution",
    category=Category.PRECISION,
    severity=Severity.WARNING,
    title="an eps (in a norm layer, Adam or a divisor) below what the dtype can represent",
    summary="""
eps=1e-8 in float16 is 0 (below its smallest subnormal 6e-8); var + eps then leaves the
division or rsqrt unprotected.""",
    mechanism="""
float16 rounds anything below 6e-8 to 0 and anything below 6.1e-5 to a subnormal with
few bits. Adam's default eps=1e-8 and LayerNorm's 1e-5 are chosen for float32.""",
    fix="""
Use eps >= 1e-4 for float16 divisors (Adam: eps=1e-4 when states are float16), or keep
the operation in float32 (autocast does for layer_norm).""",
    bad="""
opt = torch.optim.Adam(model.half().parameters(), eps=1e-8)""",
    good="""
opt = torch.optim.Adam(model.parameters(), eps=1e-8)  # float32 master weights + autocast""",
)

trap(
    code="NT203",
    name="activation-saturation",
    category=Category.SATURATION,
    severity=Severity.WARNING,
    title="sigmoid / tanh outputs at exactly 0 or 1 (±1) in their dtype",
    summary="""
A saturated unit has zero gradient and, downstream, turns log(p) or log(1 - p) into
log(0). The seed: "in float arithmetic sigmoid returns exactly 0 or 1 for large |x|, so
you must know roughly the output range of every layer".""",
    mechanism="""
float32: sigmoid(x) == 1.0 for x > 16.64, == 0.0 for x < -88.72; tanh(x) == ±1.0 for
|x| > 9.01. float16: sigmoid(x) == 1.0 for x > 7.62. Pre-activations grow when the
learning rate is too high or inputs are not normalized.""",
    fix="""
Keep the logits and use the fused op downstream (logsigmoid, *_with_logits losses);
normalize inputs and pre-activations; lower the learning rate if pre-activations grow.""",
    bad="""
p = torch.sigmoid(self.fc(h))      # fc outputs reach 20 -> p == 1.0
loss = -torch.log(1 - p[y == 0]).mean()""",
    good="""
z = self.fc(h)
loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y.float())""",
)

trap(
    code="NT204",
    name="softmax-underflow",
    category=Category.SATURATION,
    severity=Severity.WARNING,
    title="softmax outputs at exactly 0 (and 1): the probabilities lost their tail",
    summary="""
Once a logit trails the row's max by more than ~104 (float32), its softmax output is
exactly 0.0; a log of it is -inf, and that class gets no gradient through the
probability.""",
    mechanism="""
exp(z) is exactly 0 for z < -103.97 in float32 and z < -17.33 in float16; softmax
subtracts the max first, so the gap between logits is what counts.""",
    fix="""
Work in log space (log_softmax, cross_entropy on logits). If logits grow without bound,
add a temperature, label smoothing or weight decay, or lower the learning rate.""",
    bad="""
p = torch.softmax(logits, -1)
nll = -torch.log(p.gather(1, y[:, None]))""",
    good="""
nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")""",
)
