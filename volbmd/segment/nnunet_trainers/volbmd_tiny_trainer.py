"""A short nnU-Net v2 trainer for tests and demos: few epochs and iterations, on the CPU.

It changes only the schedule; the network comes from the plans exactly as with nnUNetTrainer, so a
model folder it writes is a normal nnU-Net model folder.
"""

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class volbmdTinyTrainer(nnUNetTrainer):  # noqa: N801 (nnU-Net finds trainers by class name)
    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = torch.device("cpu")
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 5
        self.num_iterations_per_epoch = 30
        self.num_val_iterations_per_epoch = 2
        self.initial_lr = 1e-2
        self.save_every = 1000
