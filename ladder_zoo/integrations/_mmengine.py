"""What the mmdet and mmseg adapters share: the zoo backbone and the ``ladder-zoo://`` checkpoint scheme.

Both go in mmengine's root ``MODELS`` registry (``MMENGINE_MODELS`` here: the zoo's own table is ``models.MODELS``)
and ``CheckpointLoader``, which mmdet's and mmseg's registries (its children) fall back to:
``MODELS.build(dict(type="LadderZooBackbone", ...))`` finds the backbone from mmengine's, mmdet's and mmseg's registry
alike, and mmengine alone (``pip install mmengine``) is enough to register them. Importing this module imports no
OpenMMLab framework; ``MMENGINE_MODELS`` is None without mmengine.
"""
from typing import Dict, Optional, Sequence

import torch

from ..errors import WeightsError, phrased_for
from ..factory import create_model
from ._common import check_output_stride, freeze_levels, refuse_cifar_stem

SCHEME = "ladder-zoo://"
INIT_CFG_FIXES = ("no init_cfg (random weights)", "a file as the init_cfg checkpoint")  # errors.phrased_for's


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmdet's and mmseg's ResNet use the zoo's (torchvision's) parameter names: only the classifier is dropped."""
    return {k: v for k, v in state_dict.items() if not k.startswith("fc.")}


try:
    from mmengine.model import BaseModule
    from mmengine.registry import MODELS as MMENGINE_MODELS
    from mmengine.runner import CheckpointLoader
except ImportError:  # mmengine is optional: the converters need none of it
    MMENGINE_MODELS = None

if MMENGINE_MODELS is not None:

    @CheckpointLoader.register_scheme(prefixes=SCHEME)
    def load_from_ladder_zoo(filename: str, map_location=None) -> Dict[str, torch.Tensor]:
        """``ladder-zoo://NAME[.TAG]``: the zoo weights of NAME, resolved and verified by ladder_zoo."""
        try:
            model = create_model(filename[len(SCHEME):], pretrained=True)
        except WeightsError as e:
            raise phrased_for(e, *INIT_CFG_FIXES) from e
        return convert_state_dict(model.state_dict())


    @MMENGINE_MODELS.register_module()
    class LadderZooBackbone(BaseModule):
        """A zoo model as an mmdet / mmseg backbone: a tuple of its ``out_indices`` stages (1..4 = res2..res5).

        ``frozen_stages`` and ``norm_eval`` mean what they mean for mmdet's and mmseg's ResNet (-1: nothing frozen,
        0: the stem, 1: stem and res2, ...); ``output_stride`` 8 or 16 dilates the last stages instead of striding
        (mmseg's ``-d8`` models). Weights come from ladder_zoo: the tag's pretrained weights by default,
        ``checkpoint`` (a file) instead, or ``init_cfg=dict(type="Pretrained", checkpoint="ladder-zoo://NAME" or a
        file)``, loaded strictly.
        """

        def __init__(self, name: str, out_indices: Sequence[int] = (1, 2, 3, 4), frozen_stages: int = 1,
                     norm_eval: bool = True, output_stride: int = 32, pretrained: bool = True,
                     checkpoint: Optional[str] = None, init_cfg: Optional[dict] = None, **create_kwargs):
            super().__init__(init_cfg)
            check_output_stride(name, output_stride)
            refuse_cifar_stem(name)
            if output_stride != 32:  # timm's ViT and Swin take no output_stride at all
                create_kwargs["output_stride"] = output_stride
            from_init_cfg = bool(init_cfg) and init_cfg.get("type") == "Pretrained"
            try:
                self.body = create_model(name, features_only=True, out_indices=tuple(out_indices),
                                         pretrained=pretrained and not checkpoint and not from_init_cfg,
                                         checkpoint_path=checkpoint, **create_kwargs)
            except WeightsError as e:  # the fix as a config key, where the user is
                raise phrased_for(e, "backbone.pretrained=False (in the config, or --cfg-options "
                                  "model.backbone.pretrained=False)", "backbone.checkpoint=PATH") from e
            self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
            self.name = name
            if (pretrained or checkpoint) and not from_init_cfg:
                self._is_init = True  # the weights came from ladder_zoo: mmengine's init_weights must not overwrite them
            self._freeze()

        def init_weights(self) -> None:
            if self.init_cfg and self.init_cfg.get("type") == "Pretrained":
                source = self.init_cfg["checkpoint"]
                name = source[len(SCHEME):] if source.startswith(SCHEME) else self.name
                try:
                    loaded = create_model(name, features_only=True, out_indices=self.body.feature_info.out_indices,
                                          pretrained=True, checkpoint_path=None if source.startswith(SCHEME) else source)
                except WeightsError as e:
                    raise phrased_for(e, *INIT_CFG_FIXES) from e
                self.body.load_state_dict(loaded.state_dict())
                self._is_init = True
                return
            super().init_weights()

        def _freeze(self) -> None:
            freeze_levels(self.body, self.frozen_stages + 1, eval_mode=True)

        def train(self, mode: bool = True):
            super().train(mode)
            self._freeze()
            if mode and self.norm_eval:
                for m in self.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.eval()
            return self

        def forward(self, x: torch.Tensor):
            return tuple(self.body(x))
