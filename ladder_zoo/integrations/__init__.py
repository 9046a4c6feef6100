"""Detection, segmentation and deployment adapters: thin, import-guarded, one module per framework.

- ``ladder_zoo.integrations.torchvision``: Faster / Mask R-CNN, RetinaNet (FPN) and FCN builders on any zoo name.
- ``ladder_zoo.integrations.detectron2``: a registered detectron2 ``Backbone`` (+ FPN) and the weight converter.
- ``ladder_zoo.integrations.mmdet``: a registered mmdet 3.x backbone, the ``ladder-zoo://`` checkpoint scheme
  and the weight converter.
- ``ladder_zoo.integrations.mmseg``: the same backbone and scheme for mmsegmentation 1.x, dilated for FCN-D8, and
  a segmentor that reads its heads' channels and pixel statistics off the backbone (``configs/mmseg/``).
- ``ladder_zoo.integrations.onnx``: ONNX export by torch's dynamo exporter, checked with onnxruntime.

Importing this package imports no framework; each module imports its own.
"""
