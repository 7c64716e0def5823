"""Entry point of one process of the 2-process gloo test (spawned by test_engine.py)."""

import os

import torch

from hsnetlib.engine import train
from hsnetlib.train_config import TrainConfig


def run(rank: int, world: int, port: int, config: dict, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    result = train(TrainConfig.from_dict(config))
    torch.save(result.model.hpn_learner.state_dict(), os.path.join(out, f"rank{rank}.pt"))
