"""``{"type": "dropout", "rate": 0.5}``: inverted dropout, active in training only.

In training each value is zeroed with probability ``rate`` and the survivors are scaled by
``1 / (1 - rate)``, so evaluation is the identity. The masks come from the training step's
:class:`~cnn_core.noise.StepNoise` (the job's seed and the iteration), so a resumed run draws
the same masks.
"""

from dataclasses import dataclass

from .. import functional as F
from .base import FieldSpec, Layer, Plan


@dataclass(frozen=True, kw_only=True)
class DropoutPlan(Plan):
    rate: float


class Dropout(Layer):
    """Zero a random fraction ``rate`` of the values in training; identity in evaluation."""

    type = "dropout"
    fields = (
        FieldSpec(
            "rate",
            "number",
            "Probability of zeroing each value in training.",
            default=0.5,
            minimum=0,
            maximum=1,
            exclusive_maximum=True,
        ),
    )

    @classmethod
    def plan(cls, index, values, input_shape):
        return cls.make_plan(DropoutPlan, index, input_shape, input_shape, rate=values["rate"])

    @classmethod
    def normalized(cls, plan, spec):
        return {"type": cls.type, "rate": plan.rate}

    def forward(self, x, train):
        if not train or self.plan.rate == 0:
            if train:
                self.cache = None
            return x
        rng = self.noise.rng(self.plan.index + 1)
        mask = F.dropout_mask(rng, self.plan.rate, x.shape[:-1], self.noise.rows, x.dtype)
        self.cache = mask
        return x * mask

    def backward(self, dout):
        mask, self.cache = self.cache, None
        return dout if mask is None else dout * mask
