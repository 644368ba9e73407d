"""NT4xx: data and state — non-finite inputs, targets out of range, corrupted weights."""

from nantrap.findings import Category, Severity
from nantrap.traps import trap

trap(
    code="NT401",
    name="non-finite-input",
    category=Category.BAD_DATA,
    severity=Severity.ERROR,
    title="the batch itself contains NaN or Inf",
    summary="""
The model's input (or target) already holds NaN/Inf: a missing value, a division in
preprocessing, a corrupt record. Every output it touches becomes NaN.""",
    mechanism="""
NaN propagates through every arithmetic op (NaN * 0 is NaN): one NaN pixel in a 3x3
convolution makes 9 outputs of every channel NaN, the loss NaN, and the gradient NaN in
every weight it reaches.""",
    fix="""
Find the record (nantrap writes the batch to the repro bundle), fix the preprocessing
(fill missing values, guard divisions), and validate data once with torch.isfinite.""",
    bad="""
x = (x - x.mean()) / x.std()  # std == 0 for a constant image -> NaN input""",
    good="""
x = (x - x.mean()) / (x.std() + 1e-6)""",
)

trap(
    code="NT402",
    name="target-out-of-range",
    category=Category.BAD_DATA,
    severity=Severity.ERROR,
    title="targets outside the loss's range (BCE target not in [0, 1], class index too big)",
    summary="""
binary_cross_entropy with a target of 2 or -1 gives a loss that can be negative and
unbounded below; a log-likelihood target outside the support gives -inf.""",
    mechanism="""
BCE = -(y log p + (1 - y) log(1 - p)); for y > 1 the second term rewards p -> 1 without
bound, so the logits grow until they overflow.""",
    fix="""
Check target ranges in the data pipeline; map labels to [0, 1] (BCE) or [0, C) (CE).""",
    bad="""
loss = F.binary_cross_entropy_with_logits(z, labels)  # labels in {0, 1, 2}""",
    good="""
loss = F.cross_entropy(logits, labels)  # three classes: a 3-way softmax""",
)

trap(
    code="NT403",
    name="non-finite-parameter",
    category=Category.BAD_DATA,
    severity=Severity.ERROR,
    title="a parameter or buffer was already NaN/Inf before the step",
    summary="""
The step started from a corrupted state: a checkpoint with NaN weights, a BatchNorm
running_var that became inf, or a weight written outside the optimizer.""",
    mechanism="""
Non-finite state propagates into every forward pass that touches it: 1 NaN in a
BatchNorm running_var makes that channel NaN for every sample in eval mode, and one NaN
embedding row poisons every sequence that contains its token. Each op did what it was told.""",
    fix="""
Restore a finite checkpoint (nantrap's rollback does this), find where the state was
written (a manual .data edit, a corrupted file), and check BatchNorm momentum/eps.""",
    bad="""
model.load_state_dict(torch.load("ckpt.pt"))  # saved after the run diverged""",
    good="""
state = torch.load("ckpt.pt")
assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())""",
)
