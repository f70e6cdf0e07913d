"""Trainer: config loading, schedules, exact resume, checkpoint contents, periodic eval, CLI and DDP (2 gloo ranks).

Everything runs on a synthetic 6-image dataset at 64×64 so the module stays within a few tens of seconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from featherface.checkpoint import load_model, read_checkpoint, save_checkpoint
from featherface.errors import FeatherFaceError
from featherface.models import build_model
from featherface.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from featherface.train.schedule import build_scheduler, warmup_cosine_factor
from featherface.train.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]


def make_tiny_dataset(root: Path, n: int = 6, size: int = 80, seed: int = 0) -> Path:
    """``n`` random images with 1–2 bright square "faces" each (with landmarks), RetinaFace ``label.txt`` layout."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images" / "0--Test").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        rel = f"0--Test/img_{i}.jpg"
        lines.append(f"# {rel}")
        for _ in range(1 + i % 2):
            w = int(rng.integers(16, 40))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - w))
            cv2.rectangle(img, (x, y), (x + w, y + w), (255, 220, 180), -1)
            pts = []
            for px, py in ((0.3, 0.35), (0.7, 0.35), (0.5, 0.55), (0.35, 0.75), (0.65, 0.75)):
                pts += [f"{x + px * w:.1f}", f"{y + py * w:.1f}", "0.0"]
            lines.append(f"{x} {y} {w} {w} " + " ".join(pts) + " 0.9")
        cv2.imwrite(str(root / "images" / rel), img)
    (root / "label.txt").write_text("\n".join(lines) + "\n")
    return root / "label.txt"


def tiny_config(tmp: Path, labels: Path, name: str = "run", **over) -> TrainConfig:
    values = {
        "model": "featherface_v2", "name": name, "output_dir": str(tmp / "runs"), "epochs": 3, "seed": 7,
        "threads": 1, "model_config": {"dropblock_prob": 0.1},
        "data": {"train_labels": str(labels), "image_size": 64, "batch_size": 2, "num_workers": 0},
        "schedule": {"name": "warmup_cosine", "warmup_epochs": 1.0},
    }
    cfg = config_from_dict(values)
    return apply_overrides(cfg, over) if over else cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "configs").glob("*.toml")))
def test_every_shipped_recipe_loads(recipe):
    cfg = load_config(REPO / "configs" / recipe)
    assert cfg.epochs >= 1 and cfg.data.image_size >= 32
    assert all(c > 0 for c in cfg.data.crop_scales)


def test_recipes_load_and_unknown_keys_are_rejected(tmp_path):
    v1 = load_config(REPO / "configs" / "train_v1.toml")
    v2 = load_config(REPO / "configs" / "train_v2.toml")
    assert v1.model == "featherface_v1" and v1.schedule.name == "onecycle" and v1.epochs == 350
    assert v2.model == "featherface_v2" and v2.schedule.name == "warmup_cosine" and v2.epochs == 400
    assert v2.model_config["dropblock_prob"] == pytest.approx(0.1)
    d = load_config(REPO / "configs" / "distill_v2.toml")
    assert d.distill.teacher and d.distill.alpha == 0.7 and d.distill.temperature == 4.0
    assert d.distill.feature_weight == 0.1
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "featherface_v2"\n[data]\nbatch_sise = 4\n')
    with pytest.raises(FeatherFaceError, match="batch_sise"):
        load_config(bad)
    bad.write_text('modle = "featherface_v2"\n')
    with pytest.raises(FeatherFaceError, match="modle"):
        load_config(bad)
    bad.write_text('[model_config]\nchanels = 3\n')
    with pytest.raises(FeatherFaceError, match="chanels"):
        load_config(bad)


def test_overrides_only_when_given():
    cfg = TrainConfig()
    same = apply_overrides(cfg, {"epochs": None, "data.batch_size": None})
    assert same == cfg
    new = apply_overrides(cfg, {"epochs": 3, "data.batch_size": 4, "model_config.dropblock_prob": 0.2})
    assert (new.epochs, new.data.batch_size, new.model_config["dropblock_prob"]) == (3, 4, 0.2)
    assert config_from_dict(config_to_dict(new)) == new
    with pytest.raises(FeatherFaceError):
        apply_overrides(cfg, {"data.nope": 1})


