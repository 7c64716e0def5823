import pytest
import torch

from hsnetlib.baselines import AllForeground
from hsnetlib.data import make_benchmark
from hsnetlib.evaluation import evaluate
from hsnetlib.metrics import IoUMeter, intersection_union


def test_intersection_union_by_hand():
    pred = torch.tensor([[[1, 1, 0], [0, 0, 0]]])
    gt = torch.tensor([[[1, 0, 0], [0, 1, 1]]])
    ignore = torch.tensor([[[0, 0, 0], [0, 0, 1]]])
    inter, union = intersection_union(pred, gt, ignore)
    # valid pixels: 5. fg: pred {0,1}, gt {0,4} -> inter 1, union 3. bg: pred {2,3,4}, gt {1,2,3} -> inter 2, union 4
    assert inter.tolist() == [[2, 1]] and union.tolist() == [[4, 3]]


def test_miou_and_fbiou_accumulate_per_class():
    meter = IoUMeter([3, 7])
    meter.update(torch.tensor([[8, 2], [5, 1]]), torch.tensor([[10, 4], [6, 4]]), torch.tensor([3, 3]))
    meter.update(torch.tensor([[9, 3]]), torch.tensor([[10, 3]]), torch.tensor([7]))
    # class 3: fg 3/8; class 7: fg 3/3 -> mIoU = 100 * (0.375 + 1) / 2
    assert meter.miou() == pytest.approx(68.75)
    # FB-IoU: bg 22/26, fg 6/11 over the fold's totals
    assert meter.fb_iou() == pytest.approx(100 * (22 / 26 + 6 / 11) / 2)
    assert meter.class_iou() == pytest.approx({3: 37.5, 7: 100.0})


def test_class_without_episode_counts_as_zero_and_empty_masks_do_not_divide_by_zero():
    meter = IoUMeter([0, 1])
    inter, union = intersection_union(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    meter.update(inter, union, torch.tensor([0]))
    assert meter.miou() == 0.0 and meter.fb_iou() == pytest.approx(50.0)
    with pytest.raises(ValueError, match="class 5 is not among"):
        meter.update(inter, union, torch.tensor([5]))


def test_evaluate_all_foreground_equals_direct_count():
    ds = make_benchmark("toy", fold=1, split="test", shot=1, img_size=48, num_episodes=24)
    result = evaluate(AllForeground(), ds, batch_size=5, progress=False)
    fg, total = {}, {}
    for i in range(len(ds)):
        item = ds[i]
        c = int(item["class_id"])
        fg[c] = fg.get(c, 0) + float(item["query_mask"].sum())
        total[c] = total.get(c, 0) + item["query_mask"].numel()
    expected = 100 * sum(fg.get(c, 0) / max(total.get(c, 0), 1) for c in ds.class_ids) / 5
    assert result.episodes == 24 and result.miou == pytest.approx(expected)
    assert list(result.row().columns) == ["benchmark", "fold", "shot", "miou", "fb_iou"]


def test_evaluate_checks_shot_and_original_size_batching():
    ds = make_benchmark("toy", split="test", shot=1, img_size=32, num_episodes=4)
    with pytest.raises(ValueError, match="build it with shot=5"):
        evaluate(AllForeground(), ds, shot=5, progress=False)
    ds = make_benchmark("toy", split="test", shot=1, img_size=32, num_episodes=4, use_original_imgsize=True)
    with pytest.raises(ValueError, match="batch_size=1"):
        evaluate(AllForeground(), ds, batch_size=2, progress=False)
    assert evaluate(AllForeground(), ds, progress=False).episodes == 4
