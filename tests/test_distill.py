"""Distillation: KD = 0 for identical outputs, batch-size invariance, adapters trained but never saved as weights,
one augmentation shared by teacher and student, frozen strict teacher, student backbone from the teacher."""

from __future__ import annotations

import copy

import pytest
import torch

from featherface.checkpoint import load_model, read_checkpoint
from featherface.errors import CheckpointError
from featherface.models import DetectionOutput, build_model
from featherface.train.config import apply_overrides
from featherface.train.distill import DistillationLoss, combine, informative_anchors, prepare_teacher
from featherface.train.trainer import Trainer, train

from helpers import TEACHER, needs_teacher, save_random_upstream_teacher
from test_trainer import make_tiny_dataset, tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_kd"))


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory):
    return save_random_upstream_teacher(tmp_path_factory.mktemp("teacher"), seed=3)


def _outputs(b: int, a: int, seed: int) -> DetectionOutput:
    g = torch.Generator().manual_seed(seed)
    # mostly background, as real detector scores are (a few percent of anchors above 0.5)
    logits = 2 * torch.randn(b, a, 2, generator=g) + torch.tensor([3.0, -3.0])
    return DetectionOutput(torch.randn(b, a, 4, generator=g), logits,
                           torch.randn(b, a, 10, generator=g))


def _feats(b: int, c: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, s, s, generator=g) for s in (8, 4, 2)]


def _gt_positive(b: int, a: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, a, generator=g) < 0.05


def test_kd_is_zero_when_student_equals_teacher():
    loss = DistillationLoss(student_channels=64, teacher_channels=64)
    out = _outputs(2, 300, 0)
    feats = _feats(2, 64, 1)
    d = loss(out, feats, out, feats, _gt_positive(2, 300, 2))
    assert d["kd_anchors"] > 0
    assert float(d["kd_cls"]) == pytest.approx(0.0, abs=1e-7)
    assert float(d["kd_box"]) == 0.0 and float(d["kd_landmark"]) == 0.0
    assert float(d["kd"]) == pytest.approx(0.0, abs=1e-7)
    # the feature term is zero once the adapters are the identity
    with torch.no_grad():
        for ad in loss.adapters:
            ad.weight.copy_(torch.eye(64).view(64, 64, 1, 1))
            ad.bias.zero_()
    assert float(loss(out, feats, out, feats, _gt_positive(2, 300, 2))["feature"].detach()) == pytest.approx(0.0, abs=1e-10)
    # and it is positive when they differ
    other = _outputs(2, 300, 5)
    assert float(loss(other, feats, out, feats, _gt_positive(2, 300, 2))["kd"]) > 0.01


def test_kd_does_not_depend_on_batch_size():
    torch.manual_seed(0)
    loss = DistillationLoss(student_channels=32, teacher_channels=64)
    s, t = _outputs(3, 400, 10), _outputs(3, 400, 11)
    sf, tf = _feats(3, 32, 12), _feats(3, 64, 13)
    gt = _gt_positive(3, 400, 14)
    one = loss(s, sf, t, tf, gt)

    def rep(x, k=4):
        return torch.cat([x] * k)

    s4 = DetectionOutput(*(rep(x) for x in s))
    t4 = DetectionOutput(*(rep(x) for x in t))
    four = loss(s4, [rep(f) for f in sf], t4, [rep(f) for f in tf], rep(gt))
    for key in ("kd", "kd_cls", "kd_box", "kd_landmark", "feature"):
        assert float(four[key].detach()) == pytest.approx(float(one[key].detach()), rel=1e-5, abs=1e-8), key
    assert int(four["kd_anchors"]) == 4 * int(one["kd_anchors"])


