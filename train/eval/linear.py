"""Linear probe on frozen pooled features: features standardised with the training split's mean and std (a
BatchNorm without affine, as MoCo v3 and MAE put before their probes), one linear layer trained with SGD,
momentum 0.9 and a cosine schedule, cross-entropy; fixed seed. Accuracy on the test split."""
import math
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, epochs: int = 100, lr: float = 0.1, weight_decay: float = 0.0,
                 batch_size: int = 256, seed: int = 0, desc: str = "linear probe") -> float:
    device = train_features.device
    mean, std = train_features.mean(0), train_features.std(0) + 1e-6
    train, test = (train_features - mean) / std, (test_features - mean) / std
    n_classes = int(train_labels.max()) + 1
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(train.shape[1], n_classes).to(device)
    with torch.no_grad():  # drawn on the CPU (the generator's device), then moved: the same init on any device
        layer.weight.copy_(torch.empty(layer.weight.shape).normal_(0, 0.01, generator=g))
        layer.bias.zero_()
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", dynamic_ncols=True, file=sys.stderr, leave=False):
        order = torch.randperm(len(train), generator=g).to(device)
        for start in range(0, len(train), batch_size):
            idx = order[start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(layer(train[idx]), train_labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    with torch.no_grad():
        return float((layer(test).argmax(1) == test_labels).float().mean())