# ------------------------------------------------------------------------------------------------ schedule
def test_warmup_cosine_is_per_iteration():
    assert warmup_cosine_factor(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(99, 100, 10, 0.01) == pytest.approx(0.01)
    mid = warmup_cosine_factor(10 + 89 // 2, 100, 10, 0.0)
    assert 0.45 < mid < 0.55
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    from featherface.train.config import ScheduleConfig

    sch = build_scheduler(opt, ScheduleConfig(warmup_epochs=1.0), lr=1e-3, steps_per_epoch=4, epochs=3)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # changes within the first epoch
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    opt2 = torch.optim.AdamW([p], lr=1e-3)
    one = build_scheduler(opt2, ScheduleConfig(name="onecycle"), lr=1e-3, steps_per_epoch=4, epochs=3)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3 / 25)
    assert isinstance(one, torch.optim.lr_scheduler.OneCycleLR)


@pytest.mark.parametrize("name", ["warmup_cosine", "onecycle"])
def test_scheduler_state_round_trip(name, tmp_path):
    """A scheduler rebuilt and loaded from a (weights_only) saved state continues the same curve (upstream defect T1, docs/upstream-defects.md)."""
    from featherface.train.config import ScheduleConfig

    def make():
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([p], lr=1e-3)
        return opt, build_scheduler(opt, ScheduleConfig(name=name, warmup_epochs=1.0), lr=1e-3, steps_per_epoch=5,
                                    epochs=4)

    opt, sch = make()
    ref = []
    for _ in range(20):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    opt, sch = make()
    for _ in range(7):
        opt.step()
        sch.step()
    torch.save({"o": opt.state_dict(), "s": sch.state_dict()}, tmp_path / "s.pth")
    state = torch.load(tmp_path / "s.pth", weights_only=True)
    opt2, sch2 = make()
    opt2.load_state_dict(state["o"])
    sch2.load_state_dict(state["s"])
    got = []
    for _ in range(13):
        got.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sch2.step()
    assert got == pytest.approx(ref[7:], rel=1e-12)


# ------------------------------------------------------------------------------------------------ resume
def _final(run_dir: Path):
    ck = read_checkpoint(run_dir / "last.pth")
    return ck["state_dict"], ck["extra"]


@pytest.mark.parametrize("schedule", ["warmup_cosine", pytest.param("onecycle", marks=pytest.mark.slow)])
def test_resume_is_exact(tmp_path, tiny, schedule):
    straight = tiny_config(tmp_path, tiny, "straight", **{"schedule.name": schedule, "data.max_images": 4})
    train(straight, progress=False)
    part = tiny_config(tmp_path, tiny, "part", **{"schedule.name": schedule, "data.max_images": 4})
    # 1 epoch, then "killed": the run is continued from last.pth with the same config (3 epochs in total)
    t = Trainer(part, progress=False)
    t.records.clear()
    rec = t.train_epoch(0)
    t.records.append(rec)
    t.run_dir.mkdir(parents=True, exist_ok=True)
    t.save(t.run_dir / "last.pth", 1)
    # an interrupted second epoch (half done) must not matter: resume restarts it from the saved state
    t.train_epoch(1)
    del t
    train(part, resume=tmp_path / "runs" / "part" / "last.pth", progress=False)
    sd_a, ex_a = _final(tmp_path / "runs" / "straight")
    sd_b, ex_b = _final(tmp_path / "runs" / "part")
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    assert ex_a["global_step"] == ex_b["global_step"] == 6
    assert ex_a["epoch"] == ex_b["epoch"] == 3
    sa, sb = ex_a["optimizer"]["state"], ex_b["optimizer"]["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
    assert ex_a["scheduler"]["last_epoch"] == ex_b["scheduler"]["last_epoch"] == 6


def test_checkpoint_metrics_and_curve(tmp_path, tiny):
    cfg = tiny_config(tmp_path, tiny, "files", epochs=2, log_every=2)
    summary = train(cfg, progress=False)
    run = tmp_path / "runs" / "files"
    ck = read_checkpoint(run / "last.pth")
    extra = ck["extra"]
    for key in ("optimizer", "scheduler", "epoch", "global_step", "rng", "config", "metrics"):
        assert key in extra, key
    assert set(extra["rng"]) >= {"torch", "numpy", "python"}
    assert extra["config"]["data"]["image_size"] == 64
    model = load_model(run / "last.pth")  # the same file serves inference
    assert model.model_name == "featherface_v2" and not model.training
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert any(r["kind"] == "step" for r in lines)
    for r in epochs:
        assert {"loss_total", "loss_box", "loss_cls", "loss_landmark", "images_per_s", "data_wait_share", "lr"} <= set(r)
        assert math.isfinite(r["loss_total"])
    assert (run / "curve.png").stat().st_size > 1000
    assert summary["last"]["epoch"] == 2


def test_backbone_init_from_checkpoint(tmp_path, tiny):
    v1 = build_model("featherface_v1")
    save_checkpoint(tmp_path / "v1.pth", v1)
    cfg = tiny_config(tmp_path, tiny, "init", epochs=1, init_backbone=str(tmp_path / "v1.pth"))
    t = Trainer(cfg, progress=False)
    src = v1.state_dict()
    for k, v in t.model.state_dict().items():
        if k.startswith("body."):
            assert torch.equal(v, src[k]), k
    assert "v1.pth" in t.backbone_source


def test_init_weights_loads_the_whole_model_strictly(tmp_path, tiny):
    from featherface.prune import prune_v2

    pruned, _ = prune_v2(build_model("featherface_v2").eval(), 0.2)
    path = save_checkpoint(tmp_path / "pruned.pth", pruned)
    widths = {"channels": 26, "ssh_channels": 32, "ssh_hidden": [12, 8], "shuffle_hidden": 12, "head_channels": 24}
    cfg = tiny_config(tmp_path, tiny, "ft", epochs=1, init_weights=str(path))
    cfg = config_from_dict({**config_to_dict(cfg), "model_config": widths})
    t = Trainer(cfg, progress=False)
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, pruned.state_dict()[k]), k
    assert "whole model" in t.backbone_source
    wrong = tiny_config(tmp_path, tiny, "ft2", epochs=1, init_weights=str(path))  # upstream widths: refused
    with pytest.raises(Exception, match="size mismatch|mis-shaped|shape"):
        Trainer(wrong, progress=False)


def test_channels_last_training_matches_nchw(tmp_path, tiny):
    a = train(tiny_config(tmp_path, tiny, "nchw", epochs=1, **{"data.max_images": 2}), progress=False)
    b = train(tiny_config(tmp_path, tiny, "nhwc", epochs=1, channels_last=True, **{"data.max_images": 2}),
              progress=False)
    la, lb = a["last"]["loss_total"], b["last"]["loss_total"]
    assert math.isfinite(lb) and abs(la - lb) <= 1e-3 * max(1.0, abs(la))
    model = load_model(tmp_path / "runs" / "nhwc" / "last.pth")  # NHWC-trained weights load as usual
    assert model(torch.zeros(1, 3, 64, 64)).boxes.shape[-1] == 4


def test_fused_bn_training_matches_plain_and_saves_plain_keys(tmp_path, tiny):
    from featherface.models.fused_norm import BatchNormAct2d

    over = {"epochs": 1, "data.max_images": 2}
    a = train(tiny_config(tmp_path, tiny, "plain", fused_bn=False, **over), progress=False)
    b = train(tiny_config(tmp_path, tiny, "fused", fused_bn=True, **over), progress=False)
    la, lb = a["last"]["loss_total"], b["last"]["loss_total"]
    assert math.isfinite(lb) and abs(la - lb) <= 1e-4 * max(1.0, abs(la))
    sa = read_checkpoint(tmp_path / "runs" / "plain" / "last.pth")["state_dict"]
    sb = read_checkpoint(tmp_path / "runs" / "fused" / "last.pth")["state_dict"]
    assert list(sa) == list(sb)  # checkpoints do not depend on the fusion
    # AdamW's first steps are ~lr·sign(grad): a gradient that is rounding noise may flip sign, so a weight can move
    # by up to 2·lr per step the other way; everything else must agree to float rounding.
    cfg = tiny_config(tmp_path, tiny, "plain", fused_bn=False, **over)
    bound = 2.5 * cfg.optim.lr * a["last"]["step"]
    for k in sa:
        if sa[k].is_floating_point():
            assert float((sb[k] - sa[k]).abs().max()) <= bound, k
    close = sum(int(torch.allclose(sb[k], sa[k], rtol=1e-4, atol=1e-6)) for k in sa)
    assert close >= 0.9 * len(sa)
    t = Trainer(tiny_config(tmp_path, tiny, "fused2", fused_bn=True, **over), progress=False)
    assert any(isinstance(m, BatchNormAct2d) for m in t.model.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in t.model.modules())


def test_fit_restores_torch_threads(tmp_path, tiny):
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    t = Trainer(tiny_config(tmp_path, tiny, "threads", epochs=1, threads=target, **{"data.max_images": 2}),
                progress=False)
    assert torch.get_num_threads() == before  # building a trainer changes nothing process-wide
    seen = []
    real = t.train_epoch
    t.train_epoch = lambda epoch: (seen.append(torch.get_num_threads()), real(epoch))[1]
    t.fit()
    assert seen == [target] and torch.get_num_threads() == before


def test_compile_without_a_compiler_is_refused(tmp_path, tiny, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(FeatherFaceError, match="C\\+\\+ compiler"):
        Trainer(tiny_config(tmp_path, tiny, "nocc", compile=True), progress=False)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, tiny):
    """torch.compile of the student (TorchInductor; minutes of compilation on 2 cores the first time)."""
    # no DropBlock: compiled code draws its random masks from another generator than eager code
    over = {"epochs": 1, "data.max_images": 2, "data.drop_last": True, "model_config.dropblock_prob": 0.0}
    a = train(tiny_config(tmp_path, tiny, "eager", **over), progress=False)
    b = train(tiny_config(tmp_path, tiny, "compiled", compile=True, **over), progress=False)
    la, lb = a["last"]["loss_total"], b["last"]["loss_total"]
    assert math.isfinite(lb) and abs(la - lb) <= 1e-3 * max(1.0, abs(la))
    sa = read_checkpoint(tmp_path / "runs" / "eager" / "last.pth")["state_dict"]
    sb = read_checkpoint(tmp_path / "runs" / "compiled" / "last.pth")["state_dict"]
    assert list(sa) == list(sb)  # no "_orig_mod." prefixes: the module itself is not wrapped


def test_periodic_eval_writes_best(tmp_path, tiny):
    from featherface.data.readers import parse_annotations
    from featherface.eval.widerface import GroundTruth, save_ground_truth

    res = parse_annotations(tiny, tiny.parent / "images", "auto")
    boxes = []
    for a in res.annotations:
        b = a.boxes.astype(np.float64)
        boxes.append(np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1))
    keep = {s: [np.arange(len(b)) for b in boxes] for s in ("easy", "medium", "hard")}
    names = [a.image_path.stem for a in res.annotations]
    save_ground_truth(GroundTruth(["0--Test"] * len(names), names, boxes, keep), tmp_path / "gt")
    values = config_to_dict(tiny_config(tmp_path, tiny, "eval", epochs=2))
    values["eval"].update(every=1, images=str(tiny.parent / "images"), image_list=None, gt=str(tmp_path / "gt"),
                          max_images=4, protocol="original-size")
    cfg = config_from_dict(values)
    summary = train(cfg, progress=False)
    run = tmp_path / "runs" / "eval"
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x]
    assert [e["epoch"] for e in evals] == [1, 2]
    assert all(0.0 <= e["ap_easy"] <= 1.0 and e["eval_images"] == 4 for e in evals)
    assert (run / "best.pth").exists() and summary["best_ap_mean"] is not None