def test_kl_matches_its_definition_and_scales_with_t_squared():
    loss = DistillationLoss(temperature=4.0)
    s, t = _outputs(2, 200, 20), _outputs(2, 200, 21)
    gt = _gt_positive(2, 200, 22)
    pos, neg, t_pos = informative_anchors(s.logits, t.logits, gt)
    mask = pos | neg
    assert bool((gt <= pos).all()) and bool((t_pos <= pos).all()) and not bool((pos & neg).any())
    # per image at most 7 negatives per positive, and only informative anchors
    assert bool((neg.sum(1) <= 7 * pos.sum(1)).all()) and int(mask.sum()) < mask.numel()
    pt = torch.softmax(t.logits / 4, -1)
    ps = torch.softmax(s.logits / 4, -1)
    manual = (pt * (pt.log() - ps.log())).sum(-1)[mask].mean() * 16
    assert float(loss.kl(s.logits, t.logits, mask)) == pytest.approx(float(manual), rel=1e-5)
    total = combine(torch.tensor(2.0), {"kd": torch.tensor(1.0), "feature": torch.tensor(3.0)}, alpha=0.7,
                    feature_weight=0.1)
    assert float(total) == pytest.approx(0.3 * 2.0 + 0.7 * 1.0 + 0.1 * 3.0)


def _kd_config(tmp, tiny, teacher, name, **over):
    return tiny_config(tmp, tiny, name, **{"distill.teacher": str(teacher), "epochs": 1, **over})


