"""Detection and segmentation adapters: thin, import-guarded, one module per framework.

- ``ladder_zoo.integrations.torchvision``: Faster / Mask R-CNN, RetinaNet (FPN) and FCN builders on any zoo name.
- ``ladder_zoo.integrations.detectron2``: a registered detectron2 ``Backbone`` (+ FPN) and the weight converter.
- ``ladder_zoo.integrations.mmdet``: a registered mmdet 3.x backbone, the ``ladder-zoo://`` checkpoint scheme
  and the weight converter.

Importing this package imports no framework; each module imports its own.
"""