# ------------------------------------------------------------------------------------------------ CLI / DDP
def test_cli_print_config(tiny, capsys):
    from featherface.cli import main

    rc = main(["train", "--config", str(REPO / "configs" / "train_v2.toml"), "--epochs", "2", "--image-size", "96",
               "--set", "model_config.dropblock_prob=0.0", "--set", "optim.grad_clip=5.0", "--print-config"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 2 and out["data"]["image_size"] == 96
    assert out["model_config"]["dropblock_prob"] == 0.0 and out["optim"]["grad_clip"] == 5.0
    assert out["data"]["batch_size"] == 32  # untouched recipe value


def test_ddp_two_gloo_processes(tmp_path, tiny):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "featherface", "train", "--model", "featherface_v2", "--train-labels", str(tiny),
           "--image-size", "64", "--batch-size", "2", "--workers", "0", "--epochs", "1", "--threads", "1",
           "--output-dir", str(tmp_path / "runs"), "--name", "ddp", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1  # only rank 0 writes
    assert lines[0]["images"] == 6  # 2 ranks x (batch 2 + batch 1): each rank has its own shard of 3 images
    ck = read_checkpoint(run / "last.pth")
    assert ck["extra"]["world_size"] == 2 and ck["extra"]["global_step"] == 2
    assert not any(k.startswith("module.") for k in ck["state_dict"])
    assert proc.stderr.count("epoch 1/1: loss") == 1
