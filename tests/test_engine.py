"""The training loop's pieces on their own: one step, one epoch, evaluation, the loss, the schedule, the best-epoch
rule. Tiny models and synthetic batches: no dataset, no run folder, well under a second or two."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.training.engine import NonFiniteLoss, set_lr, train_one_epoch, train_step
from cnnlab.training.inference import evaluate, model_logits
from cnnlab.training.loss import AUX_WEIGHT, Criterion
from cnnlab.training.runner import is_better
from cnnlab.training.schedule import Schedule, lr_at
from cnnlab.training.state import TrainState

CPU = torch.device("cpu")


def tiny(outputs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, outputs))


def batches(n: int = 4, size: int = 8, classes: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 6, 6, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(n)]


def test_one_step_moves_the_weights_and_returns_the_loss_before_it() -> None:
    model, (x, y) = tiny(), batches(1)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        expected = F.cross_entropy(model.train()(x), y)
    loss, logits = train_step(model, Criterion(), opt, x, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and logits.shape == (8, 3)
    assert not loss.requires_grad and not logits.requires_grad
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.dim() > 1)


def test_gradient_clipping_bounds_the_update() -> None:
    x, y = batches(1)[0]
    x = x * 1000  # huge inputs: huge gradients
    steps = {}
    for clip in (0.0, 1e-3):
        model = tiny()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        w = model[4].weight.detach().clone()
        train_step(model, Criterion(), opt, x, y, grad_clip=clip)
        steps[clip] = (model[4].weight.detach() - w).norm().item()
    assert steps[1e-3] <= 1e-3 + 1e-6 < steps[0.0]


def test_one_epoch_follows_the_schedule_and_counts_everything() -> None:
    model, data = tiny(), batches(5)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    seen_lrs: list[float] = []
    schedule = Schedule("step", 0.5, total_steps=5, step_size=2, gamma=0.1)
    state = TrainState(step=0)
    done = train_one_epoch(model, Criterion(), opt, schedule, data, CPU, state,
                           on_step=lambda st, loss: seen_lrs.append(opt.param_groups[0]["lr"]))
    assert done and state.step == 5 and state.meter.seen == 40
    assert seen_lrs == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005])
    assert state.meter.loss_sum > 0
    assert 0 <= state.meter.correct <= 40 and state.elapsed > 0 and state.meter.seconds == pytest.approx(state.elapsed)


def test_an_epoch_stops_when_asked_and_continues_its_step_count() -> None:
    model, data = tiny(), batches(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(step=10)
    done = train_one_epoch(model, Criterion(), opt, lambda step: 0.1, data, CPU, state,
                           should_stop=lambda: state.step == 12)
    assert not done and state.step == 12 and state.meter.seen == 16


def test_an_eval_mode_model_is_trained_in_training_mode_but_a_frozen_part_stays_frozen() -> None:
    model = tiny()
    model.eval()
    train_one_epoch(model, Criterion(), torch.optim.SGD(model.parameters(), lr=0.1), lambda s: 0.1, batches(1), CPU,
                    TrainState())
    assert model.training and model[1].training
    model[1].eval()  # a caller froze the BatchNorm's statistics after model.train()
    stats = model[1].running_mean.clone()
    train_one_epoch(model, Criterion(), torch.optim.SGD(model.parameters(), lr=0.1), lambda s: 0.1, batches(1), CPU,
                    TrainState())
    assert not model[1].training and torch.equal(model[1].running_mean, stats)


def test_a_nan_loss_names_its_step_and_learning_rate() -> None:
    model, data = tiny(), batches(3)
    data[1] = (data[1][0] * float("nan"), data[1][1])
    state = TrainState(epoch=4, step=20)
    with pytest.raises(NonFiniteLoss, match=r"at step 21 \(epoch 5\)") as err:
        train_one_epoch(model, Criterion(), torch.optim.SGD(model.parameters(), lr=1.0), lambda step: step / 100,
                        data, CPU, state)
    assert err.value.step == 21 and err.value.lr == pytest.approx(0.21) and math.isnan(err.value.value)


def test_param_groups_keep_their_share_of_the_rate() -> None:
    model = tiny()
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr_scale": 0.1}, {"params": model[4].parameters()}],
                          lr=1.0)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.5])


def test_evaluate_gives_the_logits_and_per_image_losses_and_restores_modes() -> None:
    model, data = tiny(), batches(3)
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model must stay as it was
    out = evaluate(model, data, Criterion(label_smoothing=0.3))
    x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
    model.eval()
    with torch.no_grad():
        expected = model(x)
    assert out.n == 24 and out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    # Evaluation reports the loss without label smoothing, per image.
    torch.testing.assert_close(out.losses, F.cross_entropy(expected, y, reduction="none"), rtol=1e-5, atol=1e-5)
    assert out.accuracy() == pytest.approx((expected.argmax(1) == y).float().mean().item())
    model.train()
    model[1].eval()
    evaluate(model, data, Criterion())
    assert model.training and not model[1].training


def test_flip_tta_averages_the_image_and_its_mirror() -> None:
    model, (x, _) = tiny(), batches(1)[0]
    model.eval()
    with torch.no_grad():
        expected = (model(x) + model(x.flip(3))) / 2
    torch.testing.assert_close(model_logits(model, x, "flip"), expected)


def test_the_loss_adds_the_auxiliary_head_and_smooths_only_in_training() -> None:
    logits, aux = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    loss, main = Criterion(label_smoothing=0.1)((logits, aux), y)
    smooth = dict(label_smoothing=0.1)
    expected = F.cross_entropy(logits, y, **smooth) + AUX_WEIGHT * F.cross_entropy(aux, y, **smooth)
    torch.testing.assert_close(loss, expected)
    assert main is logits
    torch.testing.assert_close(Criterion(label_smoothing=0.1).per_image(logits, y),
                               F.cross_entropy(logits, y, reduction="none"))
    one = torch.randn(4, 1)
    yb = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(Criterion(single_logit=True).per_image(one, yb),
                               F.binary_cross_entropy_with_logits(one[:, 0], yb.float(), reduction="none"))


def test_a_schedule_is_the_pure_function_lr_at() -> None:
    s = Schedule("onecycle", 0.4, total_steps=100, warmup_steps=5)
    assert [s(i) for i in range(100)] == [lr_at(i, base_lr=0.4, schedule="onecycle", total_steps=100,
                                                 warmup_steps=5) for i in range(100)]


def test_the_best_epoch_is_the_highest_accuracy_then_the_lowest_loss() -> None:
    state = TrainState(best_acc=0.9, best_loss=0.3)
    assert is_better(0.91, 5.0, state)
    assert is_better(0.9, 0.2, state)
    assert not is_better(0.9, 0.3, state) and not is_better(0.89, 0.0, state)
    assert is_better(0.0, math.inf, TrainState())  # the first epoch always counts
