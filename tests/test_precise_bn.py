import torch
from torch import nn

from featherface.train.precise_bn import recompute_bn_stats


def test_running_stats_become_the_batch_average_and_weights_are_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.01))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(2, 3, 8, 8) * 3 + 1 for _ in range(5)]
    assert recompute_bn_stats(model, batches) == 5
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert model[1].momentum == 0.01 and not model.training
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v)


def test_max_batches_limits_the_passes():
    model = nn.Sequential(nn.BatchNorm2d(3))
    assert recompute_bn_stats(model, (torch.randn(1, 3, 4, 4) for _ in range(10)), max_batches=3) == 3
