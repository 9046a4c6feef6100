# FCN-D8 on PASCAL VOC 2012 with SBD's extra annotations (train_aug2012), 512 x 512 crops, 20k iterations, 4 GPUs x 4
# images: the Ladder paper's VOC protocol (section 4.2), mmseg's own config with the zoo backbone.
#   python tools/train.py configs/mmseg/fcn_ladder-byol-r50-d8_4xb4-20k_voc12aug-512x512.py       (mmseg checkout)
#   bash tools/dist_train.sh configs/mmseg/fcn_ladder-byol-r50-d8_4xb4-20k_voc12aug-512x512.py 4
# Another zoo name: --cfg-options model.backbone.name=ladder_densebyol_r50.in1k_200ep. docs/segmentation.md
_base_ = ["mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py", "./_base_/fcn-d8_ladder-zoo.py"]
model = _base_.fcn_d8_ladder_zoo
