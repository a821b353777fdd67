"""
A mixture-of-experts layer inside a PyTorch network
===================================================

Needs the ``torch`` extra (``pip install "moelearn[torch]"``).

A fixed feature map (a random linear layer, as if from a pre-trained trunk)
feeds a moelearn MoE layer.  The layer is trained first by the two consistent
losses (experts by the landscape loss L_4, gating by L_log) and then
fine-tuned on the likelihood; for comparison, the same layer is also trained
directly on the likelihood from a random start.
"""

import torch
from torch import nn

from moelearn import make_moe, parameter_errors, sample
from moelearn.torch import MoE, train_two_stage

torch.manual_seed(0)
torch.set_num_threads(1)  # small tensors: one thread is as fast, and never oversubscribes
d_in, d_feat, k = 12, 8, 3

# data: y is a 3-expert MoE of an 8-dimensional Gaussian feature vector
truth = make_moe(d_feat, k, noise_std=0.2, random_state=1)
feats, y = sample(truth, 100_000, random_state=2)
trunk = nn.Linear(d_in, d_feat, bias=False).double()
with torch.no_grad():  # an invertible trunk that maps the inputs to those features
    W = torch.linalg.qr(torch.randn(d_in, d_in, dtype=torch.float64))[0][:d_feat]
    trunk.weight.copy_(W)
x = torch.as_tensor(feats, dtype=torch.float64) @ W  # inputs whose features are `feats`
y = torch.as_tensor(y)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = trunk
        self.moe = MoE(d_feat, k, dtype=torch.float64)

    def forward(self, x):
        return self.moe(self.trunk(x))


net = Net()
with torch.no_grad():
    features = net.trunk(x)
history = train_two_stage(net.moe, features, y, expert_steps=300, gating_steps=300,
                          finetune_steps=500, random_state=0)
err = parameter_errors(net.moe.to_params(), truth)
with torch.no_grad():
    mse = float(((net(x) - y) ** 2).mean())
print(f"two-stage + fine-tuning: expert error {err.experts:.4f}, gating error {err.gating:.4f}, "
      f"train MSE {mse:.4f}")
print(f"  final losses: experts {history['experts'][-1]:.4f}, gating {history['gating'][-1]:.4f}, "
      f"likelihood {history['finetune'][-1]:.4f}")

# baseline: the same layer trained directly on the likelihood from a random start
baseline = MoE(d_feat, k, dtype=torch.float64)
train_two_stage(baseline, features, y, expert_steps=0, gating_steps=0, finetune_steps=1100,
                random_state=0)
err_b = parameter_errors(baseline.to_params(), truth)
print(f"likelihood only, random start: expert error {err_b.experts:.4f}, "
      f"gating error {err_b.gating:.4f}")
