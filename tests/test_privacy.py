"""DP training through Opacus: the accountant's epsilon meets the target and the model learns."""
import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("opacus")


def test_dp_training_meets_its_epsilon_and_learns_and_can_be_unlearned(digits):
    from erasus import ErasusUnlearner
    from erasus.models.zoo import mlp
    from erasus.privacy import train_dp

    split = digits.split("class", forget_class=3)
    torch.manual_seed(0)
    loader = DataLoader(split.dataset.dataset, batch_size=64, shuffle=True)
    res = train_dp(mlp(64, 64, 10), loader, target_epsilon=4.0, epochs=15, lr=0.5)
    assert 0 < res.epsilon <= 4.0 + 1e-6 and res.noise_multiplier > 0.3
    x, y = digits.test.tensors if hasattr(digits.test, "tensors") else next(iter(DataLoader(digits.test, 10_000)))
    acc = (res.model(x).argmax(1) == y).float().mean()
    assert acc > 0.75, acc  # DP costs accuracy, but the model learns
    assert not any("opacus" in type(m).__module__ for m in res.model.modules())  # a plain module comes back
    out = ErasusUnlearner(res.model, strategy="negative_gradient").fit(split.forget, split.retain, split.holdout,
                                                                      progress=False)
    fx, fy = next(iter(DataLoader(split.forget.dataset, 10_000)))
    assert (out.model(fx).argmax(1) == fy).float().mean() < 0.2
