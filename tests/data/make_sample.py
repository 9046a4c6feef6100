"""Draw the small class-balanced CIFAR-10 sample the tests use from ../shared/data/cifar10-jpeg.tar.gz.

    python tests/data/make_sample.py ../shared/data/cifar10-jpeg.tar.gz tests/data/cifar10_sample --per-class 4

Picks ``--per-class`` files per class and split with a fixed seed (the tar is sorted by split and class, so
never "the first N"), keeping the ImageNet folder layout: ``{train,test}/<class>/<NNNN>.jpg``.
"""
import argparse
import random
import tarfile
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tar", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tarfile.open(args.tar) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        groups = defaultdict(list)
        for m in members:
            split, cls, _ = m.name.split("/")[-3:]
            groups[split, cls].append(m)
        rng = random.Random(args.seed)
        for key in sorted(groups):
            for m in rng.sample(sorted(groups[key], key=lambda m: m.name), args.per_class):
                dest = args.out / "/".join(m.name.split("/")[-3:])
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())


if __name__ == "__main__":
    main()
