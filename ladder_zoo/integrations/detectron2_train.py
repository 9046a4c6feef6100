"""Train or evaluate a detectron2 model from the command line, as detectron2's ``tools/train_net.py`` does, with
the ladder_zoo backbone registered and its config keys (``MODEL.LADDER_ZOO``) added.

detectron2's own ``tools/train_net.py`` builds its config with ``get_cfg()`` alone, so it rejects this project's
YAML (``Non-existent config key: MODEL.LADDER_ZOO``). This script is that one with ``add_ladder_zoo_config``:

    python -m ladder_zoo.integrations.detectron2_train --num-gpus 8 [--resume] [--eval-only] \\
        --config-file configs/detectron2/mask_rcnn_ladder_byol_r50_fpn_1x.yaml [KEY VALUE ...]

It takes detectron2's arguments (``default_argument_parser``) plus ``--register-coco NAME JSON IMAGE_DIR``
(repeatable) to register a COCO-format dataset for ``DATASETS.TRAIN`` / ``DATASETS.TEST``; detectron2's builtin
datasets (``coco_2017_train`` ...) are read from ``$DETECTRON2_DATASETS`` (default ``./datasets``) as usual.
``--config-file`` also takes a detectron2 model-zoo name (``COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml``)
for the converter route (``MODEL.WEIGHTS`` = a ``ladder-zoo convert --to detectron2`` file); that needs
``detectron2.model_zoo``, which imports ``pkg_resources``: ``pip install "setuptools<81"``.
"""
import logging
import os
import sys
from collections import OrderedDict

try:
    import detectron2.utils.comm as comm
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch
    from detectron2.evaluation import COCOEvaluator, LVISEvaluator, verify_results
    from detectron2.modeling import GeneralizedRCNNWithTTA
except ImportError as e:  # detectron2 is not on PyPI
    sys.exit(f"ladder_zoo.integrations.detectron2_train needs detectron2 ({e}): install it from source "
             "(https://detectron2.readthedocs.io/en/latest/tutorials/install.html)")

from ..device import resolve_device
from .detectron2 import add_ladder_zoo_config


def build_evaluator(cfg, dataset_name: str, output_folder: str = None):
    """COCO (and COCO-format datasets from ``--register-coco``) or LVIS, by the dataset's ``evaluator_type``."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "coco":
        return COCOEvaluator(dataset_name, output_dir=output_folder)
    if evaluator_type == "lvis":
        return LVISEvaluator(dataset_name, output_dir=output_folder)
    raise ValueError(f"DATASETS.TEST {dataset_name!r} has evaluator_type {evaluator_type!r}: this script evaluates "
                     "COCO-format and LVIS datasets; register yours with --register-coco, or set DATASETS.TEST '()'")


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` with the evaluators of ``tools/train_net.py`` for instance detection."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        logging.getLogger("detectron2.trainer").info("Running inference with test-time augmentation ...")
        model = GeneralizedRCNNWithTTA(cfg, model)
        evaluators = [cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
                      for name in cfg.DATASETS.TEST]
        return OrderedDict({k + "_TTA": v for k, v in cls.test(cfg, model, evaluators).items()})


def config_file(path: str) -> str:
    """``path`` itself, or the file of a detectron2 model-zoo config name."""
    if not path:
        raise SystemExit("--config-file is required: configs/detectron2/mask_rcnn_ladder_byol_r50_fpn_1x.yaml, "
                         "your own YAML, or a detectron2 model-zoo config name")
    if os.path.isfile(path):
        return path
    try:
        from detectron2 import model_zoo
    except ModuleNotFoundError as e:
        if e.name != "pkg_resources":
            raise
        raise SystemExit(f"--config-file {path}: not a file, and reading detectron2's model-zoo configs needs "
                         "pkg_resources, which setuptools 81 removed: pip install 'setuptools<81'") from None
    try:
        return model_zoo.get_config_file(path)
    except RuntimeError:
        raise SystemExit(f"--config-file {path}: no such file, nor a detectron2 model-zoo config name "
                         "(e.g. COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml)") from None


def register_datasets(entries) -> None:
    for name, json_file, image_root in entries or ():
        for path, what in ((json_file, "JSON"), (image_root, "IMAGE_DIR")):
            if not os.path.exists(path):
                raise SystemExit(f"--register-coco {name}: {what} {path} does not exist; give the COCO annotation "
                                 "file and the folder its file_names are relative to")
        register_coco_instances(name, {}, json_file, image_root)


def setup(args):
    cfg = get_cfg()
    add_ladder_zoo_config(cfg)
    cfg.merge_from_file(config_file(args.config_file))
    cfg.merge_from_list(args.opts)
    try:  # detectron2's default MODEL.DEVICE is cuda: on a machine without one, one line instead of a traceback
        resolve_device(cfg.MODEL.DEVICE, "MODEL.DEVICE", " ")
    except ValueError as e:
        raise SystemExit(f"ladder_zoo.integrations.detectron2_train: {e}") from None
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    register_datasets(args.register_coco)  # in every process `launch` starts: the catalog is per process
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:
        trainer.register_hooks([hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))])
    return trainer.train()


def argument_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--register-coco", nargs=3, action="append", metavar=("NAME", "JSON", "IMAGE_DIR"),
                        help="register a COCO-format dataset under NAME (repeatable), for DATASETS.TRAIN / TEST")
    return parser


def cli(argv=None) -> None:
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    cli()
