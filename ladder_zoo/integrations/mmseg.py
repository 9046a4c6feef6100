"""mmsegmentation 1.x: the zoo backbone in mmseg configs, and FCN-D8 as the Ladder paper evaluates it.

    custom_imports = dict(imports=["ladder_zoo.integrations.mmseg"], allow_failed_imports=False)
    model = dict(type="LadderZooEncoderDecoder", pretrained=None,
                 backbone=dict(_delete_=True, type="LadderZooBackbone", name="ladder_byol_r50.in1k_200ep",
                               output_stride=8, frozen_stages=-1, norm_eval=False))

``configs/mmseg/`` holds the paper's two protocols, inheriting mmseg's own FCN-D8 configs from the installed
package (``_base_ = "mmseg::fcn/..."``), so mmseg's ``tools/train.py`` runs them unchanged. The backbone and the
``ladder-zoo://`` checkpoint scheme are the mmdet adapter's (``_mmengine``), with ``output_stride=8``: res4 and res5
dilated 2 and 4, their first block half that, as mmseg's ``-d8`` ResNet with ``contract_dilation``.

``LadderZooEncoderDecoder`` is mmseg's ``EncoderDecoder`` with what follows from the backbone read off it: each
head's ``in_channels`` (the channels of the level its ``in_index`` picks) and the data preprocessor's mean / std
(the weights' ``pretrained_cfg`` x 255, on the RGB images of ``bgr_to_rgb=True``). So one setting,
``model.backbone.name``, puts any zoo name FCN-D8 can dilate (r18, r50, convnext_t) into the same config.
"""
from ._common import pixel_stats
from ._mmengine import MMENGINE_MODELS  # registers LadderZooBackbone and ladder-zoo://

try:
    from mmseg.models.segmentors import EncoderDecoder
    from mmseg.registry import MODELS as MMSEG_MODELS
except ImportError:  # mmseg is optional; without it, mmengine's registrations above still stand
    MMSEG_MODELS = None

if MMSEG_MODELS is not None and MMENGINE_MODELS is not None:

    @MMSEG_MODELS.register_module()
    class LadderZooEncoderDecoder(EncoderDecoder):
        """mmseg's ``EncoderDecoder`` on a ``LadderZooBackbone``, its heads' ``in_channels`` and pixel mean / std
        read off the backbone."""

        def __init__(self, backbone, decode_head, data_preprocessor=None, pretrained=None, **kwargs):
            if backbone.get("type") != "LadderZooBackbone":
                raise ValueError(f"LadderZooEncoderDecoder takes a LadderZooBackbone, not {backbone.get('type')}: "
                                 "use mmseg's EncoderDecoder for other backbones.")
            if pretrained is not None:
                raise ValueError(f"model.pretrained={pretrained!r}: the zoo backbone's weights come from its name "
                                 "(or checkpoint=); set model.pretrained=None.")
            super().__init__(backbone, decode_head, data_preprocessor=data_preprocessor, **kwargs)
            if isinstance(data_preprocessor, dict):  # rebuilt with the statistics of the weights just loaded
                self.data_preprocessor = MMSEG_MODELS.build({**data_preprocessor, **pixel_stats(self.backbone.body)})

        def _init_decode_head(self, decode_head) -> None:
            super()._init_decode_head(self._with_in_channels(decode_head))

        def _init_auxiliary_head(self, auxiliary_head) -> None:
            if isinstance(auxiliary_head, list):
                auxiliary_head = [self._with_in_channels(head) for head in auxiliary_head]
            elif auxiliary_head is not None:
                auxiliary_head = self._with_in_channels(auxiliary_head)
            super()._init_auxiliary_head(auxiliary_head)

        def _with_in_channels(self, head: dict) -> dict:
            """``head`` with the ``in_channels`` of the backbone outputs its ``in_index`` picks (one or a list)."""
            channels = self.backbone.body.feature_info.channels()
            index = head.get("in_index", -1)
            picked = [channels[i] for i in index] if isinstance(index, (list, tuple)) else channels[index]
            return {**head, "in_channels": picked}
