# FCN-D8 on Cityscapes train_fine, 769 x 769 crops, 40k iterations, 4 GPUs x 2 images, sliding-window test: the
# Ladder paper's Cityscapes protocol (section 4.2), mmseg's own config with the zoo backbone.
#   python tools/train.py configs/mmseg/fcn_ladder-byol-r50-d8_4xb2-40k_cityscapes-769x769.py     (mmseg checkout)
#   bash tools/dist_train.sh configs/mmseg/fcn_ladder-byol-r50-d8_4xb2-40k_cityscapes-769x769.py 4
# Another zoo name: --cfg-options model.backbone.name=ladder_densebyol_r50.in1k_200ep. docs/segmentation.md
_base_ = ["mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-769x769.py", "./_base_/fcn-d8_ladder-zoo.py"]
model = _base_.fcn_d8_ladder_zoo
