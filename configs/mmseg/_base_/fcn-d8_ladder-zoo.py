# The zoo backbone in mmseg's FCN-D8, as the Ladder paper evaluates segmentation (section 4.2: FCN "modified to have
# eight-pixel stride by dilated convolutions, provided by mmsegmentation"): mmseg's ResNetV1c-50 D8 replaced, its
# heads, data, schedule and runtime kept. The configs beside this one apply it as `model = _base_.fcn_d8_ladder_zoo`.
custom_imports = dict(imports=["ladder_zoo.integrations.mmseg"], allow_failed_imports=False)

fcn_d8_ladder_zoo = dict(
    type="LadderZooEncoderDecoder",  # mmseg's EncoderDecoder; heads' in_channels, pixel mean / std read off the backbone
    pretrained=None,  # the weights come from the zoo name (mmseg's base names open-mmlab://resnet50_v1c here)
    backbone=dict(
        _delete_=True,
        type="LadderZooBackbone",
        name="ladder_byol_r50.in1k_200ep",  # any r18 / r50 / convnext_t zoo name: --cfg-options model.backbone.name=...
        out_indices=(1, 2, 3, 4),  # res2..res5: the auxiliary FCN head reads res4 (in_index 2), the FCN head res5 (3)
        output_stride=8,  # res4, res5 dilated 2, 4 (first block 1, 2), as mmseg's -d8 ResNet with contract_dilation
        frozen_stages=-1,  # fine-tune everything, BatchNorm in train mode, as mmseg's ResNet in FCN-D8
        norm_eval=False))

# mmseg's FCN-D8 ResNet has SyncBN: under DDP the Runner converts the zoo backbone's BatchNorm to SyncBatchNorm too
sync_bn = "torch"
