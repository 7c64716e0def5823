"""CPU threads from the idle cores (hsnetlib.threads): the rule, the /proc/stat reading, the
environment setting, and that training and evaluation run on the chosen count and restore it."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hsnetlib import HSNet, threads
from hsnetlib.data import make_benchmark
from hsnetlib.engine import train
from hsnetlib.errors import HSNetError
from hsnetlib.evaluation import evaluate
from hsnetlib.train_config import TrainConfig


@pytest.mark.parametrize(
    "busy, cores, current, expected",
    [
        (0.0, 2, 2, 2),  # an idle machine: torch's count
        (1.0, 2, 2, 1),  # one core taken by another process
        (0.3, 2, 2, 2),  # a little background work: rounds to the nearest
        (1.9, 2, 2, 1),  # at least one thread
        (1.0, 16, 16, 15),
        (0.0, 16, 4, 4),  # never more than torch.get_num_threads()
        (None, 2, 2, 2),  # /proc/stat unreadable: torch's count
    ],
)
def test_usable_threads_are_the_idle_cores(busy, cores, current, expected):
    assert threads.usable_threads(busy, cores, current) == expected


def test_cpu_ticks_count_only_the_given_cores_and_leave_out_idle_and_iowait():
    text = (
        "cpu  900 0 100 1000 50 0 0 0 0 0\ncpu0 400 0 50 500 25 0 0 0 0 0\ncpu1 500 0 50 500 25 5 5 0 0 0\nintr 12345\n"
    )
    assert threads._cpu_ticks([0], text) == (450, 975)
    assert threads._cpu_ticks([0, 1], text) == (450 + 560, 975 + 1085)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_a_cpu_bound_process_beside_counts_as_a_busy_core():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start spinning
        busy = threads.busy_cores(0.3)
    finally:
        hog.kill()
        hog.wait()
    assert busy is not None and busy >= 0.5  # a whole core, less what a loaded machine takes from it


def test_hsnet_threads_sets_the_count_and_bad_values_are_refused(monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setenv("HSNET_THREADS", "1")
    with threads.cpu_threads(torch.device("cpu")) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2  # restored
    monkeypatch.setenv("HSNET_THREADS", "all")
    assert threads.chosen_threads() == 2
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("HSNET_THREADS", bad)
        with pytest.raises(HSNetError, match="HSNET_THREADS must be a positive integer or 'all'"):
            threads.chosen_threads()


def test_a_cuda_device_leaves_the_cpu_threads_alone(monkeypatch):
    monkeypatch.setenv("HSNET_THREADS", "1")
    torch.set_num_threads(2)
    with threads.cpu_threads(torch.device("cuda")) as n:
        assert n == 2 and torch.get_num_threads() == 2


class ThreadRecorder(torch.nn.Module):
    """A 'model' for evaluate() that records the thread count it predicts on."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def predict(self, query_img, support_imgs, support_masks, size=None):
        self.seen.append(torch.get_num_threads())
        return torch.zeros(query_img.shape[0], *size, dtype=torch.long)


def test_evaluate_and_train_run_on_the_chosen_threads_and_restore_the_count(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "chosen_threads", lambda: 1)
    torch.set_num_threads(2)
    recorder = ThreadRecorder()
    evaluate(recorder, make_benchmark("toy", split="val", img_size=64), progress=False, max_episodes=3)
    assert recorder.seen == [1, 1, 1] and torch.get_num_threads() == 2

    seen = []
    original = HSNet.forward

    def recording_forward(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HSNet, "forward", recording_forward)
    config = TrainConfig().with_changes(
        benchmark="toy", backbone="resnet50", weights=None, img_size=64, batch_size=2, epochs=1,
        max_steps_per_epoch=2, val_episodes=2, progress=False, fast_path=False, logdir=str(tmp_path / "run"),
    )  # fmt: skip
    train(config)
    assert seen and set(seen) == {1} and torch.get_num_threads() == 2
