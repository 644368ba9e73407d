"""NT3xx: the optimizer and the loss — divergence, spikes, gradients blocked by clipping."""

from nantrap.findings import Category, Severity
from nantrap.traps import trap

trap(
    code="NT301",
    name="learning-rate-divergence",
    category=Category.DIVERGENCE,
    severity=Severity.ERROR,
    title="the update blew the weights up: the learning rate is too high",
    summary="""
The seed's "Nan in summary histogram for: weight_1". The forward pass was finite, but
the optimizer's update made the weights inf/NaN, or grew them until the next step
overflowed. The history shows it coming: the update-to-weight ratio and the gradient
norm grow step after step while the loss rises.""",
    mechanism="""
A healthy update changes a weight by about 1e-3 of its size per step. Above ~1e-1 the
step overshoots the minimum, the loss and gradient grow, and each step's overshoot is
larger than the last: geometric growth that reaches float32's max (3.4e38) in a few
dozen steps.""",
    fix="""
Lower the learning rate (nantrap says by how much from the update-to-weight ratio), add
warm-up, clip the gradient norm (clip_grad_norm_), or use an adaptive optimizer.
nantrap's rollback policy restores the last good state and multiplies the LR by
lr_decay.""",
    bad="""
opt = torch.optim.SGD(model.parameters(), lr=5.0)""",
    good="""
opt = torch.optim.SGD(model.parameters(), lr=0.05)
torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # before opt.step()""",
    examples={
        "tensorflow": (
            "train_step = tf.train.GradientDescentOptimizer(5.0).minimize(loss)",
            "train_step = tf.train.GradientDescentOptimizer(0.05).minimize(loss)",
        )
    },
    references=("The NaN traps in TensorFlow (seed post), section 2",),
)

trap(
    code="NT302",
    name="loss-spike",
    category=Category.DIVERGENCE,
    severity=Severity.WARNING,
    title="the loss jumped far above its running statistics",
    summary="""
A finite loss many standard deviations above its recent mean: often the step before
a NaN (a bad batch, an LR warm-up ending, an fp16 overflow building up).""",
    mechanism="""
nantrap keeps an exponential moving mean and variance of the loss (about the last 50
steps); a step whose loss is more than 6 standard deviations and 2x above the mean is a
spike. A spike that repeats within a few steps usually precedes a NaN.""",
    fix="""
Look at the batch (nantrap writes it to the repro bundle); lower the LR or clip the
gradient norm if spikes repeat.""",
    bad="""
loss.backward(); opt.step()  # spikes go unnoticed until the NaN""",
    good="""
opt = nantrap.torch.guard(opt, model, policy="skip")  # spikes and NaNs are reported""",
)

trap(
    code="NT303",
    name="gradient-blocked-by-clip",
    category=Category.CLIP_TRAP,
    severity=Severity.WARNING,
    title="a clamp on the path to the loss is active: its elements get zero gradient",
    summary="""
A clamp/clip between the model and the loss is cutting off a share of its input. The
loss counts those elements, but their gradient is exactly 0: that part of the loss is
not being optimized (the seed's fake loss, wherever the clip sits).""",
    mechanism="""
d clamp(x, a, b)/dx = 0 outside [a, b]. When the clipped share is large or growing, the
model is being trained on the rest only.""",
    fix="""
Remove the clip from the loss path; use a loss on logits or a smooth bound (tanh
scaling, softplus) whose gradient never vanishes entirely.""",
    bad="""
pred = model(x).clamp(0.0, 1.0)
loss = torch.nn.functional.mse_loss(pred, y)""",
    good="""
pred = torch.sigmoid(model(x))
loss = torch.nn.functional.mse_loss(pred, y)""",
)