def test_adapters_get_gradients_and_are_not_saved_as_weights(tmp_path, tiny, random_teacher):
    cfg = _kd_config(tmp_path, tiny, random_teacher, "kd", **{"data.max_images": 4})
    t = Trainer(cfg, progress=False)
    opt_params = {id(p) for g in t.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in t.distill.parameters())  # registered and optimised
    before = [p.detach().clone() for p in t.distill.parameters()]
    images, targets = next(iter(t.loader))
    from featherface.train.distill import teacher_forward

    parts = t.step_module(images, targets, t.anchors, teacher_forward(t.teacher, images))
    parts["total"].backward()
    for p in t.distill.adapters.parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert not any(p.grad is not None for p in t.teacher.parameters())
    t.optimizer.zero_grad()
    t.fit()
    after = list(t.distill.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the adapters were optimised
    ck = read_checkpoint(t.run_dir / "last.pth")
    assert not any("adapter" in k for k in ck["state_dict"])
    assert set(ck["state_dict"]) == set(build_model("featherface_v2").state_dict())
    assert any("adapters" in k for k in ck["extra"]["distill_state"])
    m = load_model(t.run_dir / "last.pth")  # inference weights load strictly, without the adapters
    assert m.model_name == "featherface_v2"


def test_teacher_sees_the_same_single_augmentation(tmp_path, tiny, random_teacher):
    cfg = _kd_config(tmp_path, tiny, random_teacher, "same_batch", **{"data.mixup_prob": 0.5, "data.cutmix_prob": 0.5})
    t = Trainer(cfg, progress=False)
    seen = {"student": [], "teacher": []}
    orig_s = t.model.forward_with_features
    orig_t = t.teacher.forward_with_features

    def s_fwd(x):
        seen["student"].append(x)
        return orig_s(x)

    def t_fwd(x):
        seen["teacher"].append(x)
        assert not torch.is_grad_enabled()  # teacher runs under no_grad
        return orig_t(x)

    t.model.forward_with_features = s_fwd
    t.teacher.forward_with_features = t_fwd
    calls = {"augment": 0}
    transform = t.base_dataset.transform

    class Counting:
        def __getattr__(self, name):
            return getattr(transform, name)

        def augment(self, sample, rng):
            calls["augment"] += 1
            return transform.augment(sample, rng)

    t.base_dataset.transform = Counting()
    teacher_state = copy.deepcopy(t.teacher.state_dict())
    t.fit()
    assert len(seen["student"]) == len(seen["teacher"]) == t.steps_per_epoch
    for a, b in zip(seen["student"], seen["teacher"]):
        assert a is b  # the very same tensor
    # one augmentation per sample (+1 for a mixed-in partner), never one per network
    assert len(t.dataset) <= calls["augment"] <= 2 * len(t.dataset)
    assert not t.teacher.training and not any(p.requires_grad for p in t.teacher.parameters())
    for k, v in t.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k  # frozen: BN statistics included


def test_augmentation_is_counted_once_per_sample_without_mixing(tmp_path, tiny, random_teacher):
    cfg = _kd_config(tmp_path, tiny, random_teacher, "once")
    t = Trainer(cfg, progress=False)
    calls = []
    transform = t.base_dataset.transform

    class Counting:
        def __getattr__(self, name):
            return getattr(transform, name)

        def augment(self, sample, rng):
            calls.append(1)
            return transform.augment(sample, rng)

    t.base_dataset.transform = Counting()
    t.fit()
    assert len(calls) == len(t.dataset)


def test_student_backbone_starts_from_teacher_and_flag_disables_it(tmp_path, tiny, random_teacher):
    t = Trainer(_kd_config(tmp_path, tiny, random_teacher, "bb"), progress=False)
    tsd = t.teacher.state_dict()
    body = [k for k in t.model.state_dict() if k.startswith("body.")]
    assert body and all(torch.equal(t.model.state_dict()[k], tsd[k]) for k in body)
    t2 = Trainer(_kd_config(tmp_path, tiny, random_teacher, "bb2", **{"distill.init_backbone": False}), progress=False)
    assert not all(torch.equal(t2.model.state_dict()[k], tsd[k]) for k in body)


def test_teacher_is_loaded_strictly(tmp_path, tiny):
    sd = build_model("featherface_v1").state_dict()
    sd.pop(next(k for k in sd if k.startswith("bifpn.")))
    bad = tmp_path / "partial_teacher.pth"
    torch.save(sd, bad)
    with pytest.raises(CheckpointError, match="missing"):
        Trainer(_kd_config(tmp_path, tiny, bad, "bad"), progress=False)
    with pytest.raises(CheckpointError, match="not found"):
        Trainer(_kd_config(tmp_path, tiny, tmp_path / "nope.pth", "nope"), progress=False)


def test_prepare_teacher_freezes():
    m = build_model("featherface_v1").train()
    prepare_teacher(m)
    assert not m.training and not any(p.requires_grad for p in m.parameters())


@needs_teacher
def test_upstream_teacher_one_epoch(tmp_path, tiny):
    cfg = _kd_config(tmp_path, tiny, TEACHER, "upstream", **{"data.max_images": 2})
    summary = train(cfg, progress=False)
    rec = summary["last"]
    assert rec["loss_kd"] > 0 and rec["loss_feature"] > 0
    teacher = load_model(TEACHER)
    ck = read_checkpoint(tmp_path / "runs" / "upstream" / "last.pth")
    assert ck["extra"]["backbone_init"].startswith("teacher")
    assert set(ck["state_dict"]) == set(build_model("featherface_v2").state_dict())
    del teacher


def test_resume_with_teacher_restores_adapters(tmp_path, tiny, random_teacher):
    cfg = apply_overrides(_kd_config(tmp_path, tiny, random_teacher, "kd_resume", **{"data.max_images": 2}),
                          {"epochs": 2})
    train(cfg, progress=False)
    ref = read_checkpoint(tmp_path / "runs" / "kd_resume" / "last.pth")
    cfg_b = apply_overrides(_kd_config(tmp_path, tiny, random_teacher, "kd_resume_b", **{"data.max_images": 2}),
                            {"epochs": 2})
    t = Trainer(cfg_b, progress=False)
    t.records.append(t.train_epoch(0))
    t.run_dir.mkdir(parents=True, exist_ok=True)
    t.save(t.run_dir / "last.pth", 1)
    train(cfg_b, resume=t.run_dir / "last.pth", progress=False)
    got = read_checkpoint(tmp_path / "runs" / "kd_resume_b" / "last.pth")
    for k, v in ref["state_dict"].items():
        assert torch.equal(v, got["state_dict"][k]), k
    for k, v in ref["extra"]["distill_state"].items():
        assert torch.equal(v, got["extra"]["distill_state"][k]), k
